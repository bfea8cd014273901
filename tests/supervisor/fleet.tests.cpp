#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <random>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/wait.h>
#include <vector>

#include "supervisor/fleet.h"
#include "supervisor/status.h"
#include "util/error.h"

using namespace sqlq;
using namespace sqlq::supervisor;

namespace {

struct FakeClock : Clock {
    int64_t now = 1000000;
    int64_t now_ms() override { return now; }
};

// Records what the table asked for; pids count up from 100.
struct FakeSpawner : Spawner {
    pid_t next_pid = 100;
    std::vector<int> spawned;                    // slot numbers, in order
    std::vector<std::pair<pid_t, int>> signals;  // (pid, signal)
    std::map<pid_t, int64_t> rss;
    bool fail = false;

    Spawned spawn(int slot, uint64_t) override {
        if (fail) throw Error("fork: Resource temporarily unavailable");
        spawned.push_back(slot);
        return {next_pid++, 4242};
    }
    void signal(pid_t pid, int sig) override { signals.emplace_back(pid, sig); }
    int64_t rss_mb(pid_t pid) override { return rss.count(pid) ? rss[pid] : 10; }

    int count(int sig) const {
        int n = 0;
        for (auto& [p, s] : signals) n += s == sig;
        return n;
    }
    bool got(pid_t pid, int sig) const {
        for (auto& [p, s] : signals)
            if (p == pid && s == sig) return true;
        return false;
    }
};

// Sends what the default logger writes into a string while it lives (the Rig turns it off).
class LogCapture {
public:
    LogCapture() : previous_(spdlog::default_logger()) {
        auto logger = std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_st>(out_));
        logger->set_pattern("[%l] %v");
        logger->set_level(spdlog::level::trace);
        spdlog::set_default_logger(logger);
    }
    ~LogCapture() { spdlog::set_default_logger(previous_); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;
    std::string text() const { return out_.str(); }

private:
    std::ostringstream out_;
    std::shared_ptr<spdlog::logger> previous_;
};

constexpr int kExit0 = 0;          // wait status of exit(0)
constexpr int kExit1 = 1 << 8;     // exit(1)
constexpr int kKilled = SIGKILL;   // killed by SIGKILL

Policy test_policy() {
    Policy p;
    p.stop_timeout_ms = 5000;
    p.watchdog_ms = 3000;
    p.cancel_grace_ms = 1000;
    p.failed_start_ms = 2000;
    p.failed_starts_before_backoff = 3;
    p.backoff_initial_ms = 200;
    p.backoff_max_ms = 1000;
    return p;
}

// A fleet with a fake spawner and clock, and helpers to speak for the workers.
struct Rig {
    FakeClock clock;
    FakeSpawner spawner;
    Fleet fleet;
    std::vector<std::pair<int64_t, pid_t>> lost;
    std::vector<Fleet::LostTask> lost_how;

    explicit Rig(Policy p = test_policy()) : fleet(p, spawner, clock) {
        spdlog::set_level(spdlog::level::off);
        fleet.on_task_lost([this](const Fleet::LostTask& t) {
            lost.emplace_back(t.task, t.pid);
            lost_how.push_back(t);
        });
    }
    Slot& slot(int n) { return *fleet.find(n); }
    void say(int n, Report what, int64_t task = 0) {
        fleet.report(n, slot(n).generation, ReportLine{what, task});
    }
    void all_ready() {
        for (const auto& s : fleet.slots())
            if (s.has_process()) say(s.number, Report::ready);
    }
    // The process of slot n ends with this wait status (as reap() would report it).
    void dies(int n, int status) { REQUIRE(fleet.exited(slot(n).pid, status)); }
    void advance(int64_t ms) {
        clock.now += ms;
        fleet.tick();
    }
};

}  // namespace

TEST_CASE("a fleet starts one worker per slot and is ready when every worker said so", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(3);
    CHECK(r.spawner.spawned == std::vector<int>{1, 2, 3});
    CHECK(r.fleet.alive() == 3);
    CHECK(r.slot(1).state == SlotState::starting);
    CHECK_FALSE(r.fleet.all_ready());

    r.say(1, Report::starting);
    r.say(1, Report::ready);
    r.say(2, Report::ready);
    CHECK_FALSE(r.fleet.all_ready());
    SECTION("by ready") { r.say(3, Report::ready); }
    SECTION("or by busy, when the ready line was lost") { r.say(3, Report::busy, 9); }
    CHECK(r.fleet.all_ready());
    CHECK(r.fleet.ready() == 3);
}

TEST_CASE("a worker that dies after a healthy run is replaced at once", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(2);
    r.all_ready();
    r.clock.now += 10000;
    pid_t old = r.slot(1).pid;

    SECTION("killed") { r.dies(1, kKilled); CHECK(r.slot(1).last_exit == "signal 9 (KILL)"); }
    SECTION("clean exit") { r.dies(1, kExit0); CHECK(r.slot(1).last_exit == "exit 0"); }
    SECTION("crash") { r.dies(1, kExit1); CHECK(r.slot(1).last_exit == "exit 1"); }

    CHECK(r.spawner.spawned.size() == 3);
    CHECK(r.slot(1).state == SlotState::starting);
    CHECK(r.slot(1).pid != old);
    CHECK(r.slot(1).restarts == 1);
    CHECK(r.slot(1).failed_starts == 0);
    CHECK(r.slot(2).restarts == 0);
}

TEST_CASE("every worker killed at once is replaced at once", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(4);
    r.all_ready();
    r.clock.now += 10000;
    for (int n = 1; n <= 4; ++n) r.dies(n, kKilled);
    CHECK(r.spawner.spawned.size() == 8);
    CHECK(r.fleet.alive() == 4);
    r.all_ready();
    CHECK(r.fleet.all_ready());
}

TEST_CASE("a worker that keeps failing to start backs off, doubling up to the cap", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    // Two failed starts are respawned at once; the third starts the backoff.
    r.clock.now += 50;
    r.dies(1, kExit1);
    r.clock.now += 50;
    r.dies(1, kExit1);
    CHECK(r.slot(1).state == SlotState::starting);
    r.clock.now += 50;
    r.dies(1, kExit1);
    CHECK(r.slot(1).state == SlotState::backoff);
    CHECK(r.slot(1).failed_starts == 3);
    CHECK(r.fleet.next_deadline() == r.clock.now + 200);
    CHECK(r.fleet.alive() == 0);

    r.advance(199);
    CHECK(r.slot(1).state == SlotState::backoff);
    CHECK(r.spawner.spawned.size() == 3);
    r.advance(1);
    CHECK(r.slot(1).state == SlotState::starting);
    CHECK(r.spawner.spawned.size() == 4);

    // 200, 400, 800, then capped at 1000.
    std::vector<int64_t> waits;
    for (int i = 0; i < 4; ++i) {
        r.clock.now += 10;
        r.dies(1, kExit1);
        REQUIRE(r.slot(1).state == SlotState::backoff);
        waits.push_back(r.slot(1).deadline - r.clock.now);
        r.advance(waits.back());
    }
    CHECK(waits == std::vector<int64_t>{400, 800, 1000, 1000});
}

TEST_CASE("a worker that exits before it was ready failed to start however long it ran", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    r.clock.now += 6000;  // e.g. a connect timeout, then a refused login
    r.dies(1, kExit1);
    CHECK(r.slot(1).failed_starts == 1);
}

TEST_CASE("a healthy run resets the failed start count", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    r.clock.now += 10;
    r.dies(1, kExit1);
    r.clock.now += 10;
    r.dies(1, kExit1);
    CHECK(r.slot(1).failed_starts == 2);
    r.say(1, Report::ready);
    SECTION("a run longer than failed_start_ms") {
        r.clock.now += 2000;
        r.dies(1, kKilled);
        CHECK(r.slot(1).failed_starts == 0);
    }
    SECTION("a ready worker that finished a task, killed soon after") {
        r.say(1, Report::busy, 7);
        r.say(1, Report::ready);
        r.clock.now += 100;
        r.dies(1, kKilled);
        CHECK(r.slot(1).failed_starts == 0);
        CHECK(r.slot(1).state == SlotState::starting);
    }
    SECTION("a ready worker that dies at once still failed") {
        r.clock.now += 100;
        r.dies(1, kKilled);
        CHECK(r.slot(1).failed_starts == 3);
        CHECK(r.slot(1).state == SlotState::backoff);
    }
}

TEST_CASE("a fork failure backs the slot off instead of spinning", "[supervisor][fleet]") {
    Rig r;
    r.spawner.fail = true;
    r.fleet.set_target(1);
    CHECK(r.slot(1).state == SlotState::backoff);
    CHECK(r.fleet.alive() == 0);
    r.spawner.fail = false;
    r.advance(200);
    CHECK(r.slot(1).state == SlotState::starting);
}

TEST_CASE("a worker silent past the watchdog is killed and replaced", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    r.say(1, Report::ready);
    pid_t pid = r.slot(1).pid;
    SECTION("alive lines keep it") {
        for (int i = 0; i < 10; ++i) {
            r.advance(1000);
            r.say(1, Report::alive);
        }
        CHECK(r.spawner.signals.empty());
    }
    SECTION("silence kills it") {
        CHECK(r.fleet.next_deadline() == r.clock.now + 3000);
        r.advance(2999);
        CHECK(r.spawner.signals.empty());
        r.advance(1);
        CHECK(r.spawner.got(pid, SIGKILL));
        CHECK(r.slot(1).state == SlotState::stopping);
        r.dies(1, kKilled);
        CHECK(r.slot(1).state == SlotState::starting);
        CHECK(r.slot(1).pid != pid);
    }
}

TEST_CASE("the death of a busy worker reports its task as lost", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(2);
    r.all_ready();
    r.say(1, Report::busy, 42);
    r.say(2, Report::busy, 43);
    r.say(2, Report::ready);
    pid_t pid1 = r.slot(1).pid;
    r.clock.now += 5000;
    r.dies(1, kKilled);
    r.dies(2, kKilled);
    REQUIRE(r.lost.size() == 1);
    CHECK(r.lost[0] == std::make_pair(int64_t(42), pid1));
    CHECK(r.lost_how[0].why == "its worker died: signal 9 (KILL)");
    CHECK_FALSE(r.lost_how[0].fail);
}

TEST_CASE("a worker busy with one task past its hard deadline is killed and its task failed",
          "[supervisor][fleet][deadline]") {
    Policy p = test_policy();
    p.task_deadline_ms = 7000;  // timeout_ms 5000 + grace 2000
    p.deadline_grace_ms = 2000;
    p.watchdog_ms = 60000;
    Rig r(p);
    r.fleet.set_target(2);
    r.all_ready();
    r.say(1, Report::busy, 42);
    const pid_t pid1 = r.slot(1).pid;
    CHECK(r.fleet.next_deadline() == r.clock.now + 7000);
    r.advance(3000);
    r.say(2, Report::busy, 43);  // a later task has its own deadline
    r.advance(3999);
    CHECK(r.spawner.count(SIGKILL) == 0);
    r.say(1, Report::alive);  // a sign of life does not move the deadline
    r.advance(1);
    CHECK(r.spawner.count(SIGKILL) == 1);
    CHECK(r.slot(1).state == SlotState::stopping);
    CHECK(r.slot(2).state == SlotState::busy);
    r.dies(1, kKilled);
    REQUIRE(r.lost_how.size() == 1);
    CHECK(r.lost_how[0].task == 42);
    CHECK(r.lost_how[0].pid == pid1);
    CHECK(r.lost_how[0].fail);
    CHECK_THAT(r.lost_how[0].why, Catch::Contains("ran past query.timeout_ms (5000 ms) + deadline_grace_ms (2000 ms)"));
    CHECK(r.slot(1).state == SlotState::starting);  // refilled at once: no failed start
    CHECK(r.slot(1).failed_starts == 0);
    SECTION("a task done in time is not touched") {
        r.say(2, Report::ready);
        r.advance(10000);
        CHECK(r.spawner.count(SIGKILL) == 1);
    }
}

TEST_CASE("a worker killed by the watchdog while busy says so for its task", "[supervisor][fleet][watchdog]") {
    Rig r;
    r.fleet.set_target(1);
    r.all_ready();
    r.say(1, Report::busy, 42);
    r.advance(r.fleet.policy().watchdog_ms);
    REQUIRE(r.spawner.count(SIGKILL) == 1);
    r.dies(1, kKilled);
    REQUIRE(r.lost_how.size() == 1);
    CHECK_THAT(r.lost_how[0].why, Catch::StartsWith("killed by its supervisor: no sign of life for"));
    CHECK_FALSE(r.lost_how[0].fail);
}

TEST_CASE("a worker the supervisor asked to go loses no task, even when killed", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    r.all_ready();
    r.say(1, Report::busy, 42);
    SECTION("restart, then the stop timeout") {
        r.fleet.restart(1);
        r.advance(5000);
        REQUIRE(r.spawner.count(SIGKILL) == 1);
        r.dies(1, kKilled);
        CHECK(r.lost.empty());
    }
    SECTION("a death nobody asked for still counts") {
        r.dies(1, kKilled);
        CHECK(r.lost.size() == 1);
    }
}

TEST_CASE("after a reconnect, ready is timed from the reconnect, not from the spawn", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    LogCapture log;
    r.clock.now += 40;
    r.say(1, Report::ready);
    CHECK(log.text().find("ready in 40 ms\n") != std::string::npos);
    r.clock.now += 100000;
    r.say(1, Report::starting);  // lost the broker
    r.clock.now += 25;
    r.say(1, Report::ready);
    CHECK(log.text().find("ready in 25 ms (reconnected)") != std::string::npos);
    CHECK(log.text().find("ready in 100025 ms") == std::string::npos);
}

TEST_CASE("stop asks every worker to finish, kills the slow ones, and respawns none", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(3);
    r.all_ready();
    r.say(2, Report::busy, 7);
    pid_t p1 = r.slot(1).pid, p2 = r.slot(2).pid, p3 = r.slot(3).pid;
    r.fleet.stop();
    CHECK(r.spawner.count(SIGTERM) == 3);
    CHECK(r.slot(2).state == SlotState::stopping);
    r.dies(1, kExit0);
    r.dies(3, kExit0);
    CHECK(r.spawner.spawned.size() == 3);
    CHECK_FALSE(r.fleet.done());

    r.say(2, Report::alive);
    r.advance(4999);
    CHECK_FALSE(r.spawner.got(p2, SIGKILL));
    r.advance(1);
    CHECK(r.spawner.got(p2, SIGKILL));
    CHECK_FALSE(r.spawner.got(p1, SIGKILL));
    CHECK_FALSE(r.spawner.got(p3, SIGKILL));
    r.dies(2, kKilled);
    CHECK(r.fleet.done());
    CHECK(r.spawner.spawned.size() == 3);
    // Killed because the supervisor stops, not because it died: task 7 runs again in the next
    // fleet, and the audit must not count that pause as a recovery.
    CHECK(r.lost.empty());
}

TEST_CASE("stop ends a backoff without another spawn", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    for (int i = 0; i < 3; ++i) r.dies(1, kExit1);
    REQUIRE(r.slot(1).state == SlotState::backoff);
    r.fleet.stop();
    CHECK(r.fleet.done());
    r.advance(10000);
    CHECK(r.spawner.spawned.size() == 3);
}

TEST_CASE("scaling converges to the new count, stopping idle workers first", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(4);
    r.all_ready();
    r.say(1, Report::busy, 11);
    r.say(3, Report::busy, 13);

    SECTION("down to 2: the idle ones go") {
        r.fleet.set_target(2);
        CHECK(r.spawner.got(r.slot(2).pid, SIGTERM));
        CHECK(r.spawner.got(r.slot(4).pid, SIGTERM));
        CHECK(r.spawner.count(SIGTERM) == 2);
        r.dies(2, kExit0);
        r.dies(4, kExit0);
        CHECK(r.slot(2).state == SlotState::exited);
        CHECK(r.spawner.spawned.size() == 4);
        CHECK(r.fleet.ready() == 2);
        CHECK(r.fleet.all_ready());
    }
    SECTION("down to 1: then the busy ones, which finish their task") {
        r.fleet.set_target(1);
        CHECK(r.spawner.count(SIGTERM) == 3);
        CHECK(r.slot(1).state == SlotState::busy);  // the lowest busy slot stays
        CHECK(r.slot(3).state == SlotState::stopping);
        CHECK(r.slot(3).task == 13);
    }
    SECTION("up to 6: new slots start, the running ones are untouched") {
        r.fleet.set_target(6);
        CHECK(r.spawner.spawned == std::vector<int>{1, 2, 3, 4, 5, 6});
        CHECK(r.spawner.signals.empty());
    }
    SECTION("down and up again before the retired ones exited") {
        r.fleet.set_target(2);
        r.fleet.set_target(4);
        CHECK(r.spawner.spawned.size() == 4);  // no new slot numbers: 2 and 4 come back
        r.dies(2, kExit0);
        r.dies(4, kExit0);
        CHECK(r.spawner.spawned == std::vector<int>{1, 2, 3, 4, 2, 4});
        CHECK(r.slot(2).failed_starts == 0);
    }
}

TEST_CASE("workers are recycled between tasks, never during one", "[supervisor][fleet]") {
    Policy p = test_policy();
    SECTION("after max_tasks_per_worker tasks") {
        p.max_tasks_per_worker = 2;
        Rig r(p);
        r.fleet.set_target(1);
        r.say(1, Report::ready);
        r.say(1, Report::busy, 1);
        r.say(1, Report::ready);
        CHECK(r.spawner.signals.empty());
        r.say(1, Report::busy, 2);
        CHECK(r.spawner.signals.empty());
        r.say(1, Report::ready);
        CHECK(r.spawner.count(SIGTERM) == 1);
        r.dies(1, kExit0);
        CHECK(r.slot(1).state == SlotState::starting);
        CHECK(r.slot(1).failed_starts == 0);
    }
    SECTION("above max_worker_rss_mb") {
        p.max_worker_rss_mb = 100;
        Rig r(p);
        r.fleet.set_target(1);
        r.say(1, Report::ready);
        r.say(1, Report::busy, 1);
        r.spawner.rss[r.slot(1).pid] = 150;
        r.say(1, Report::alive);
        CHECK(r.spawner.signals.empty());
        r.say(1, Report::ready);
        CHECK(r.spawner.count(SIGTERM) == 1);
    }
}

TEST_CASE("restart replaces one slot, or all of them one at a time", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(3);
    r.all_ready();
    SECTION("one slot") {
        CHECK(r.fleet.restart(2));
        CHECK(r.spawner.count(SIGTERM) == 1);
        CHECK(r.spawner.got(r.slot(2).pid, SIGTERM));
        r.dies(2, kExit0);
        CHECK(r.slot(2).state == SlotState::starting);
        CHECK(r.slot(2).failed_starts == 0);
    }
    SECTION("no such slot") {
        CHECK_FALSE(r.fleet.restart(9));
        CHECK(r.spawner.signals.empty());
    }
    SECTION("all: the next only once the previous replacement is ready") {
        CHECK(r.fleet.restart(std::nullopt));
        CHECK(r.spawner.count(SIGTERM) == 1);
        r.dies(1, kExit0);
        CHECK(r.spawner.count(SIGTERM) == 1);  // slot 1's new worker is not ready yet
        r.say(1, Report::ready);
        CHECK(r.spawner.count(SIGTERM) == 2);
        CHECK(r.slot(2).state == SlotState::stopping);
        r.dies(2, kExit0);
        r.say(2, Report::ready);
        r.dies(3, kExit0);
        r.say(3, Report::ready);
        CHECK(r.spawner.count(SIGTERM) == 3);
        CHECK(r.spawner.spawned.size() == 6);
        CHECK(r.fleet.all_ready());
    }
}

TEST_CASE("a cancelled task whose worker does not stop in time gets its worker killed", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(2);
    r.all_ready();
    r.say(2, Report::busy, 77);
    pid_t pid = r.slot(2).pid;
    CHECK(r.fleet.cancel(78) == 0);
    CHECK(r.fleet.cancel(77) == 2);
    SECTION("the worker stops the query in time") {
        r.advance(300);
        r.say(2, Report::ready);
        r.advance(1000);
        CHECK(r.spawner.signals.empty());
    }
    SECTION("the worker is stuck") {
        r.say(2, Report::alive);
        r.advance(999);
        CHECK(r.spawner.signals.empty());
        r.advance(1);
        CHECK(r.spawner.got(pid, SIGKILL));
        r.dies(2, kKilled);
        // Refilled at once, and not counted as a failed start.
        CHECK(r.slot(2).state == SlotState::starting);
        CHECK(r.slot(2).failed_starts == 0);
        REQUIRE(r.lost.size() == 1);
        CHECK(r.lost[0].first == 77);
    }
    SECTION("the worker moved on to another task") {
        r.say(2, Report::ready);
        r.say(2, Report::busy, 80);
        r.advance(1000);
        CHECK(r.spawner.signals.empty());
    }
}

TEST_CASE("a report of an earlier process of the slot is ignored", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    uint64_t first = r.slot(1).generation;
    r.clock.now += 5000;
    r.dies(1, kKilled);
    r.fleet.report(1, first, ReportLine{Report::ready, 0});
    CHECK(r.slot(1).state == SlotState::starting);
}

TEST_CASE("an impossible event is logged and changes nothing", "[supervisor][fleet]") {
    Rig r;
    r.fleet.set_target(1);
    r.fleet.set_target(0);
    r.dies(1, kExit0);
    REQUIRE(r.slot(1).state == SlotState::exited);
    {
        LogCapture log;
        r.fleet.dispatch(r.slot(1), SlotEvent::exit, nullptr, 0);
        r.fleet.dispatch(r.slot(1), SlotEvent::timer);
        const std::string text = log.text();
        INFO(text);
        CHECK(text.find("[error] slot 1 pid -1: BUG: event 'exit' in state exited (ignored)") != std::string::npos);
        CHECK(text.find("[error] slot 1 pid -1: BUG: event 'timer' in state exited (ignored)") != std::string::npos);
    }
    CHECK(r.slot(1).state == SlotState::exited);
    CHECK(r.spawner.spawned.size() == 1);
    CHECK_FALSE(r.fleet.exited(12345, 0));  // not a worker of ours
}

TEST_CASE("status shows every wanted slot with its state, task and history", "[supervisor][fleet][control]") {
    Rig r;
    r.fleet.set_target(2);
    r.all_ready();
    r.say(1, Report::busy, 5);
    r.clock.now += 1500;
    Identity id;
    id.pid = 99;
    id.phase = Phase::running;
    auto j = status_json(id, r.fleet, r.clock.now);
    CHECK(j["pid"] == 99);
    CHECK(j["target"] == 2);
    CHECK(j["alive"] == 2);
    REQUIRE(j["workers"].size() == 2);
    const auto& w = j["workers"][0];
    CHECK(w["slot"] == 1);
    CHECK(w["state"] == "busy");
    CHECK(w["task"] == 5);
    CHECK(w["task_ms"] == 1500);
    CHECK(w["uptime_ms"] == 1500);
    CHECK(w["restarts"] == 0);
    CHECK(w["last_exit"].is_null());
    CHECK(j["workers"][1]["task"].is_null());
}

// The event loop asks all_ready(), done() and wake_at() after every event and finds a reaped pid
// with find_pid(): kept without walking the slot table (a thousand workers say "alive" two
// thousand times a second). Checked here against the walks they replace, after every step of
// random lives: reports of every kind, deaths, cancels, scaling, restarts, time passing, a stop.
TEST_CASE("the counts and the wake-up time kept per event agree with a walk of every slot",
          "[supervisor][fleet][scale]") {
    std::mt19937 rng(GENERATE(1u, 2u, 3u, 4u, 5u));
    Policy p = test_policy();
    p.task_deadline_ms = 4000;
    Rig r(p);
    auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
    auto check = [&](int step) {
        INFO("step " << step);
        int ready = 0;
        for (const auto& s : r.fleet.slots()) {
            ready += s.wanted && (s.state == SlotState::ready || s.state == SlotState::busy);
            if (s.has_process()) REQUIRE(r.fleet.find_pid(s.pid) == &s);
        }
        REQUIRE(r.fleet.ready() == ready);
        REQUIRE_FALSE(r.fleet.done());
        REQUIRE(r.fleet.all_ready() == (ready == r.fleet.target()));
        const int64_t exact = r.fleet.next_deadline();
        // Never later than the first deadline: a deadline missed would be a watchdog that never bites.
        if (exact != 0) {
            REQUIRE(r.fleet.wake_at() != 0);
            REQUIRE(r.fleet.wake_at() <= exact);
        }
    };
    r.fleet.set_target(6);
    int64_t task = 1;
    for (int step = 0; step < 400; ++step) {
        const int n = static_cast<int>(r.fleet.slots().size());
        Slot& s = r.slot(1 + pick(n));
        switch (pick(10)) {
        case 0: if (s.has_process()) r.say(s.number, Report::ready); break;
        case 1: if (s.has_process()) r.say(s.number, Report::busy, task++); break;
        case 2: if (s.has_process()) r.say(s.number, Report::alive); break;
        case 3: if (s.has_process()) r.dies(s.number, pick(2) ? kKilled : kExit1); break;
        case 4: if (s.task) r.fleet.cancel(s.task); break;
        case 5: r.fleet.set_target(1 + pick(8)); break;
        case 6: r.fleet.restart(s.number); break;
        case 7: if (s.has_process()) r.say(s.number, Report::starting); break;
        default: r.advance(50 + pick(1500)); break;
        }
        check(step);
    }
    r.fleet.stop();
    for (int round = 0; round < 20; ++round) {
        bool all_exited = true;
        for (const auto& s : r.fleet.slots()) all_exited = all_exited && s.state == SlotState::exited;
        REQUIRE(r.fleet.done() == all_exited);
        if (all_exited) break;
        for (const auto& s : r.fleet.slots())
            if (s.has_process()) r.dies(s.number, kExit0);
        r.advance(100);
    }
    CHECK(r.fleet.done());
    CHECK(r.fleet.alive() == 0);
}

TEST_CASE("done() is false until stop and every worker reaped, true at once with no slot", "[supervisor][fleet]") {
    Rig r;
    CHECK_FALSE(r.fleet.done());
    r.fleet.stop();
    CHECK(r.fleet.done());
    Rig q;
    q.fleet.set_target(2);
    q.all_ready();
    q.fleet.stop();
    CHECK_FALSE(q.fleet.done());
    q.dies(1, kExit0);
    CHECK_FALSE(q.fleet.done());
    q.dies(2, kExit0);
    CHECK(q.fleet.done());
}
