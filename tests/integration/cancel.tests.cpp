// Stopping a query: queued, running (cooperative), stuck (the supervisor kills its worker),
// finished, racing with completion, unknown.
#include <catch2/catch.hpp>

#include <csignal>

#include "support/harness.h"

using namespace sqlq;
using namespace sqlq::test;

namespace {
constexpr int kReady = 20000;

// After every scenario: nothing ran again after its cancel, and the queue is empty.
void check_clean(const Env& env, const std::vector<int64_t>& ids) {
    for (int64_t id : ids) {
        auto t = show(env, id);
        INFO("task " << id << ": " << t.dump());
        CHECK(t["outcomes"] == 1);
        CHECK(t["executions"].get<int>() <= 1);
    }
    CHECK(eventually([&] { return queue_depth(env) == 0; }, 10000));
}
}  // namespace

TEST_CASE("cancel a queued task: cancelled at once, its message skipped", "[cancel][queued]") {
    Env env;
    int64_t id = submit(env, "SELECT 1");
    auto r = cli(env, {"cancel", std::to_string(id), "--user", "dave"});
    CHECK(r.code == 0);
    CHECK(r.out == "task " + std::to_string(id) + " cancelled (it was queued)\n");
    auto w = start_worker(env);
    int64_t marker = submit(env, "SELECT 2");
    REQUIRE(cli(env, {"wait", std::to_string(marker)}).code == 0);
    auto t = show(env, id);
    CHECK(t["status"] == "cancelled");
    CHECK(t["cancelled_by"] == "dave");
    CHECK(t["executions"] == 0);
    // Its message is skipped, or (a message is a unit of work) its delivery runs the marker and
    // the marker's own message is the one skipped.
    CHECK(eventually([&] { return w->log_shows("task " + std::to_string(id) + ": already cancelled, skipped", 0) || w->log_shows("task " + std::to_string(marker) + ": already succeeded, skipped", 0); }, 5000));
    check_clean(env, {id, marker});
}

TEST_CASE("cancel a running task: the query stops, the worker lives on", "[cancel][running]") {
    Env env;
    auto w = start_worker(env);
    REQUIRE(w->wait_report(Report::ready, kReady));
    int64_t id = submit(env, slow_query(20000));
    REQUIRE(w->wait_report(Report::busy, kReady));
    auto r = cli(env, {"cancel", std::to_string(id), "--json"});
    REQUIRE(r.code == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["cancelled"] == true);
    CHECK(j["was"] == "running");
    CHECK(j["stop_ms"].get<int64_t>() < 5000);  // a sanity bound; bench/ measures the real figure
    auto t = show(env, id);
    CHECK(t["status"] == "cancelled");
    CHECK(t["stop_ms"].is_number());
    CHECK(cli(env, {"wait", std::to_string(id)}).code == 11);
    CHECK(w->running());
    int64_t next = submit(env, "SELECT 1");  // the same worker goes on serving
    CHECK(cli(env, {"wait", std::to_string(next)}).code == 0);
    CHECK(w->running());
    auto human = cli(env, {"show", std::to_string(id)});
    CHECK(human.out.find("stop took:") != std::string::npos);
    check_clean(env, {id, next});
}

TEST_CASE("cancel a worker stuck in native code: killed, replaced, its redelivery skipped",
          "[cancel][stuck][supervisor]") {
    Setup s;
    s.workers = 1;
    s.sections["supervisor"] = "cancel_grace_ms = 300\n";
    Env env(s);
    Fleet fleet(env);
    int64_t id = submit(env, "SELECT sqlq_test_hang(60000)");
    pid_t stuck = 0;
    REQUIRE(eventually([&] { return (stuck = fleet.worker_of(id)) != 0; }, 20000));

    auto r = cli(env, {"cancel", std::to_string(id)});
    CHECK(r.code == 0);
    CHECK(r.out.find("cancelled") != std::string::npos);
    CHECK(kill(stuck, 0) != 0);  // that worker is gone
    // The slot is refilled and serves again.
    int64_t next = submit(env, "SELECT 1");
    CHECK(cli(env, {"wait", std::to_string(next), "--timeout", "30"}).code == 0);
    auto t = show(env, id);
    CHECK(t["status"] == "cancelled");
    CHECK(t["executions"] == 1);
    CHECK(fleet.status()["alive"] == 1);
    check_clean(env, {id, next});
}

TEST_CASE("cancel a finished task: refused with exit 5, the result kept", "[cancel][finished]") {
    Env env;
    auto w = start_worker(env);
    int64_t id = submit(env, "SELECT 7");
    REQUIRE(cli(env, {"wait", std::to_string(id)}).code == 0);
    auto r = cli(env, {"cancel", std::to_string(id)});
    CHECK(r.code == 5);
    CHECK(r.err == "sqlq: task " + std::to_string(id) + " already succeeded; nothing to cancel (its result is kept)\n");
    CHECK(cli(env, {"result", std::to_string(id), "--format", "csv"}).out == "7\r\n7\r\n");
    check_clean(env, {id});
}

TEST_CASE("cancel an unknown task: exit 4", "[cancel][unknown]") {
    Env env;
    auto r = cli(env, {"cancel", "424242"});
    CHECK(r.code == 4);
    CHECK(r.err == "sqlq: no task 424242\n");
}

TEST_CASE("cancel racing with completion: exactly one terminal status, and the loser is told",
          "[cancel][race]") {
    Env env;
    auto w1 = start_worker(env, 1);
    auto w2 = start_worker(env, 2);
    REQUIRE(w1->wait_report(Report::ready, kReady));
    REQUIRE(w2->wait_report(Report::ready, kReady));
    std::vector<int64_t> ids;
    int cancelled = 0, finished_first = 0;
    for (int round = 0; round < 40; ++round) {
        // Queries of 0 to 60 ms: the cancel lands before, during or after the run.
        int64_t id = submit(env, round % 4 == 0 ? std::string("SELECT 1") : slow_query(20 * (round % 4)));
        ids.push_back(id);
        auto r = cli(env, {"cancel", std::to_string(id), "--json"});
        auto j = nlohmann::json::parse(r.out);
        auto t = show(env, id);
        INFO("round " << round << ": " << r.out << " " << t.dump());
        if (r.code == 0) {
            CHECK(j["cancelled"] == true);
            CHECK(t["status"] == "cancelled");
            ++cancelled;
        } else {
            REQUIRE(r.code == 5);
            CHECK(j["cancelled"] == false);
            CHECK(t["status"] == "succeeded");
            CHECK(t["result_ref"].is_string());
            ++finished_first;
        }
        CHECK(t["outcomes"] == 1);
    }
    check_clean(env, ids);
    WARN("cancel won " << cancelled << " times, completion won " << finished_first << " times");
}
