#include "supervisor/fleet.h"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <sys/wait.h>

#include <spdlog/spdlog.h>

#include "task/task.h"
#include "util/backoff.h"
#include "util/error.h"

namespace sqlq::supervisor {

const char* to_string(SlotState s) {
    switch (s) {
    case SlotState::exited: return "exited";
    case SlotState::starting: return "starting";
    case SlotState::ready: return "ready";
    case SlotState::busy: return "busy";
    case SlotState::stopping: return "stopping";
    case SlotState::backoff: return "backoff";
    }
    return "?";
}

const char* to_string(SlotEvent e) {
    switch (e) {
    case SlotEvent::want: return "want";
    case SlotEvent::starting: return "report starting";
    case SlotEvent::ready: return "report ready";
    case SlotEvent::busy: return "report busy";
    case SlotEvent::alive: return "report alive";
    case SlotEvent::stopping: return "report stopping";
    case SlotEvent::exit: return "exit";
    case SlotEvent::term: return "term";
    case SlotEvent::kill: return "kill";
    case SlotEvent::timer: return "timer";
    }
    return "?";
}

const char* failed_start_reason(int status) {
    if (WIFEXITED(status)) {
        // 126/127: the worker binary could not be executed (launch.cpp), the usual exec codes.
        int code = WEXITSTATUS(status);
        return code == 126 || code == 127 ? "exec" : "exit";
    }
    return WIFSIGNALED(status) ? "signal" : "exit";
}

std::string describe_wait_status(int status) {
    if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char* name = sigabbrev_np(sig);
        return "signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "") +
               (WCOREDUMP(status) ? ", core dumped" : "");
    }
    return "status " + std::to_string(status);
}

// The whole lifecycle of a slot, state × event. Every state change happens in one of these
// actions, and only through dispatch(). `bug` marks what cannot happen: reports and exits only
// reach a slot whose process exists (stale generations are dropped before), and only backoff
// and stopping slots have a deadline.
// clang-format off
const Fleet::Action Fleet::kTable[6][10] = {
//               want          starting             ready                busy                 alive         stopping                  exit         term              kill         timer
/* exited   */ { &Fleet::spawn,  &Fleet::bug,          &Fleet::bug,         &Fleet::bug,         &Fleet::bug,  &Fleet::bug,              &Fleet::bug,  &Fleet::ignore,    &Fleet::ignore, &Fleet::bug   },
/* starting */ { &Fleet::ignore, &Fleet::heard,        &Fleet::became_ready,&Fleet::became_busy, &Fleet::heard,&Fleet::worker_stopping,  &Fleet::died, &Fleet::terminate, &Fleet::kill,   &Fleet::bug   },
/* ready    */ { &Fleet::ignore, &Fleet::reconnecting, &Fleet::heard,       &Fleet::became_busy, &Fleet::heard,&Fleet::worker_stopping,  &Fleet::died, &Fleet::terminate, &Fleet::kill,   &Fleet::bug   },
/* busy     */ { &Fleet::ignore, &Fleet::reconnecting, &Fleet::task_done,   &Fleet::became_busy, &Fleet::heard,&Fleet::worker_stopping,  &Fleet::died, &Fleet::terminate, &Fleet::kill,   &Fleet::bug   },
/* stopping */ { &Fleet::ignore, &Fleet::heard,        &Fleet::heard,       &Fleet::heard,       &Fleet::heard,&Fleet::heard,            &Fleet::died, &Fleet::ignore,    &Fleet::kill,   &Fleet::kill  },
/* backoff  */ { &Fleet::ignore, &Fleet::bug,          &Fleet::bug,         &Fleet::bug,         &Fleet::bug,  &Fleet::bug,              &Fleet::bug,  &Fleet::retire,    &Fleet::ignore, &Fleet::spawn },
};
// clang-format on

Fleet::Fleet(Policy policy, Spawner& spawner, Clock& clock) : policy_(policy), spawner_(spawner), clock_(clock) {}

void Fleet::dispatch(Slot& s, SlotEvent e, const ReportLine* r, int wait_status) {
    current_event_ = e;
    // Every report is a sign of life, whatever else it means (it moves the watchdog's deadline
    // later: wake_at_ stays as it is).
    if (r) s.last_heard = clock_.now_ms();
    const int ready_before = counts_ready(s), unexited_before = counts_unexited(s);
    Action a = kTable[static_cast<int>(s.state)][static_cast<int>(e)];
    (this->*a)(s, r, wait_status);
    ready_count_ += counts_ready(s) - ready_before;
    unexited_count_ += counts_unexited(s) - unexited_before;
}

void Fleet::set_wanted(Slot& s, bool wanted) {
    ready_count_ -= counts_ready(s);
    s.wanted = wanted;
    ready_count_ += counts_ready(s);
}

// --- actions ---

void Fleet::spawn(Slot& s, const ReportLine*, int) {
    const int64_t now = clock_.now_ms();
    if (s.generation > 0) ++s.restarts;
    ++s.generation;
    s.pid = -1;
    s.reached_ready = false;
    s.exit_expected = false;
    s.stop_asked = false;
    s.task = 0;
    s.tasks_done = 0;
    s.cancel_task = 0;
    s.deadline = 0;
    s.kill_reason.clear();
    s.fail_task = false;
    s.stop_cause = nullptr;
    try {
        Spawned p = spawner_.spawn(s.number, s.generation);
        s.pid = p.pid;
        s.start_time = p.start_time;
    } catch (const Error& e) {
        // No process at all (fork or pipe failed, e.g. out of pids): as good as a failed start.
        ++s.failed_starts;
        ++counters_.failed_starts["spawn"];
        s.state = SlotState::backoff;
        int64_t wait = backoff_ms(s.failed_starts);
        s.deadline = now + wait;
        due(s.deadline);
        spdlog::error("slot {}: cannot spawn a worker: {}; retrying in {} ms", s.number, e.what(), wait);
        return;
    }
    s.spawned_at = now;
    s.starting_since = now;
    s.last_heard = now;
    s.state = SlotState::starting;
    by_pid_[s.pid] = s.number;
    due(now + policy_.watchdog_ms);
    spdlog::info("slot {} pid {}: spawned{}", s.number, s.pid,
                 s.restarts ? " (restart " + std::to_string(s.restarts) + ")" : std::string());
}

void Fleet::heard(Slot& s, const ReportLine* r, int) {
    // A stopping worker still says what it does: keep its task current for owner_lost().
    if (s.state == SlotState::stopping && r) {
        if (r->what == Report::busy) s.task = r->task_id, s.task_since = clock_.now_ms();
        if (r->what == Report::ready) s.task = 0;
    }
}

void Fleet::became_ready(Slot& s, const ReportLine*, int) {
    s.state = SlotState::ready;
    s.reached_ready = true;
    spdlog::info("slot {} pid {}: ready in {} ms{}", s.number, s.pid, clock_.now_ms() - s.starting_since,
                 s.starting_since != s.spawned_at ? " (reconnected)" : "");
}

void Fleet::became_busy(Slot& s, const ReportLine* r, int) {
    if (!s.reached_ready) became_ready(s, r, 0);  // the "ready" line was lost: busy implies it
    s.state = SlotState::busy;
    s.task = r ? r->task_id : 0;
    s.task_since = clock_.now_ms();
    if (s.task && policy_.task_deadline_ms > 0) due(s.task_since + policy_.task_deadline_ms);
    spdlog::debug("slot {} pid {}: busy with task {}", s.number, s.pid, s.task);
}

void Fleet::task_done(Slot& s, const ReportLine*, int) {
    const int64_t now = clock_.now_ms();
    spdlog::debug("slot {} pid {}: task {} done in {} ms", s.number, s.pid, s.task, now - s.task_since);
    ++s.tasks_done;
    s.task = 0;
    s.state = SlotState::ready;
    // Recycling happens here and only here: between tasks, never in the middle of one.
    if (!s.wanted || stopping_all_) return;
    std::string why;
    if (policy_.max_tasks_per_worker > 0 && s.tasks_done >= policy_.max_tasks_per_worker)
        why = "after " + std::to_string(s.tasks_done) + " tasks";
    else if (policy_.max_worker_rss_mb > 0) {
        int64_t rss = spawner_.rss_mb(s.pid);
        if (rss > policy_.max_worker_rss_mb)
            why = "at " + std::to_string(rss) + " MiB resident (max_worker_rss_mb " +
                  std::to_string(policy_.max_worker_rss_mb) + ")";
    }
    if (!why.empty()) {
        spdlog::info("slot {} pid {}: recycling {}", s.number, s.pid, why);
        s.stop_cause = "recycled";
        terminate(s, nullptr, 0);
    }
}

void Fleet::reconnecting(Slot& s, const ReportLine*, int) {
    // The worker lost its broker connection and connects again; its delivery went back to the
    // queue with the connection.
    spdlog::info("slot {} pid {}: reconnecting to the broker", s.number, s.pid);
    s.task = 0;
    s.state = SlotState::starting;
    s.starting_since = clock_.now_ms();
}

void Fleet::worker_stopping(Slot& s, const ReportLine*, int) {
    // The worker stops of its own accord (or saw our SIGTERM before we recorded it): give it the
    // same time to finish as a requested stop.
    spdlog::info("slot {} pid {}: stopping", s.number, s.pid);
    s.state = SlotState::stopping;
    if (s.deadline == 0) s.deadline = clock_.now_ms() + policy_.stop_timeout_ms;
    due(s.deadline);
}

void Fleet::terminate(Slot& s, const ReportLine*, int) {
    spawner_.signal(s.pid, SIGTERM);
    s.exit_expected = true;
    s.stop_asked = true;
    s.state = SlotState::stopping;
    s.deadline = clock_.now_ms() + policy_.stop_timeout_ms;
    due(s.deadline);
    spdlog::info("slot {} pid {}: asked to stop (SIGTERM){}", s.number, s.pid,
                 s.task ? ", finishing task " + std::to_string(s.task) : std::string());
}

void Fleet::kill(Slot& s, const ReportLine*, int) {
    if (current_event_ == SlotEvent::timer) {
        spdlog::warn("slot {} pid {}: did not stop within {} ms: SIGKILL", s.number, s.pid, policy_.stop_timeout_ms);
        s.kill_reason = "killed by its supervisor: did not stop within stop_timeout_ms (" +
                        std::to_string(policy_.stop_timeout_ms) + " ms)";
    }
    spawner_.signal(s.pid, SIGKILL);
    s.state = SlotState::stopping;
    s.deadline = 0;  // SIGKILL cannot be refused: the exit follows
}

void Fleet::died(Slot& s, const ReportLine*, int wait_status) {
    const int64_t now = clock_.now_ms();
    const pid_t pid = s.pid;
    const int64_t uptime = now - s.spawned_at;
    s.last_exit = describe_wait_status(wait_status);
    by_pid_.erase(pid);
    s.pid = -1;  // reaped: the pid may already belong to someone else
    s.deadline = 0;
    s.cancel_task = 0;
    // A worker the supervisor asked to stop (stop, restart, scale-down, recycling) lost no task
    // to a death, even when it had to be killed at stop_timeout_ms.
    if (s.task && task_lost_ && (!s.stop_asked || s.fail_task)) {
        std::string why = s.kill_reason.empty() ? "its worker died: " + s.last_exit : s.kill_reason;
        task_lost_(LostTask{s.task, pid, s.start_time, std::move(why), s.fail_task});
    }
    const int64_t lost = s.task;
    s.task = 0;

    // A worker that got ready and finished a task started fine, however soon it died after:
    // counting it as a failed start would back a healthy fleet off under a burst of kills (the
    // fault suite's "kill a worker every 100 ms" left every slot in a 25 s backoff).
    const bool healthy = s.reached_ready && (uptime >= policy_.failed_start_ms || s.tasks_done > 0);
    const bool failed = !s.exit_expected && !healthy;
    if (failed) ++s.failed_starts;
    else if (healthy) s.failed_starts = 0;

    if (failed) ++counters_.failed_starts[failed_start_reason(wait_status)];
    if (s.wanted && !stopping_all_) ++counters_.restarts[s.stop_cause ? s.stop_cause : failed ? "failed_start" : "crash"];

    std::string detail = lost ? ", task " + std::to_string(lost) + " lost" : "";
    if (failed)
        detail += ", failed start " + std::to_string(s.failed_starts) + " in a row";
    if (!s.last_words.empty() && failed && !s.reached_ready) detail += ": " + s.last_words;
    auto level = s.exit_expected ? spdlog::level::info : spdlog::level::warn;
    spdlog::log(level, "slot {} pid {}: {} after {} ms{}", s.number, pid, s.last_exit, uptime, detail);

    if (!s.wanted || stopping_all_) {
        s.state = SlotState::exited;
        return;
    }
    if (s.failed_starts >= policy_.failed_starts_before_backoff) {
        int64_t wait = backoff_ms(s.failed_starts);
        s.state = SlotState::backoff;
        s.deadline = now + wait;
        due(s.deadline);
        spdlog::warn("slot {}: backoff {} ms after {} failed starts in a row", s.number, wait, s.failed_starts);
        return;
    }
    spawn(s, nullptr, 0);
}

void Fleet::retire(Slot& s, const ReportLine*, int) {
    s.state = SlotState::exited;
    s.deadline = 0;
    spdlog::info("slot {}: retired", s.number);
}

void Fleet::ignore(Slot&, const ReportLine*, int) {}

void Fleet::bug(Slot& s, const ReportLine*, int) {
    spdlog::error("slot {} pid {}: BUG: event '{}' in state {} (ignored)", s.number, s.pid, to_string(current_event_),
                  to_string(s.state));
}

// --- commands ---

Slot& Fleet::slot_at(int number) {
    while (static_cast<int>(slots_.size()) < number) {
        Slot s;
        s.number = static_cast<int>(slots_.size()) + 1;
        slots_.push_back(s);
    }
    return slots_[number - 1];
}

Slot* Fleet::find(int number) {
    if (number < 1 || number > static_cast<int>(slots_.size())) return nullptr;
    return &slots_[number - 1];
}

Slot* Fleet::find_pid(pid_t pid) {
    auto it = by_pid_.find(pid);
    return it == by_pid_.end() ? nullptr : find(it->second);
}

void Fleet::set_target(int n) {
    if (stopping_all_) return;
    target_ = n;
    int wanted = 0;
    for (const auto& s : slots_) wanted += s.wanted;
    // Growing: the lowest free slot numbers first.
    for (int number = 1; wanted < n; ++number) {
        Slot& s = slot_at(number);
        if (s.wanted) continue;
        set_wanted(s, true);
        s.failed_starts = 0;
        ++wanted;
        // A slot still stopping from an earlier scale-down respawns when it is reaped.
        if (s.state == SlotState::exited) dispatch(s, SlotEvent::want);
    }
    if (wanted <= n) return;
    // Shrinking: the cheapest to lose first; a busy worker finishes its task before it exits.
    auto rank = [](const Slot& s) {
        switch (s.state) {
        case SlotState::exited:
        case SlotState::backoff:
        case SlotState::stopping: return 0;
        case SlotState::starting: return 1;
        case SlotState::ready: return 2;
        case SlotState::busy: return 3;
        }
        return 3;
    };
    std::vector<Slot*> victims;
    for (auto& s : slots_)
        if (s.wanted) victims.push_back(&s);
    std::stable_sort(victims.begin(), victims.end(), [&](const Slot* a, const Slot* b) {
        if (rank(*a) != rank(*b)) return rank(*a) < rank(*b);
        return a->number > b->number;
    });
    for (int i = 0; i < wanted - n; ++i) {
        Slot& s = *victims[i];
        set_wanted(s, false);
        dispatch(s, SlotEvent::term);
    }
}

bool Fleet::restart(std::optional<int> slot) {
    if (stopping_all_) return false;
    if (slot) {
        Slot* s = find(*slot);
        if (!s || !s->wanted) return false;
        restart_queue_.push_back(*slot);
    } else {
        for (const auto& s : slots_)
            if (s.wanted) restart_queue_.push_back(s.number);
    }
    advance_restart();
    return true;
}

void Fleet::advance_restart() {
    if (restarting_) {
        Slot* r = find(restarting_);
        bool settled = !r || !r->wanted || r->state == SlotState::ready || r->state == SlotState::busy ||
                       r->state == SlotState::backoff || r->state == SlotState::exited;
        if (!settled) return;
        restarting_ = 0;
    }
    while (!restarting_ && !restart_queue_.empty()) {
        int n = restart_queue_.front();
        restart_queue_.pop_front();
        Slot* s = find(n);
        if (!s || !s->wanted) continue;
        spdlog::info("slot {} pid {}: restarting", s->number, s->pid);
        switch (s->state) {
        case SlotState::backoff:
            s->failed_starts = 0;  // an operator asked: try again now
            dispatch(*s, SlotEvent::timer);
            break;
        case SlotState::starting:
        case SlotState::ready:
        case SlotState::busy:
            s->stop_cause = "requested";
            dispatch(*s, SlotEvent::term);
            break;
        case SlotState::stopping:
        case SlotState::exited: break;
        }
        restarting_ = n;
        advance_restart();  // settles at once when the slot went straight to backoff
    }
}

void Fleet::stop() {
    stopping_all_ = true;
    restart_queue_.clear();
    restarting_ = 0;
    for (auto& s : slots_) {
        set_wanted(s, false);
        dispatch(s, SlotEvent::term);
    }
}

void Fleet::kill_all() {
    for (auto& s : slots_)
        if (s.has_process()) dispatch(s, SlotEvent::kill);
}

int Fleet::cancel(int64_t task) {
    if (task <= 0) return 0;
    for (auto& s : slots_) {
        if (s.has_process() && s.task == task) {
            s.cancel_task = task;
            s.cancel_at = clock_.now_ms() + policy_.cancel_grace_ms;
            due(s.cancel_at);
            spdlog::info("slot {} pid {}: cancel of task {} requested; killed in {} ms unless it stops", s.number,
                         s.pid, task, policy_.cancel_grace_ms);
            return s.number;
        }
    }
    return 0;
}

// --- what happened ---

void Fleet::report(int slot, uint64_t generation, const ReportLine& r) {
    Slot* s = find(slot);
    // A line written by an earlier process of this slot, read after that process was reaped.
    if (!s || s->generation != generation || !s->has_process()) return;
    SlotEvent e = SlotEvent::alive;
    switch (r.what) {
    case Report::starting: e = SlotEvent::starting; break;
    case Report::ready: e = SlotEvent::ready; break;
    case Report::busy: e = SlotEvent::busy; break;
    case Report::alive: e = SlotEvent::alive; break;
    case Report::stopping: e = SlotEvent::stopping; break;
    case Report::waiting:  // no state of its own: a ready slot, shown as waiting
    case Report::target: e = SlotEvent::alive; break;
    case Report::done: e = SlotEvent::alive; break;  // for the metrics; the "ready" after it frees the slot
    }
    if (r.what != Report::alive && r.what != Report::done) {
        const bool holding = r.what == Report::waiting || r.what == Report::target;
        s->waiting_for = holding ? r.task_id : 0;
        s->waiting_on_target = r.what == Report::target;
    }
    dispatch(*s, e, &r);
    advance_restart();
}

bool Fleet::exited(pid_t pid, int wait_status) {
    Slot* s = find_pid(pid);
    if (!s) return false;
    dispatch(*s, SlotEvent::exit, nullptr, wait_status);
    advance_restart();
    return true;
}

void Fleet::tick() {
    const int64_t now = clock_.now_ms();
    for (size_t i = 0; i < slots_.size(); ++i) {
        Slot& s = slots_[i];
        if (s.deadline && now >= s.deadline) dispatch(s, SlotEvent::timer);
        if (s.cancel_task && now >= s.cancel_at) {
            int64_t task = s.cancel_task;
            s.cancel_task = 0;
            if (s.has_process() && s.task == task) {
                spdlog::warn("slot {} pid {}: task {} still running {} ms after its cancel: SIGKILL", s.number, s.pid,
                             task, policy_.cancel_grace_ms);
                s.exit_expected = true;  // the slot refills at once; this is no failed start
                s.stop_cause = "cancel";
                s.kill_reason = "killed by its supervisor: still running " + std::to_string(policy_.cancel_grace_ms) +
                                " ms after its cancel";
                dispatch(s, SlotEvent::kill);
            }
        }
        if (s.state == SlotState::busy && s.task && policy_.task_deadline_ms > 0 &&
            now - s.task_since >= policy_.task_deadline_ms) {
            // The hard deadline. The worker's own timeout (checked between SQLite steps) missed
            // it, so the query is stuck where no check runs: it would be as stuck again.
            spdlog::warn("slot {} pid {}: task {} still running {} ms after it started, past query.timeout_ms + "
                         "deadline_grace_ms ({} ms): SIGKILL, the task fails",
                         s.number, s.pid, s.task, now - s.task_since, policy_.task_deadline_ms);
            s.exit_expected = true;
            s.kill_reason =
                hard_deadline_error(policy_.task_deadline_ms - policy_.deadline_grace_ms, policy_.deadline_grace_ms);
            s.fail_task = true;
            s.stop_cause = "deadline";
            dispatch(s, SlotEvent::kill);
        }
        bool live = s.state == SlotState::starting || s.state == SlotState::ready || s.state == SlotState::busy;
        if (live && now - s.last_heard >= policy_.watchdog_ms) {
            spdlog::warn("slot {} pid {}: silent for {} ms (watchdog_ms {}): SIGKILL", s.number, s.pid,
                         now - s.last_heard, policy_.watchdog_ms);
            s.kill_reason = "killed by its supervisor: no sign of life for " + std::to_string(now - s.last_heard) +
                            " ms (watchdog_ms " + std::to_string(policy_.watchdog_ms) + ")";
            s.stop_cause = "watchdog";
            dispatch(s, SlotEvent::kill);
        }
    }
    advance_restart();
    wake_at_ = next_deadline();  // exact again
}

int64_t Fleet::next_deadline() const {
    int64_t next = 0;
    auto consider = [&](int64_t t) {
        if (t > 0 && (next == 0 || t < next)) next = t;
    };
    for (const auto& s : slots_) {
        consider(s.deadline);
        if (s.cancel_task) consider(s.cancel_at);
        if (s.state == SlotState::starting || s.state == SlotState::ready || s.state == SlotState::busy)
            consider(s.last_heard + policy_.watchdog_ms);
        if (s.state == SlotState::busy && s.task && policy_.task_deadline_ms > 0)
            consider(s.task_since + policy_.task_deadline_ms);
    }
    return next;
}

// --- views ---

int Fleet::alive() const {
    int n = 0;
    for (const auto& s : slots_) n += s.has_process();
    return n;
}

int Fleet::ready() const {
    int n = 0;
    for (const auto& s : slots_)
        n += s.wanted && (s.state == SlotState::ready || s.state == SlotState::busy);
    return n;
}

int64_t Fleet::backoff_ms(int failed_starts) const {
    // initial at the threshold, doubling with each failed start beyond it, capped. The count,
    // not a Backoff, is the slot's state: status shows it, and a reload may change the policy.
    Backoff b(std::min(policy_.backoff_initial_ms, policy_.backoff_max_ms), policy_.backoff_max_ms);
    for (int n = policy_.failed_starts_before_backoff; n < failed_starts && b.current() < policy_.backoff_max_ms; ++n)
        b.next();
    return b.current();
}

}  // namespace sqlq::supervisor
