#pragma once
// The task store: where tasks, their state machine and their results live. This is the
// interface every part of sqlq uses; each engine implements it in its own files (SQLite:
// task/sqlite_store.*), holding all of its SQL in that one module. Whatever the engine, every
// status change is one conditional statement (WHERE status IN (...) and, for a running task,
// the attempt number that fences out an older owner), so two processes can never both take
// the same arrow. Failures come as StoreError (util/error.h), transient() or not.
#include <cstdint>
#include <climits>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "task/result.h"
#include "task/task.h"
#include "util/error.h"

namespace sqlq {

// Who runs a task: this process, named so that pid reuse cannot fool a liveness check.
struct Owner {
    std::string host;
    int64_t pid = 0;
    int64_t start = 0;  // process start time, clock ticks since boot
    std::string name() const { return host + ":" + std::to_string(pid); }
    static Owner self();
};

struct Outcome {
    Status status = Status::succeeded;  // succeeded, failed or cancelled
    std::optional<std::string> error;
    std::optional<int64_t> row_count;
    std::optional<int64_t> result_bytes;
    std::optional<ResultData> result;
};

// What the store asks of the world outside it, so that tests (and a store shared by hosts)
// can supply their own.
// A task's stored result, read piece by piece (the console's CSV download): its columns, and the
// JSON text of its rows from the start, a block at a time, so that a big result is never whole
// in memory. It reads one snapshot of the store: a result that expires meanwhile reads to its
// end. It uses its store's connection: it must not outlive its store, nor be used at the same
// time as it.
class ResultReader {
public:
    virtual ~ResultReader() = default;
    virtual const std::string& columns_json() const = 0;  // ["a","b"]
    // Up to `n` further bytes of the rows' JSON text ([[1,"x"],[2,null]]) into `buf`; 0 at its
    // end. Throws StoreError.
    virtual size_t read(char* buf, size_t n) = 0;
};

struct StoreDeps {
    // Milliseconds since the epoch, for leases and the times recorded. Default: this host's
    // wall clock.
    std::function<int64_t()> clock;
    // Whether the process holding a claim still exists. `unknown` (an owner on another host,
    // which cannot be looked at from here) leaves the decision to the lease. Default: a
    // process on this host is looked up by pid and start time; any other is unknown.
    enum class Liveness { alive, dead, unknown };
    std::function<Liveness(const Owner&)> owner_alive;

    static int64_t wall_clock();
    static Liveness local_process(const Owner& o);
};

// Tells a waiter that the store may have changed, so that it need not poll (TaskStore::watch).
// One watch belongs to one thread. Spurious wake-ups are allowed: a caller re-reads what it
// waits for after every return, and keeps a fallback timeout (a notification can be lost).
class StoreWatch {
public:
    virtual ~StoreWatch() = default;
    // Returns when the store may have changed since the watch was made or the last call returned
    // (true), or after `timeout_ms` (false; 0: only looks). A signal that interrupts it also ends
    // it (false).
    virtual bool wait(int64_t timeout_ms) = 0;
    // Whether changes are reported at all (false: wait() only sleeps, the caller polls).
    virtual bool live() const = 0;
    // A descriptor that becomes readable when the store may have changed, for an event loop
    // (call wait(0) once it is readable); -1 when there is none.
    virtual int fd() const { return -1; }
    // The caller is done waiting: drop what the kernel holds for the watch now, so that its
    // teardown overlaps what the caller does next (SqliteWatch: closing an inotify instance with
    // its marks in place waits for an RCU grace period, ~8 ms of a one-shot `sqlq run`). wait()
    // reports nothing afterwards.
    virtual void unwatch() {}
    // A kept watch starts waiting for something else (another task): how busy it found the
    // store while waiting for the last one does not carry over (SqliteWatch: its coalescing).
    virtual void new_wait() {}
};

// A watch that reports nothing: wait() sleeps its timeout (interruptible by a signal).
class PollingWatch final : public StoreWatch {
public:
    bool wait(int64_t timeout_ms) override;
    bool live() const override { return false; }
};

class TaskStore {
public:
    virtual ~TaskStore() = default;

    // --- producer ---
    // Many tasks in one transaction (one fsync): all of them are stored, or none.
    // With a limit, refused whole (Error with kExitQueueFull, nothing stored) when the user would then have more
    // than `max_queued_per_user` tasks queued; the count and the insert are one transaction, so
    // two submits at once cannot both slip under it.
    struct InsertRules {
        int64_t max_queued_per_user = 0;  // 0: no limit
    };
    virtual std::vector<int64_t> insert_batch(const std::vector<std::string>& sqls, const std::string& submitter,
                                              const InsertRules& rules) = 0;
    std::vector<int64_t> insert_batch(const std::vector<std::string>& sqls, const std::string& submitter) {
        return insert_batch(sqls, submitter, InsertRules{});
    }
    int64_t insert(const std::string& sql, const std::string& submitter) { return insert_batch({sql}, submitter).front(); }
    // The broker confirmed a message for these tasks. Unconditional on the status: a worker can
    // run a task before the confirm reaches its producer.
    virtual void mark_published(const std::vector<int64_t>& ids) = 0;
    void mark_published(int64_t id) { mark_published(std::vector<int64_t>{id}); }

    // --- worker ---
    enum class ClaimKind {
        claimed,       // the task is ours: run it with `token`
        finished,      // already succeeded/failed/cancelled: ack and skip
        held,          // another live worker holds it: wait and ask again
        gave_up,       // marked failed now: past max attempts
        refused,       // marked failed now: its SQL is longer than max_sql_bytes (never loaded)
        past_deadline, // marked failed now: its gone owner held it past the hard deadline
        cancelled_now, // its cancel was pending and its owner is gone: marked cancelled now
        unknown,       // no such task
        // claim_next() only:
        none,          // no task waits: what this message stood for was run under another one; ack it
        limited,       // tasks wait, but each one's user already runs max_running_per_user: ask again
        no_memory,     // loading task `id` ran out of memory (`why`): fail it with fail_unowned()
    };
    struct Claim {
        ClaimKind kind = ClaimKind::unknown;
        int64_t token = 0;  // the attempt number: fences every later write of this attempt
        Status status = Status::queued;
        int64_t lease_until = 0;
        std::string sql{};  // claimed: the query to run
        // For the metrics (store clock, ms since the epoch; 0 when unknown): when the task was
        // submitted, when this claim took it (claimed), and when its cancel was requested
        // (cancelled_now).
        int64_t created_at = 0;
        int64_t claimed_at = 0;
        int64_t cancel_requested_at = 0;
        int64_t id = 0;     // the task (claim_next: not always its message's)
        std::string why{};  // no_memory: what ran out
    };
    struct ClaimRules {
        int max_attempts = 3;                  // claims before a task whose workers die is failed
        int64_t max_sql_bytes = INT64_MAX;     // a longer SQL text is failed, never loaded
        // The hard deadline (query.timeout_ms + deadline_grace_ms; 0: none): a task whose gone
        // owner held it longer than this is failed (hard_deadline_error), not run again.
        int64_t timeout_ms = 0;
        int64_t deadline_grace_ms = 0;
        int64_t max_running_per_user = 0;      // claim_next: 0, no limit
    };
    // Takes task `id`: a queued task, or a running one whose owner is gone or whose lease has
    // expired. A claim that ends the task (finished, gave_up, cancelled_now, refused) is durable
    // when it returns: the caller acks on it.
    Claim claim(int64_t id, const Owner& me, const ClaimRules& rules) { return claim_as(id, me, rules, id); }
    Claim claim(int64_t id, const Owner& me, int max_attempts) { return claim(id, me, ClaimRules{max_attempts}); }

    // What a worker calls for each message: a message is a unit of work, not a task's ticket
    // (docs/architecture.md, "Fairness"). Its delivery runs, in this order:
    //   1. the task an earlier delivery of the same message was running (a redelivery after its
    //      worker died: the takeover, attempts counted; `held` while that worker lives);
    //   2. the task it was published for, if that one is running with its owner gone (the
    //      sweeper republished it);
    //   3. else the fairest queued task: of the users with tasks queued and fewer than
    //      max_running_per_user running, the one running fewest, then the one served least
    //      recently, then its oldest task.
    // `none` when nothing waits (ack the message: every queued task still has a message of its
    // own), `limited` when only users at their limit wait. `unknown` when the message's task
    // does not exist (a message for another store).
    Claim claim_next(int64_t unit, const Owner& me, const ClaimRules& rules);
    // The task the message `unit` stands for now: the running task its delivery runs, else the
    // task it was published for (the sweeper fails it when the broker dead-letters the message).
    virtual int64_t task_of_unit(int64_t unit) = 0;
    // Tasks running per user (those with one at least), for "queued: user limit".
    virtual std::map<std::string, int64_t> running_per_user() = 0;

    // While running: tells whether a cancel was requested and whether this attempt still owns
    // the task (false: fenced out, stop and record nothing); with Renew::yes, also renews the
    // lease (a write).
    enum class Renew : bool { no, yes };
    struct Tick {
        bool still_owner = true;
        bool cancel_requested = false;
        int64_t cancel_requested_at = 0;  // when (store clock), if requested
    };
    virtual Tick tick(int64_t id, int64_t token, Renew renew) = 0;

    // Stores the outcome and the terminal status in one transaction, conditional on this
    // attempt still owning the task, durably. False when fenced out (nothing written).
    virtual bool finish(int64_t id, int64_t token, const Outcome& outcome) = 0;
    // finish(), and, in the same write transaction where the store can, claim_next(unit) for
    // the next delivery already in the worker's hands: one transaction per task instead of
    // two under a steady stream of tasks (docs/architecture.md, "One transaction per task").
    // `next` is set only when that claim was made and committed with the outcome; otherwise
    // (the store cannot, max_running_per_user is set, the claim must wait, or it failed) it
    // stays empty, and the caller claims for that delivery on its own as usual. Returns what
    // finish() returns; nothing is claimed when the outcome was fenced out.
    virtual bool finish_then_claim(int64_t id, int64_t token, const Outcome& outcome, int64_t unit,
                                   const Owner& me, const ClaimRules& rules, std::optional<Claim>& next) {
        (void)unit, (void)me, (void)rules;
        next.reset();
        return finish(id, token, outcome);
    }

    // Fails a task that nobody works on, with `error`: queued, or running with its owner gone
    // (or its owner is `me`: a worker that cannot go on with a task it claimed). A running task
    // whose cancel is pending is cancelled instead. Conditional on the attempt read, like a
    // claim; durable when it returns. For a task that cannot be run: its message was
    // dead-lettered by the broker (the sweeper), or claiming it ran out of memory (a worker).
    enum class FailKind { failed, cancelled, finished, held, unknown };
    virtual FailKind fail_unowned(int64_t id, const std::string& error, const Owner& me) = 0;

    // --- users ---
    enum class CancelKind { cancelled, requested, already_finished, unknown };
    struct CancelResult {
        CancelKind kind = CancelKind::unknown;
        Status status = Status::queued;
    };
    virtual CancelResult request_cancel(int64_t id, const std::string& by) = 0;

    virtual std::optional<Task> get(int64_t id) = 0;
    // get(): a task with at most 1 MiB characters of its SQL; list(): newest first, the tasks
    // that match every filter given (an empty one matches all), at most `limit`, each with a
    // preview of its SQL (1,000 characters). sql_bytes is the whole text's length and
    // sql_truncated says it was cut.
    struct ListFilter {
        std::optional<Status> status;
        std::optional<std::string> submitter;  // exactly this name
        int64_t limit = 50;
    };
    virtual std::vector<Task> list(const ListFilter& filter) = 0;
    std::vector<Task> list(std::optional<Status> status, int64_t limit) { return list(ListFilter{status, {}, limit}); }
    virtual std::optional<ResultData> result(int64_t id) = 0;
    // Rows [offset, offset + limit) of a task's result, and how many rows it has in all; the
    // engine slices it, so a page of a huge result never travels whole. nullopt when the task
    // has no result (none, or expired).
    struct ResultPage {
        std::string columns_json;  // ["a","b"]
        std::string rows_json;     // the page: [[1,"x"],[2,null]]
        int64_t total = 0;
    };
    virtual std::optional<ResultPage> result_page(int64_t id, int64_t offset, int64_t limit) = 0;
    // The whole result, to be read a block at a time (ResultReader); nullptr when the task has no
    // result (none, or expired).
    virtual std::unique_ptr<ResultReader> read_result(int64_t id) = 0;
    // For live views (the web console's event stream): in one statement, the tasks not ended
    // yet, those with an id above `after_id` (new since the last look) and those in `ids` (seen
    // unended at the last look, so that their end is seen), in id order, with list()'s SQL
    // preview. What one look costs does not depend on how many pages watch.
    virtual std::vector<Task> changes(int64_t after_id, const std::vector<int64_t>& ids) = 0;
    // Tasks by status, every status present (0 when none).
    virtual std::map<std::string, int64_t> counts() = 0;

    // --- supervisor ---
    // Tasks to (re)publish: never confirmed by the broker and older than `unpublished_ms`, or
    // waiting/running with nobody working on them for longer than `stale_ms` (queued ones only
    // when the queue is idle: else their message may just be behind others). A running task
    // claimed `max_attempts` times already is never named: a new message would only be given up
    // by its claim, or, if claiming it is what kills workers, go round forever; give_up_stale()
    // ends those instead.
    enum class QueueIdle : bool { no, yes };
    virtual std::vector<int64_t> to_republish(int64_t unpublished_ms, int64_t stale_ms, QueueIdle idle,
                                              int max_attempts) = 0;
    // Fails ("gave up after N attempts") the running tasks claimed `max_attempts` times whose
    // owner is gone and whose lease ran out over `stale_ms` ago; returns their ids.
    virtual std::vector<int64_t> give_up_stale(int64_t stale_ms, int max_attempts) = 0;
    // The supervisor saw the worker holding a task die: records when (for the death → rerun
    // measure) and why ("its worker died: signal 11 (SEGV)", "killed by its supervisor: ..."),
    // which the task's error names if it ends up failed for it ("gave up after 3 attempts ...").
    // Conditional on that worker still holding the task.
    virtual void owner_lost(int64_t id, const Owner& owner, const std::string& why) = 0;
    // The supervisor killed the worker holding a task because it ran past its hard deadline:
    // fails the task with `error` (no other attempt: it would run as long), conditional on that
    // worker still holding it. False when it no longer did (nothing written).
    virtual bool fail_abandoned(int64_t id, const Owner& owner, const std::string& error) = 0;
    // Removes results older than `ttl_s`, and the oldest of a user's results beyond
    // `max_bytes_per_user`, and the oldest of all beyond `max_bytes` (0: no cap), giving their
    // space back; returns how many.
    struct Retention {
        int64_t ttl_s = 0;
        int64_t max_bytes_per_user = 0;
        int64_t max_bytes = 0;
    };
    virtual int64_t expire_results(const Retention& r) = 0;
    int64_t expire_results(int64_t ttl_s) { return expire_results(Retention{ttl_s}); }

    // --- the fleet-wide view ---
    // What a supervisor writes of itself at every sweep, so that `sqlq workers` shows every
    // host's fleet: one record per host and run dir, its workers as the `workers` array of its
    // status (JSON text), its heartbeat in the store's clock.
    struct FleetRecord {
        std::string host;
        std::string run_dir;
        int64_t pid = 0;              // the supervisor's
        int64_t interval_ms = 0;      // how often it writes (its sweep interval)
        std::string workers_json = "[]";
        int64_t heartbeat_at = 0;     // read back: when it last wrote (store clock)
        int64_t age_ms = 0;           // read back: the store's clock now, less heartbeat_at
    };
    virtual void record_fleet(const FleetRecord& r) = 0;  // heartbeat_at = now
    virtual void forget_fleet(const std::string& host, const std::string& run_dir) = 0;
    virtual std::vector<FleetRecord> fleets() = 0;  // by host, then run dir

    // --- audit ---
    struct AuditFigures {
        std::map<std::string, int64_t> by_status;
        int64_t unpublished = 0;
        int64_t stuck = 0;               // running, lease expired, owner gone
        int64_t queued_stale = 0;        // queued, last published (or created) over 5 s ago
        int64_t duplicate_outcomes = 0;  // outcomes > 1
        int64_t reexecuted = 0;          // executions beyond the first, summed
        std::vector<int64_t> recovery_ms;
        std::vector<int64_t> stuck_ids;
    };
    virtual AuditFigures audit() = 0;

    // --- waiting ---
    // A watch that wakes its owner when something in the store may have changed (any task; no
    // ids). Made before the first read of what the caller waits for, so that no change is
    // missed between the two. Default: PollingWatch. Never throws: an engine that cannot watch
    // returns a PollingWatch.
    virtual std::unique_ptr<StoreWatch> watch() { return std::make_unique<PollingWatch>(); }

    // Where the store is, fit to print (a path, or a URL without its password).
    virtual std::string where() const = 0;
    // The store's clock now, ms since the epoch: the clock every time it records is read on
    // (the database's for PostgreSQL, whatever this host's clock says). How long a task has
    // been running is this less its started_at.
    virtual int64_t now() = 0;
    // Why the store runs slower than it could ("" when it does not); the worker logs it once.
    virtual std::string warning() const { return {}; }

protected:
    // claim(): the claim, recording `unit` as the message whose delivery runs the task.
    virtual Claim claim_as(int64_t id, const Owner& me, const ClaimRules& rules, int64_t unit) = 0;
    // claim_next()'s choice (steps 1-3), read without writing; claim_next claims it, and asks
    // again when another worker took it first.
    struct Next {
        enum class Kind { task, none, limited, unknown } kind = Kind::none;
        int64_t id = 0;
        bool resume = false;  // step 1: wait (held) while its owner lives
        Status status = Status::queued;  // none: the status of the message's own task
        bool fairest = false;  // step 3: claimed through claim_fairest
    };
    virtual Next next_for(int64_t unit, int64_t max_running_per_user) = 0;
    // Step 3's claim: by default task n.id, exactly. An engine may instead leave the choice to
    // this call (n.id 0), making it and the claim one statement, and take another queued task of
    // the chosen user than the head when claims run at once (the claim's `id` says which), as
    // long as max_running_per_user holds; it then also answers `none` (n.status: the message's
    // own task's) or `limited`. `held` when another claim took the task first.
    virtual Claim claim_fairest(const Next& n, const Owner& me, const ClaimRules& rules, int64_t unit) {
        return claim_as(n.id, me, rules, unit);
    }
    // One round of claim_next (the choice and the claim) as one transaction, where the engine
    // gains by it; committed by commit(), rolled back if the scope ends without it.
    struct ClaimScope {
        virtual ~ClaimScope() = default;
        virtual void commit() = 0;
    };
    virtual std::unique_ptr<ClaimScope> claim_scope(const ClaimRules&) { return nullptr; }
    // Whether a claim made in finish_then_claim is handed to the caller: not one that must wait
    // (held, limited) or could not be made (no_memory), which the caller's own claim makes again.
    static bool handed_over(ClaimKind k) {
        return k != ClaimKind::held && k != ClaimKind::limited && k != ClaimKind::no_memory;
    }
};


// Opens (creating it if needed) the store that the config names, and migrates its schema to
// the version of this sqlq. Throws StoreError, or Error when the config names no usable store.
std::unique_ptr<TaskStore> open_store(const StoreConfig& cfg, StoreDeps deps = {});

}  // namespace sqlq
