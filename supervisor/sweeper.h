#pragma once
// The sweeper: the supervisor's database and broker work, on its own thread so that a slow
// disk or broker never delays a respawn. Every sweep_interval_ms it republishes (with publisher
// confirms) the tasks TaskStore::to_republish() names: tasks a producer left unpublished, and
// tasks whose worker is gone while no message for them waits in the queue. It never republishes
// a task whose message the broker dead-lettered (it fails it with the broker's reason), nor one
// claimed max_attempts times (it gives it up): either would go round forever. Now and then it
// expires old results. Between sweeps it records owner_lost() for tasks whose worker died,
// promptly, since that time starts the death → rerun measure.
//
// The thread never logs itself (the logger is single-threaded): it hands each line to `post`,
// which runs it on the event loop.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "config/config.h"
#include "supervisor/metrics.h"
#include "task/store.h"

namespace sqlq::amqp {
class Connection;
}

namespace sqlq::supervisor {

class Sweeper {
public:
    using Post = std::function<void(std::function<void()>)>;
    Sweeper(const Config& cfg, Post post);
    ~Sweeper();  // stops and joins

    void start();
    void stop();
    // Takes effect at the next sweep.
    void update(const Config& cfg);
    // Queued for the thread; done before the next sweep. `why` goes with it into the store; a
    // task past its hard deadline is failed there (fail_task) instead of left to run again.
    enum class Lost { may_rerun, fail_task };
    void owner_lost(int64_t task, const Owner& owner, std::string why, Lost how);

    // For the metrics: after every sweep, what it learned of the store, the broker and the
    // queue, and the outcomes the sweeper itself wrote since the last call (failed, cancelled).
    // Runs on the event loop (through `post`). Set before start().
    struct Swept {
        metrics::SweepFigures figures;
        int64_t failed = 0;
        int64_t cancelled = 0;
    };
    void on_swept(std::function<void(const Swept&)> f) { on_swept_ = std::move(f); }
    // The fleet's workers (the `workers` array of status, as JSON text), written to the store
    // with the supervisor's heartbeat at every sweep for `sqlq workers`; the record is removed
    // when the sweeper stops.
    void fleet_view(std::string workers_json);

private:
    void run();
    void sweep();
    // Of the stale tasks about to be republished, fails those whose message lies in the
    // dead-letter queue and returns the others.
    std::vector<int64_t> drop_dead_lettered(const Config& cfg, std::vector<int64_t> ids);
    void log(int level, std::string line);

    void record_fleet(const Config& cfg);  // this fleet's record, with its heartbeat (sqlq workers)
    void forget_fleet();                   // removes it, at stop
    void tell();  // posts figures_ and the outcomes counted since the last time to on_swept_

    Post post_;
    std::function<void(const Swept&)> on_swept_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    Config cfg_;                                    // guarded by mu_
    std::string fleet_view_ = "[]";                 // guarded by mu_
    bool recorded_ = false;                         // the store holds this fleet's record
    struct LostTask {
        int64_t task;
        Owner owner;
        std::string why;
        Lost how;
    };
    std::deque<LostTask> lost_;                     // guarded by mu_
    std::thread thread_;

    // Thread-only state.
    std::unique_ptr<TaskStore> store_;
    std::unique_ptr<amqp::Connection> conn_;
    int64_t next_expire_ms_ = 0;
    std::string last_error_;  // logs a repeated failure once
    metrics::SweepFigures figures_;
    int64_t failed_ = 0, cancelled_ = 0;  // outcomes written since the last tell()
};

}  // namespace sqlq::supervisor
