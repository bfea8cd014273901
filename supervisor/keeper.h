#pragma once
// One process the supervisor keeps alive beside the worker fleet: sqlq-web when [web] enabled.
// Started with the fleet, started again when it dies (at once after a healthy run; after a
// failed start, following a doubling backoff), stopped with the fleet (SIGTERM, SIGKILL after
// stop_timeout_ms). It has no status pipe and no task, so it needs none of a worker slot's
// states: just the four below. Pure logic like the Fleet: processes are started and signalled
// through a Spawner, time comes from a Clock (tests/supervisor/keeper.tests.cpp).
//
//   off ──want──▶ running ──exit (wanted, healthy run)──▶ running (respawned at once)
//    ▲               │     └─exit (wanted, failed start)─▶ backoff ──timer──▶ running
//    │               └──unwant / stop──▶ stopping ──exit──▶ off   (timer: SIGKILL)
//    └────────────────────────── unwant (from backoff) ◀──────────┘
#include <cstdint>
#include <functional>
#include <string>
#include <sys/types.h>

#include <nlohmann/json.hpp>

#include "supervisor/fleet.h"

namespace sqlq::supervisor {

class Keeper {
public:
    enum class State { off, running, stopping, backoff };
    static const char* to_string(State s);

    struct Policy {
        int64_t stop_timeout_ms = 30000;   // SIGTERM, then SIGKILL this much later
        int64_t failed_start_ms = 2000;    // an exit sooner than this after the spawn is a failed start
        int64_t backoff_initial_ms = 200;  // the wait after the first failed start in a row...
        int64_t backoff_max_ms = 30000;    // ...doubling with each further one, up to this
    };
    // `spawner.spawn(0, generation)` starts the process; its slot argument is always 0.
    Keeper(std::string name, Policy policy, Spawner& spawner, Clock& clock);

    // Whether the process should run. true: started now unless it runs or waits out a backoff;
    // false: SIGTERM (a backoff is simply dropped).
    void set_wanted(bool wanted);
    void set_policy(const Policy& p) { policy_ = p; }
    // The fleet stops: like set_wanted(false). done() once the process is reaped.
    void stop() { set_wanted(false); }
    // SIGKILL now (a second stop request).
    void kill();
    // A reaped child. False when `pid` is not this keeper's process.
    bool exited(pid_t pid, int wait_status);
    // Fires a due deadline: the end of a backoff, the stop timeout.
    void tick();
    // When tick() has something to do (0: nothing pending).
    int64_t next_deadline() const { return deadline_; }

    State state() const { return state_; }
    bool wanted() const { return wanted_; }
    bool done() const { return state_ == State::off; }  // no process, none pending
    pid_t pid() const { return pid_; }
    uint64_t restarts() const { return restarts_; }  // spawns after the first
    uint64_t generation() const { return generation_; }  // counts spawns: names the latest process
    // The last stderr line of the latest process (set by the event loop, also after its exit),
    // for status.
    void set_last_words(std::string s) { last_words_ = std::move(s); }
    // For `sqlq-supervisor status`: state, pid, uptime_ms, restarts, failed_starts, last_exit,
    // and, in a backoff, retry_in_ms and last_error.
    nlohmann::json status_json(int64_t now) const;

private:
    void spawn();
    void backoff();

    std::string name_;
    Policy policy_;
    Spawner& spawner_;
    Clock& clock_;
    State state_ = State::off;
    bool wanted_ = false;
    pid_t pid_ = -1;          // -1 once reaped
    uint64_t generation_ = 0;
    int64_t spawned_at_ = 0;
    int64_t deadline_ = 0;    // backoff: respawn at; stopping: SIGKILL at (0: none)
    int failed_starts_ = 0;   // in a row; reset by a healthy run
    uint64_t restarts_ = 0;
    bool started_once_ = false;
    std::string last_exit_;
    std::string last_words_;
};

}  // namespace sqlq::supervisor
