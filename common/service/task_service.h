#pragma once
// The task service: what a user can do with tasks (submit, show, result, list, wait, cancel,
// audit), for every front end (the `sqlq` command today, the web console next). Each operation
// returns data; rendering it (table, CSV, JSON, HTML) is the front end's job. Failures that a
// user must hear about are sqlq::Error with the exit code of util/error.h (kExitNotFound: no
// such task, kExitConflict: the state forbids it, ...), which a web front end maps to an HTTP
// status.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "amqp/connection.h"
#include "task/publish.h"
#include "task/store.h"

namespace sqlq {

// Marks each queued task whose user already runs `max_running_per_user` tasks (0: no limit):
// waiting_on = "user limit". One look at the store's running counts, only when a task is queued.
void mark_waiting(TaskStore& store, int64_t max_running_per_user, std::vector<Task>& tasks);

class TaskService {
public:
    // Opens the task store the config names (creating and migrating it if needed).
    explicit TaskService(const Config& cfg);
    TaskService(const Config& cfg, std::unique_ptr<TaskStore> store);

    TaskStore& store() { return *store_; }
    // The store's clock (TaskStore::now): what a task's elapsed time is counted against.
    int64_t now() { return store_->now(); }

    // --- submit ---
    struct Submitted {
        std::vector<int64_t> ids;  // in the order of the SQL given
        size_t published = 0;      // confirmed by the broker
        std::string problem;       // why not all were published ("" when all were)
    };
    // Stores every task (one transaction, durable), then publishes them with confirms. A task
    // stored but not confirmed stays unpublished and the supervisor's sweeper publishes it:
    // `problem` says why. Throws Error(kExitUsage) for an empty list or a blank SQL text, and
    // Error(kExitTooLarge) for a text longer than [query] max_sql_bytes; then nothing is stored.
    // `progress` (optional) hears how far the publishing got, for a progress bar.
    //
    // The broker connection is kept for the next submit (a long-lived front end pays the
    // connect, the declares and the confirm mode once); one found broken, or idle longer than
    // the heartbeat interval (the broker may have dropped it), is made again, and a publish on a
    // kept connection that fails is tried once more on a new one (a duplicate message is
    // harmless: every decision is taken from the row).
    Submitted submit(const std::vector<std::string>& sqls, const std::string& user,
                     const PublishProgress& progress = {});
    // Closes the kept broker connection politely (a broker round trip), if there is one. The
    // destructor only frees it, which the broker logs as an unexpectedly closed connection.
    void close() noexcept;

    // --- read ---
    Task show(int64_t id);  // Error(kExitNotFound)
    std::vector<Task> list(const TaskStore::ListFilter& filter);  // newest first
    std::vector<Task> list(std::optional<Status> status, int64_t limit) { return list({status, {}, limit}); }
    // show() and list() mark the tasks held back by [query] max_running_per_user (mark_waiting).
    // A succeeded task's result. Error: kExitNotFound (no task, or result expired), the task's
    // own exit code (kExitTaskFailed, kExitTaskCancelled) when it ended otherwise, kExitConflict
    // while it has not ended.
    ResultData result(int64_t id);
    // Rows [offset, offset + limit) of it and the total, with result()'s errors. The one rule of
    // what a page holds, for every front end that pages.
    TaskStore::ResultPage result_page(int64_t id, int64_t offset, int64_t limit);
    // All of it, to be read a block at a time (TaskStore::read_result), with result()'s errors.
    // The reader uses this service's store: it must not outlive the service.
    std::unique_ptr<ResultReader> read_result(int64_t id);

    // --- wait ---
    struct Waited {
        Task task;
        bool timed_out = false;
        bool interrupted = false;  // `stop` said so before the task ended
    };
    // Until the task ends, or `timeout_ms` passes (0: no limit), or `stop` (optional, asked
    // after every look and whenever a signal interrupts the wait) returns true. It hears of the
    // outcome through the store's watch (TaskStore::watch) as soon as it is committed, and looks
    // at least every [store] wait_poll_ms all the same; with [store] notify = "off" it polls.
    // `polled` (optional) sees the task at every look while it has not ended, for a progress
    // line.
    Waited wait(int64_t id, int64_t timeout_ms, const std::function<void(const Task&)>& polled = {},
                const std::function<bool()>& stop = {});
    // A new watch of the kind wait() uses: the store's, or a PollingWatch when [store] notify is
    // "off". For a front end that waits on its own (an event loop: StoreWatch::fd()).
    std::unique_ptr<StoreWatch> watch();
    // For a one-shot client (sqlq run, wait, cancel) once it has waited for the last time: the
    // kept watch lets go of its kernel state now, so that its teardown overlaps the printing of
    // the result instead of delaying the process's exit (StoreWatch::unwatch). A later wait
    // makes a new watch.
    void done_waiting();

    // --- cancel ---
    struct Cancelled {
        enum class Kind {
            cancelled_queued,  // it was queued: cancelled at once
            stopped,           // it was running and stopped; stop_ms says how long that took
            requested,         // running, the request is recorded (not waited for)
            already_finished,  // it had ended before the request (status): nothing to cancel
            finished_first,    // running, it ended otherwise before the stop took (status)
            still_running,     // waited for the grace period and it still runs
        } kind = Kind::requested;
        Status status = Status::queued;
        int64_t stop_ms = 0;
    };
    enum class WaitForStop : bool { no, yes };
    // Error(kExitNotFound) for no such task.
    Cancelled cancel(int64_t id, const std::string& by, WaitForStop wait);

    // --- audit ---
    struct Audit {
        TaskStore::AuditFigures store;
        int64_t submitted = 0;
        int64_t lost = 0;            // not ended, no message for it, no worker on it
        int64_t queue_left = -1;     // -1: the broker could not be asked
        int64_t dead_lettered = -1;
        int64_t consumers = -1;
        std::map<std::string, int64_t> dead_letter_reasons;
        std::string broker_error;    // "" when the broker answered
        std::optional<int64_t> recovery_percentile(double p) const;
        bool bad() const;            // something lost, stuck or duplicated, or no broker
    };
    Audit audit();
    // Every fleet that records itself in this store (sqlq workers): its supervisor, its workers
    // and how long ago it last wrote; `stale` when that is over 3 of its sweep intervals (+2 s).
    struct Fleet {
        TaskStore::FleetRecord record;
        bool stale = false;
    };
    std::vector<Fleet> fleets();

private:
    amqp::Connection& publisher();  // the kept connection, made when missing

    // The watch of wait() and cancel(), made at the first wait and kept: closing an inotify
    // instance that had a watch blocks for an RCU grace period of the kernel (~8 ms here,
    // docs/performance.md), which a long-lived front end would otherwise pay at every wait.
    StoreWatch& waiting_watch();

    Config cfg_;
    std::unique_ptr<TaskStore> store_;
    std::unique_ptr<StoreWatch> watch_;
    std::unique_ptr<StoreWatch> unwatched_;  // done_waiting()'s, closed with the service
    std::unique_ptr<amqp::Connection> conn_;  // null until the first submit, or after a failure
    int64_t conn_used_ = 0;                   // mono_ms of its last use
};

// A task as JSON, the same for every front end: {"id":..,"status":..,"stop_ms":..,...}.
// "elapsed_ms" is how long it has been running (at `now`, ms since the epoch), or ran once ended;
// null while it has never started.
nlohmann::json task_json(const Task& t, int64_t now);
// The same at the store's clock, read only when the task has not ended (one round trip on a
// PostgreSQL store).
nlohmann::json task_json(const Task& t, TaskService& svc);

// How long a task has been running at `now`, or ran (started → finished); nullopt when it has
// not started.
std::optional<int64_t> elapsed_ms(const Task& t, int64_t now);

// The exit code that a finished task's status stands for (kExitOk, kExitTaskFailed,
// kExitTaskCancelled; kExitTimeout while it has not finished).
int exit_for(Status s);

}  // namespace sqlq
