// Fairness between users on the real broker and fleet (issue 18): a second user's task starts
// before the first user's backlog drains, max_running_per_user holds a user's further tasks back
// (visible as such), and max_queued_per_user refuses a submit whole, storing nothing. And the
// fleet-wide view every supervisor writes to the store (issue 15): sqlq workers.
#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>

#include "support/harness.h"

using namespace sqlq;
using namespace sqlq::test;
using nlohmann::json;

namespace {

std::vector<int64_t> submit_as(const Env& env, const std::string& user, const std::vector<std::string>& sqls) {
    std::string input;
    for (const auto& s : sqls) input += s + "\n";
    auto r = cli(env, {"submit", "--user", user, "--batch", "-"}, input);
    if (r.code != 0) throw std::runtime_error("submit failed: " + r.err);
    std::vector<int64_t> ids;
    std::istringstream in(r.out);
    for (int64_t id; in >> id;) ids.push_back(id);
    return ids;
}

bool ended(const json& t) {
    const auto s = t["status"].get<std::string>();
    return s == "succeeded" || s == "failed" || s == "cancelled";
}

int wait_ok(const Env& env, int64_t id) { return cli(env, {"wait", std::to_string(id), "--timeout", "120"}).code; }

}  // namespace

TEST_CASE("a second user's task starts before the first user's backlog drains", "[fair][integration]") {
    Setup s;
    s.workers = 2;
    s.queue_type = GENERATE(as<std::string>{}, "classic", "quorum");
    Env env(s);
    Fleet fleet(env);
    const std::string slow = slow_query(150);
    const auto alice = submit_as(env, "alice", std::vector<std::string>(12, slow));
    const auto bob = submit_as(env, "bob", {"SELECT 'bob'"});
    REQUIRE(wait_ok(env, bob.front()) == 0);
    const json b = show(env, bob.front());
    // First in, first out, bob's task would start after all 12 of alice's. Fairly, it starts at
    // the first free worker: of alice's, only those running or done by then started before it.
    int alice_after = 0;
    for (int64_t id : alice) {
        const json t = show(env, id);
        if (t["started_at"].is_null() || t["started_at"].get<int64_t>() > b["started_at"].get<int64_t>()) ++alice_after;
    }
    INFO("alice's tasks started after bob's: " << alice_after << " of " << alice.size());
    CHECK(alice_after >= 6);
    for (int64_t id : alice) CHECK(wait_ok(env, id) == 0);
    const json a = audit(env);
    INFO(a.dump());
    CHECK(a["lost"] == 0);
    CHECK(a["duplicate_outcomes"] == 0);
    CHECK(queue_depth(env) == 0);
}

TEST_CASE("max_running_per_user holds a user's further tasks back, visibly, and others run meanwhile",
          "[fair][limit][integration]") {
    Setup s;
    s.workers = 3;
    s.sections["query"] = "max_running_per_user = 1\n";
    Env env(s);
    Fleet fleet(env);
    // Her first task is long enough to be seen running by a poll of `sqlq show` on a loaded
    // machine (slow_query() is calibrated once per process, possibly while the machine was busy,
    // so its 400 ms may be much less once it is not).
    const auto alice = submit_as(env, "alice", {slow_query(3000), slow_query(400), slow_query(400)});
    // The oldest of alice's runs; the others wait for it, and say so.
    REQUIRE(eventually([&] { return show(env, alice[0])["status"] == "running"; }, 20000));
    const json second = show(env, alice[1]);
    INFO(second.dump());
    CHECK(second["status"] == "queued");
    CHECK(second["waiting_on"] == "user limit");
    const auto listed = cli(env, {"list", "--user", "alice"});
    CHECK(listed.out.find("queued: user limit") != std::string::npos);
    // bob is not held back by alice's limit: his task runs on a free worker before hers end.
    const auto bob = submit_as(env, "bob", {"SELECT 'bob'"});
    REQUIRE(wait_ok(env, bob.front()) == 0);
    CHECK_FALSE(ended(show(env, alice[2])));
    // alice's tasks ran one at a time.
    std::vector<std::pair<int64_t, int64_t>> runs;
    for (int64_t id : alice) {
        REQUIRE(wait_ok(env, id) == 0);
        const json t = show(env, id);
        runs.emplace_back(t["started_at"].get<int64_t>(), t["finished_at"].get<int64_t>());
    }
    std::sort(runs.begin(), runs.end());
    for (size_t i = 1; i < runs.size(); ++i) CHECK(runs[i].first >= runs[i - 1].second);
    CHECK(show(env, alice[2])["waiting_on"].is_null());
    const json a = audit(env);
    CHECK(a["lost"] == 0);
}

TEST_CASE("max_queued_per_user refuses a submit beyond it with exit 7, storing and publishing nothing",
          "[fair][limit][integration][cli]") {
    Setup s;
    s.workers = 0;  // nothing runs: the queue only fills
    s.sections["query"] = "max_queued_per_user = 2\n";
    Env env(s);
    REQUIRE(submit_as(env, "alice", {"SELECT 1"}).size() == 1);
    auto over = cli(env, {"submit", "--user", "alice", "--batch", "-"}, "SELECT 2\nSELECT 3\n");
    CHECK(over.code == 7);
    CHECK(over.err.find("max_queued_per_user = 2") != std::string::npos);
    CHECK(over.err.find("nothing was stored") != std::string::npos);
    // Nothing half-stored: the batch is refused whole.
    CHECK(json::parse(cli(env, {"list", "--user", "alice", "--json"}).out).size() == 1);
    REQUIRE(submit_as(env, "alice", {"SELECT 2"}).size() == 1);  // her second: at the limit
    auto full = cli(env, {"--json", "submit", "--user", "alice", "SELECT 3"});
    CHECK(full.code == 7);
    CHECK(json::parse(full.err)["exit_code"] == 7);
    CHECK(cli(env, {"run", "--user", "alice", "SELECT 3"}).code == 7);
    CHECK(json::parse(cli(env, {"list", "--user", "alice", "--json"}).out).size() == 2);
    // bob is not limited by alice's queue.
    CHECK(submit_as(env, "bob", {"SELECT 1", "SELECT 2"}).size() == 2);
    CHECK(queue_depth(env) == 2 + 2);
}

// --- the fleet-wide view (issue 15, part 3): each supervisor records its fleet in the store ---

namespace {
// This env's fleet in `sqlq workers --json` (null when absent).
json fleet_record(const Env& env) {
    auto r = cli(env, {"workers", "--json"});
    if (r.code != 0) throw std::runtime_error("sqlq workers: " + r.err);
    for (const json& f : json::parse(r.out))
        if (f["run_dir"] == env.cfg().supervisor.run_dir) return f;
    return json();
}
}  // namespace

TEST_CASE("sqlq workers shows each fleet's workers from the store, flags a stopped heartbeat, forgets a clean stop",
          "[fleetview][integration]") {
    Setup s;
    s.workers = 2;
    s.sections["supervisor"] = "sweep_interval_ms = 200\n";
    Env env(s);
    SECTION("a running fleet, then a clean stop") {
        Fleet fleet(env);
        const int64_t id = submit(env, slow_query(3000));
        REQUIRE(eventually([&] {
            const json f = fleet_record(env);
            if (f.is_null()) return false;
            for (const json& w : f["workers"])
                if (w["state"] == "busy" && w["task"] == id) return true;
            return false;
        }, 20000));
        const json f = fleet_record(env);
        INFO(f.dump());
        CHECK(f["supervisor_pid"] == fleet.pid());
        CHECK(f["workers"].size() == 2);
        CHECK(f["stale"] == false);
        CHECK(f["heartbeat_age_ms"].get<int64_t>() < 60000);
        const auto table = cli(env, {"workers"});
        CHECK(table.code == 0);
        CHECK(table.out.find("busy") != std::string::npos);
        CHECK(table.out.find(std::to_string(id)) != std::string::npos);
        REQUIRE(cli(env, {"cancel", std::to_string(id)}).code == 0);
        REQUIRE(fleet.stop().code == 0);
        CHECK(fleet_record(env).is_null());
    }
    SECTION("a supervisor killed: its record stays, its heartbeat flagged as stopped") {
        Fleet fleet(env);
        REQUIRE(eventually([&] { return !fleet_record(env).is_null(); }, 20000));
        const pid_t sup = fleet.pid();
        REQUIRE(::kill(sup, SIGKILL) == 0);
        REQUIRE(eventually([&] { return fleet_record(env)["stale"] == true; }, 20000));
        const auto table = cli(env, {"workers"});
        CHECK(table.out.find("NO HEARTBEAT") != std::string::npos);
    }
}
