#include "supervisor/keeper.h"

#include <algorithm>
#include <csignal>

#include <spdlog/spdlog.h>

#include "util/backoff.h"
#include "util/error.h"

namespace sqlq::supervisor {

using nlohmann::json;

const char* Keeper::to_string(State s) {
    switch (s) {
    case State::off: return "off";
    case State::running: return "running";
    case State::stopping: return "stopping";
    case State::backoff: return "backoff";
    }
    return "?";
}

Keeper::Keeper(std::string name, Policy policy, Spawner& spawner, Clock& clock)
    : name_(std::move(name)), policy_(policy), spawner_(spawner), clock_(clock) {}

void Keeper::set_wanted(bool wanted) {
    wanted_ = wanted;
    switch (state_) {
    case State::off:
        if (wanted) spawn();
        break;
    case State::running:
        if (!wanted) {
            spdlog::info("{}: stopping pid {}", name_, pid_);
            spawner_.signal(pid_, SIGTERM);
            state_ = State::stopping;
            deadline_ = clock_.now_ms() + policy_.stop_timeout_ms;
        }
        break;
    case State::backoff:
        if (!wanted) {
            state_ = State::off;
            deadline_ = 0;
        }
        break;
    case State::stopping: break;  // wanted again: started once this one is reaped
    }
}

void Keeper::kill() {
    if (pid_ > 0) spawner_.signal(pid_, SIGKILL);
}

bool Keeper::exited(pid_t pid, int wait_status) {
    if (pid <= 0 || pid != pid_) return false;
    const int64_t now = clock_.now_ms();
    pid_ = -1;
    last_exit_ = describe_wait_status(wait_status);
    deadline_ = 0;
    if (state_ == State::stopping || !wanted_) {
        spdlog::info("{}: stopped ({})", name_, last_exit_);
        state_ = State::off;
        if (wanted_) spawn();  // wanted again while it was stopping
        return true;
    }
    // It died on its own while wanted.
    const bool failed_start = now - spawned_at_ < policy_.failed_start_ms;
    spdlog::error("{}: pid {} ended ({}){}{}", name_, pid, last_exit_, last_words_.empty() ? "" : ": ", last_words_);
    if (failed_start) {
        ++failed_starts_;
        backoff();
    } else {
        failed_starts_ = 0;
        state_ = State::off;
        spawn();
    }
    return true;
}

void Keeper::tick() {
    if (deadline_ == 0 || clock_.now_ms() < deadline_) return;
    if (state_ == State::backoff) {
        state_ = State::off;
        deadline_ = 0;
        spawn();
    } else if (state_ == State::stopping) {
        spdlog::warn("{}: pid {} still running {} ms after SIGTERM: SIGKILL", name_, pid_, policy_.stop_timeout_ms);
        spawner_.signal(pid_, SIGKILL);
        deadline_ = 0;  // the exit comes through exited()
    }
}

void Keeper::spawn() {
    try {
        Spawned p = spawner_.spawn(0, ++generation_);
        pid_ = p.pid;
    } catch (const Error& e) {
        spdlog::error("{}: cannot start it: {}", name_, e.what());
        last_words_ = e.what();
        ++failed_starts_;
        return backoff();
    }
    last_words_.clear();  // the new process's lines from now on (the event loop checks generation())
    if (started_once_) ++restarts_;
    started_once_ = true;
    spawned_at_ = clock_.now_ms();
    state_ = State::running;
    deadline_ = 0;
    spdlog::info("{}: started, pid {}", name_, pid_);
}

void Keeper::backoff() {
    Backoff b(std::min(policy_.backoff_initial_ms, policy_.backoff_max_ms), policy_.backoff_max_ms);
    for (int n = 1; n < failed_starts_ && b.current() < policy_.backoff_max_ms; ++n) b.next();
    state_ = State::backoff;
    deadline_ = clock_.now_ms() + b.current();
    spdlog::error("{}: failed to start {} time(s) in a row; retrying in {} ms", name_, failed_starts_, b.current());
}

json Keeper::status_json(int64_t now) const {
    json j;
    j["state"] = to_string(state_);
    j["pid"] = pid_ > 0 ? json(pid_) : json(nullptr);
    j["uptime_ms"] = pid_ > 0 ? json(now - spawned_at_) : json(nullptr);
    j["restarts"] = restarts_;
    j["failed_starts"] = failed_starts_;
    j["last_exit"] = last_exit_.empty() ? json(nullptr) : json(last_exit_);
    if (state_ == State::backoff) {
        j["retry_in_ms"] = std::max<int64_t>(0, deadline_ - now);
        if (!last_words_.empty()) j["last_error"] = last_words_;
    }
    return j;
}

}  // namespace sqlq::supervisor
