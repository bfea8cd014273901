#pragma once
// The task store: every SQL statement that touches the task database lives here, and so does
// the task state machine. Each status change is one conditional UPDATE (WHERE status IN (...)
// and, for a running task, the attempt number that fences out an older owner), so two
// processes can never both take the same arrow.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "sqlite/db.h"
#include "sqlite/write_gate.h"
#include "task/result.h"
#include "task/task.h"

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

class TaskStore {
public:
    // Opens (creating if needed) and migrates the schema to the current version.
    TaskStore(const std::string& path, const StoreConfig& cfg);

    static constexpr int kSchemaVersion = 1;

    // --- producer ---
    int64_t insert(const std::string& sql, const std::string& submitter);
    // Many tasks in one transaction: one fsync, and all of them are there or none.
    std::vector<int64_t> insert_batch(const std::vector<std::string>& sqls, const std::string& submitter);
    void mark_published(int64_t id);
    void mark_published(const std::vector<int64_t>& ids);

    // --- worker ---
    enum class ClaimKind {
        claimed,       // the task is ours: run it with `token`
        finished,      // already succeeded/failed/cancelled: ack and skip
        held,          // another live worker holds it: wait and ask again
        gave_up,       // marked failed now: past max attempts
        cancelled_now, // its cancel was pending and its owner is gone: marked cancelled now
        unknown,       // no such task
    };
    struct Claim {
        ClaimKind kind = ClaimKind::unknown;
        int64_t token = 0;  // the attempt number: fences every later write of this attempt
        Status status = Status::queued;
        int64_t lease_until = 0;
        std::string sql{};  // claimed: the query to run
    };
    // Takes a queued task, or a running one whose owner is gone or whose lease has expired.
    Claim claim(int64_t id, const Owner& me, int max_attempts);

    // While running: renews the lease when due and tells whether a cancel was requested and
    // whether this attempt still owns the task (false: fenced out, stop and record nothing).
    struct Tick {
        bool still_owner = true;
        bool cancel_requested = false;
    };
    Tick tick(int64_t id, int64_t token, bool renew);

    // Stores the outcome and the terminal status in one transaction, conditional on this
    // attempt still owning the task. False when fenced out (nothing written).
    bool finish(int64_t id, int64_t token, const Outcome& outcome);

    // --- users ---
    enum class CancelKind { cancelled, requested, already_finished, unknown };
    struct CancelResult {
        CancelKind kind = CancelKind::unknown;
        Status status = Status::queued;
    };
    CancelResult request_cancel(int64_t id, const std::string& by);

    std::optional<Task> get(int64_t id);
    std::vector<Task> list(std::optional<Status> status, int64_t limit);
    std::optional<ResultData> result(int64_t id);
    std::map<std::string, int64_t> counts();

    // --- supervisor ---
    // Tasks to (re)publish: never confirmed by the broker and older than `unpublished_ms`, or
    // waiting/running with nobody working on them for longer than `stale_ms`.
    std::vector<int64_t> to_republish(int64_t unpublished_ms, int64_t stale_ms, bool queue_idle);
    // Records when the worker holding a task died (for the death → rerun measure).
    void owner_lost(int64_t id, const Owner& owner);
    // Removes results older than the retention; returns how many.
    int64_t expire_results(int64_t ttl_s);

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
    AuditFigures audit();

    sqlite::Db& db() { return db_; }
    // Why writes go without the writer gate ("" when they go through it): a slower store, not
    // a broken one. The worker logs it.
    const std::string& gate_error() const { return gate_error_; }

private:
    void migrate();
    void persist();  // at durability "full": fsync what this connection has committed
    // The statement for `sql`, prepared on first use and kept: a worker runs the same few
    // statements for every task, and parsing them cost more than running them. Returned reset,
    // with no bindings; a caller that reads rows resets it when done (ResetGuard), so that no
    // cached statement keeps a read transaction open between tasks.
    sqlite::Stmt& cached(const std::string& sql);

    // Every write goes through the writer gate first (sqlite/write_gate.h), then SQLite's lock.
    // SQLite's automatic checkpoint (every 1,000 WAL pages) runs inside a COMMIT, so under the
    // gate: moving it out measured slower at durability full (docs/performance.md).
    sqlite::WriteGate::Held writing() { return gate_.lock(cfg_.busy_timeout_ms); }
    Claim try_claim(int64_t id, const Owner& me, int max_attempts);

    StoreConfig cfg_;
    sqlite::Db db_;
    sqlite::WriteGate gate_;
    std::string gate_error_;
    std::unordered_map<std::string, sqlite::Stmt> stmts_;  // declared after db_: finalized before it closes
};

// Reads the current row out of a statement selecting kTaskColumns (for tests and tools).
Task task_from_row(const sqlite::Stmt& s);

}  // namespace sqlq
