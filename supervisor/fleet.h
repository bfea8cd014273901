#pragma once
// The fleet: N worker slots and the one state table that moves them. Pure logic: processes are
// started and signalled through a Spawner, time comes from a Clock, so the table is tested
// without processes (tests/supervisor/fleet.tests.cpp). The event loop (supervisor.h) feeds it
// what happened (a report line, a reaped exit, a deadline) and re-arms its timer at
// next_deadline().
//
// A slot's life (fleet.cpp has the table, state × event → action):
//
//   exited ──want──▶ starting ──ready──▶ ready ◀──ready── busy
//                       │                  └──busy──────▶ │
//                       └──────────── term / kill ────────┴──▶ stopping ──exit──▶ (respawn) starting
//                                                                           └──▶ backoff ──timer──▶ starting
//                                                                           └──▶ exited (not wanted)
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <sys/types.h>
#include <unordered_map>
#include <vector>

#include "task/report.h"

namespace sqlq::supervisor {

enum class SlotState {
    exited,    // no process, and none wanted (before start, after stop or scale-down)
    starting,  // spawned; not yet consuming
    ready,     // consumer registered, idle
    busy,      // running a task
    stopping,  // asked to exit (SIGTERM) or killed; waiting to reap it
    backoff,   // failed to start too often in a row; respawns when its timer fires
};
const char* to_string(SlotState s);

// What can happen to a slot. Reports come from the worker's status pipe; exit from reap().
enum class SlotEvent {
    want,       // the slot should run a worker (start, scale up)
    starting,   // report "starting"
    ready,      // report "ready"
    busy,       // report "busy <task>"
    alive,      // report "alive"
    stopping,   // report "stopping"
    exit,       // the process was reaped
    term,       // stop gracefully: SIGTERM, SIGKILL after stop_timeout_ms
    kill,       // SIGKILL now (watchdog, cancel grace over, second stop)
    timer,      // the slot's own deadline passed (backoff over, stop timeout)
};
const char* to_string(SlotEvent e);

// A monotonic clock in milliseconds.
class Clock {
public:
    virtual ~Clock() = default;
    virtual int64_t now_ms() = 0;
};

struct Spawned {
    pid_t pid = -1;
    uint64_t start_time = 0;  // process_start_time(pid): with the pid, names the process
};

// Starts and signals worker processes. spawn() returns once the process exists; its reports and
// its exit come back later through Fleet::report() and Fleet::exited(). Throws sqlq::Error when
// no process could be started at all (fork or pipe failed); an exec failure is an exit 127.
class Spawner {
public:
    virtual ~Spawner() = default;
    virtual Spawned spawn(int slot, uint64_t generation) = 0;
    virtual void signal(pid_t pid, int sig) = 0;
    // Resident memory of a worker in MiB (0 when unknown), for recycling.
    virtual int64_t rss_mb(pid_t pid) = 0;
};

// The knobs of the table, from [supervisor] (see docs/operations.md).
struct Policy {
    int64_t stop_timeout_ms = 30000;
    int64_t watchdog_ms = 30000;
    int64_t cancel_grace_ms = 2000;
    // A worker still busy with one task this long after it started it is killed and the task
    // failed: [query] timeout_ms + [supervisor] deadline_grace_ms (0: no deadline). The worker
    // stops a query at timeout_ms itself; this catches one stuck where it cannot look (a long
    // native call).
    int64_t task_deadline_ms = 0;
    int64_t deadline_grace_ms = 0;  // for the message only
    int64_t max_tasks_per_worker = 0;
    int64_t max_worker_rss_mb = 0;
    int64_t failed_start_ms = 2000;
    int failed_starts_before_backoff = 3;
    int64_t backoff_initial_ms = 200;
    int64_t backoff_max_ms = 30000;
};

struct Slot {
    int number = 0;             // 1-based; what `restart SLOT` and `--slot N` name
    SlotState state = SlotState::exited;
    bool wanted = false;        // a worker should run here; false: retire once exited
    pid_t pid = -1;             // -1 once reaped
    uint64_t start_time = 0;
    uint64_t generation = 0;    // counts spawns; a report of an older generation is stale
    int64_t spawned_at = 0;
    int64_t starting_since = 0; // spawned, or began to reconnect: "ready in N ms" counts from here
    int64_t last_heard = 0;     // any report; the watchdog measures from here
    bool reached_ready = false; // this process reported ready at least once
    bool exit_expected = false; // we asked it to go (term, recycle, cancel): not a failure
    bool stop_asked = false;    // we sent SIGTERM (stop, restart, scale-down, recycling): even if
                                // killed at stop_timeout_ms, its task was not lost to a death
    int64_t task = 0;           // busy with this task (0: none)
    int64_t waiting_for = 0;    // ready, but holding a delivery of this task it cannot run yet
                                // (report "waiting" or "target"); cleared by the process's next report
    bool waiting_on_target = false;  // ... because the query target cannot be reached (report "target")
    int64_t task_since = 0;
    int64_t tasks_done = 0;     // by this process, for max_tasks_per_worker
    int64_t cancel_task = 0;    // a cancel is pending for this task...
    int64_t cancel_at = 0;      // ...and the worker is killed at this time if still on it
    int64_t deadline = 0;       // backoff: respawn at; stopping: SIGKILL at (0: none)
    int restarts = 0;           // spawns after the first
    int failed_starts = 0;      // in a row; reset by a healthy run
    std::string last_exit;      // "exit 0", "signal 9 (KILL)", "" before any
    std::string last_words;     // the last stderr line of a worker (set by the event loop)
    std::string kill_reason;    // why the supervisor killed this process ("" when it did not)
    bool fail_task = false;     // ...and its task is to be failed, not run again (hard deadline)
    // Why the supervisor ended this process, for the restart counter: "watchdog", "cancel",
    // "deadline", "recycled", "requested"; nullptr when it did not (a crash or a failed start).
    const char* stop_cause = nullptr;

    bool has_process() const { return pid > 0; }
};

// Decoded wait status: "exit 3" or "signal 9 (KILL)".
std::string describe_wait_status(int status);
// The label of a failed start ended by this wait status: "exec" (exit 126 or 127: the binary
// could not be run), "exit" or "signal".
const char* failed_start_reason(int status);

// Counts kept as events happen, for the metrics (never reset; a reload keeps them).
struct FleetCounters {
    // Workers that ended while their slot was still wanted (so it respawns, at once or after a
    // backoff), by why: "crash" (it died on its own), "failed_start", or the supervisor's
    // Slot::stop_cause.
    std::map<std::string, uint64_t> restarts;
    // Failed starts by how they ended: "exec", "exit", "signal", or "spawn" (no process could be
    // started: fork or pipe failed).
    std::map<std::string, uint64_t> failed_starts;
};

class Fleet {
public:
    Fleet(Policy policy, Spawner& spawner, Clock& clock);

    // A worker that was busy with `task` died: feeds TaskStore::owner_lost (or, for a task past
    // its hard deadline, TaskStore::fail_abandoned). Not for a worker the supervisor itself asked
    // to stop (stop, restart, scale-down, recycling), even when it had to kill it at
    // stop_timeout_ms: that is no death to recover from.
    struct LostTask {
        int64_t task = 0;
        pid_t pid = -1;
        uint64_t start_time = 0;
        std::string why;    // "its worker died: signal 11 (SEGV)", "killed by its supervisor: ..."
        bool fail = false;  // fail the task with `why` instead of letting it run again
    };
    using TaskLost = std::function<void(const LostTask&)>;
    void on_task_lost(TaskLost f) { task_lost_ = std::move(f); }

    // --- commands ---
    // Converges to n wanted slots: new slots start at once; scaling down retires backoff, then
    // starting, then idle, and busy slots last (they finish their task first).
    void set_target(int n);
    void set_policy(const Policy& p) {
        policy_ = p;
        wake_at_ = next_deadline();  // a shorter watchdog_ms or deadline moves deadlines earlier
    }
    // Replaces the worker of one slot (or all, one slot at a time: the next one is stopped once
    // the previous replacement is ready). False when there is no such wanted slot.
    bool restart(std::optional<int> slot);
    // Graceful stop of everything: SIGTERM, SIGKILL after stop_timeout_ms. done() afterwards.
    void stop();
    // SIGKILL to every worker (a second stop request).
    void kill_all();
    // A cancel of `task` was requested: if a slot is busy with it, its worker is killed when it
    // is still on that task cancel_grace_ms from now. Returns the slot number, or 0.
    int cancel(int64_t task);

    // --- what happened ---
    // A status line from the worker of `slot`, spawn `generation`; stale generations are dropped.
    void report(int slot, uint64_t generation, const ReportLine& r);
    // A reaped child. False when the pid is no worker of ours (the caller logs it).
    bool exited(pid_t pid, int wait_status);
    // Fires due deadlines: backoff, stop timeouts, watchdog, cancel grace. Walks every slot.
    void tick();
    // The earliest time tick() has something to do (0: nothing pending). Walks every slot.
    int64_t next_deadline() const;
    // When to call tick(): never later than next_deadline(), possibly earlier (0: nothing
    // pending). Kept as events arrive, without a walk: an event only ever adds a deadline (and
    // lowers this) or moves one later (a report moves the watchdog's), which leaves it early;
    // tick() sets it exact again. So with a thousand workers each saying "alive" twice a
    // second, the event loop does not walk the slot table per event, and ticks about once per
    // watchdog_ms when nothing is due.
    int64_t wake_at() const { return wake_at_; }

    // --- views ---
    const std::vector<Slot>& slots() const { return slots_; }
    Slot* find(int number);
    Slot* find_pid(pid_t pid);
    int target() const { return target_; }
    int alive() const;   // worker processes that exist (any state but exited and backoff)
    int ready() const;   // wanted slots that are ready or busy (walks every slot)
    // Without a walk (counts kept by dispatch() and set_wanted()): the event loop asks after
    // every event.
    bool all_ready() const { return ready_count_ == target_; }
    bool done() const { return stopping_all_ && unexited_count_ == 0; }  // stop() was called and every process has been reaped
    const Policy& policy() const { return policy_; }
    const FleetCounters& counters() const { return counters_; }

    // Drives one event through the table: the only place a slot changes state.
    void dispatch(Slot& s, SlotEvent e, const ReportLine* r = nullptr, int wait_status = 0);

private:
    using Action = void (Fleet::*)(Slot&, const ReportLine*, int);

    // Actions, named after what they do; each table cell is one of these.
    void spawn(Slot& s, const ReportLine*, int);
    void heard(Slot& s, const ReportLine*, int);
    void became_ready(Slot& s, const ReportLine*, int);
    void became_busy(Slot& s, const ReportLine*, int);
    void task_done(Slot& s, const ReportLine*, int);
    void reconnecting(Slot& s, const ReportLine*, int);
    void worker_stopping(Slot& s, const ReportLine*, int);
    void terminate(Slot& s, const ReportLine*, int);
    void kill(Slot& s, const ReportLine*, int);
    void died(Slot& s, const ReportLine*, int);
    void retire(Slot& s, const ReportLine*, int);
    void ignore(Slot& s, const ReportLine*, int);
    void bug(Slot& s, const ReportLine*, int);

    static const Action kTable[6][10];

    Slot& slot_at(int number);   // grows the vector
    void set_wanted(Slot& s, bool wanted);
    void due(int64_t t) {        // a deadline was set at t: wake no later
        if (t > 0 && (wake_at_ == 0 || t < wake_at_)) wake_at_ = t;
    }
    // What a slot adds to ready_count_ and unexited_count_.
    static int counts_ready(const Slot& s) {
        return s.wanted && (s.state == SlotState::ready || s.state == SlotState::busy);
    }
    static int counts_unexited(const Slot& s) { return s.state != SlotState::exited; }
    void advance_restart();
    int64_t backoff_ms(int failed_starts) const;

    Policy policy_;
    Spawner& spawner_;
    Clock& clock_;
    TaskLost task_lost_;
    FleetCounters counters_;
    std::vector<Slot> slots_;    // slots_[i].number == i + 1
    std::unordered_map<pid_t, int> by_pid_;  // a live process's pid → its slot number (erased when reaped)
    int ready_count_ = 0;        // == ready()
    int unexited_count_ = 0;     // slots whose state is not exited
    int64_t wake_at_ = 0;        // see wake_at()
    int target_ = 0;
    bool stopping_all_ = false;
    std::deque<int> restart_queue_;
    int restarting_ = 0;         // the slot being replaced by a rolling restart (0: none)
    // Set while dispatching the current event: the bug() action names them.
    SlotEvent current_event_ = SlotEvent::want;
};

}  // namespace sqlq::supervisor
