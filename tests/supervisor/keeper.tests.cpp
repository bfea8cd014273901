#include <catch2/catch.hpp>

#include <csignal>
#include <spdlog/spdlog.h>
#include <vector>

#include "supervisor/keeper.h"
#include "util/error.h"

using namespace sqlq;
using namespace sqlq::supervisor;

namespace {

struct FakeClock : Clock {
    int64_t now = 1000000;
    int64_t now_ms() override { return now; }
};

// Records what the keeper asked for; pids count up from 500.
struct FakeSpawner : Spawner {
    pid_t next_pid = 500;
    int spawns = 0;
    std::vector<std::pair<pid_t, int>> signals;  // (pid, signal)
    bool fail = false;

    Spawned spawn(int, uint64_t) override {
        if (fail) throw Error("fork: Resource temporarily unavailable");
        ++spawns;
        return {next_pid++, 4242};
    }
    void signal(pid_t pid, int sig) override { signals.emplace_back(pid, sig); }
    int64_t rss_mb(pid_t) override { return 10; }
};

constexpr int kExit1 = 1 << 8;    // wait status of exit(1)
constexpr int kKilled = SIGKILL;  // killed by SIGKILL

Keeper::Policy policy() {
    Keeper::Policy p;
    p.stop_timeout_ms = 5000;
    p.failed_start_ms = 2000;
    p.backoff_initial_ms = 200;
    p.backoff_max_ms = 1000;
    return p;
}

struct Rig {
    FakeClock clock;
    FakeSpawner spawner;
    Keeper keeper{"sqlq-web", policy(), spawner, clock};
    Rig() { spdlog::set_level(spdlog::level::off); }
    ~Rig() { spdlog::set_level(spdlog::level::info); }
};

}  // namespace

TEST_CASE("the keeper starts its process when wanted and not before", "[keeper]") {
    Rig r;
    CHECK(r.spawner.spawns == 0);
    CHECK(r.keeper.done());
    r.keeper.set_wanted(true);
    CHECK(r.spawner.spawns == 1);
    CHECK(r.keeper.state() == Keeper::State::running);
    CHECK(r.keeper.pid() == 500);
    r.keeper.set_wanted(true);  // already running: nothing more
    CHECK(r.spawner.spawns == 1);
    CHECK(r.keeper.restarts() == 0);
}

TEST_CASE("a process that dies after a healthy run is started again at once", "[keeper]") {
    Rig r;
    r.keeper.set_wanted(true);
    r.clock.now += 60000;
    CHECK_FALSE(r.keeper.exited(999, kKilled));  // not ours
    REQUIRE(r.keeper.exited(500, kKilled));
    CHECK(r.spawner.spawns == 2);
    CHECK(r.keeper.state() == Keeper::State::running);
    CHECK(r.keeper.pid() == 501);
    CHECK(r.keeper.restarts() == 1);
    auto j = r.keeper.status_json(r.clock.now);
    CHECK(j["last_exit"] == "signal 9 (KILL)");
    CHECK(j["restarts"] == 1);
    CHECK(j["pid"] == 501);
}

TEST_CASE("failed starts wait a doubling backoff, and a healthy run resets it", "[keeper]") {
    Rig r;
    r.keeper.set_wanted(true);
    std::vector<int64_t> waits;
    for (int i = 0; i < 5; ++i) {
        r.clock.now += 100;  // dies well within failed_start_ms
        REQUIRE(r.keeper.exited(r.keeper.pid(), kExit1));
        REQUIRE(r.keeper.state() == Keeper::State::backoff);
        waits.push_back(r.keeper.next_deadline() - r.clock.now);
        r.keeper.tick();  // too early: nothing
        CHECK(r.keeper.state() == Keeper::State::backoff);
        r.clock.now = r.keeper.next_deadline();
        r.keeper.tick();
        REQUIRE(r.keeper.state() == Keeper::State::running);
    }
    CHECK(waits == std::vector<int64_t>{200, 400, 800, 1000, 1000});
    CHECK(r.keeper.status_json(r.clock.now)["failed_starts"] == 5);

    r.clock.now += 10000;  // a healthy run, then a death: at once, and the count starts over
    REQUIRE(r.keeper.exited(r.keeper.pid(), kExit1));
    CHECK(r.keeper.state() == Keeper::State::running);
    r.clock.now += 100;
    REQUIRE(r.keeper.exited(r.keeper.pid(), kExit1));
    CHECK(r.keeper.next_deadline() - r.clock.now == 200);
}

TEST_CASE("a process that cannot be spawned at all is retried after a backoff", "[keeper]") {
    Rig r;
    r.spawner.fail = true;
    r.keeper.set_wanted(true);
    CHECK(r.keeper.state() == Keeper::State::backoff);
    auto j = r.keeper.status_json(r.clock.now);
    CHECK(j["pid"].is_null());
    CHECK(j["last_error"].get<std::string>().find("fork") != std::string::npos);
    r.spawner.fail = false;
    r.clock.now = r.keeper.next_deadline();
    r.keeper.tick();
    CHECK(r.keeper.state() == Keeper::State::running);
    CHECK(r.keeper.restarts() == 0);  // the first process that ever ran
}

TEST_CASE("stop sends SIGTERM, then SIGKILL at stop_timeout_ms, and is done once reaped", "[keeper]") {
    Rig r;
    r.keeper.set_wanted(true);
    r.keeper.stop();
    CHECK(r.keeper.state() == Keeper::State::stopping);
    REQUIRE(r.spawner.signals == std::vector<std::pair<pid_t, int>>{{500, SIGTERM}});
    CHECK_FALSE(r.keeper.done());
    r.clock.now += 4999;
    r.keeper.tick();
    CHECK(r.spawner.signals.size() == 1);
    r.clock.now += 1;
    r.keeper.tick();
    CHECK(r.spawner.signals.back() == std::make_pair(pid_t(500), SIGKILL));
    CHECK(r.keeper.next_deadline() == 0);
    REQUIRE(r.keeper.exited(500, kKilled));
    CHECK(r.keeper.done());
    CHECK(r.spawner.spawns == 1);  // not started again
}

TEST_CASE("unwanted during a backoff nothing is started, and wanted again while stopping it starts once reaped", "[keeper]") {
    Rig r;
    r.keeper.set_wanted(true);
    r.clock.now += 10;
    REQUIRE(r.keeper.exited(500, kExit1));
    REQUIRE(r.keeper.state() == Keeper::State::backoff);
    r.keeper.set_wanted(false);
    CHECK(r.keeper.done());
    CHECK(r.keeper.next_deadline() == 0);
    CHECK(r.spawner.spawns == 1);

    r.keeper.set_wanted(true);
    REQUIRE(r.keeper.state() == Keeper::State::running);
    const pid_t first = r.keeper.pid();
    r.keeper.set_wanted(false);
    r.keeper.set_wanted(true);
    CHECK(r.keeper.state() == Keeper::State::stopping);
    REQUIRE(r.keeper.exited(first, kExit1));
    CHECK(r.keeper.state() == Keeper::State::running);
    CHECK(r.keeper.pid() != first);
}
