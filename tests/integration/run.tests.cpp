// `sqlq run` (submit, wait, print) and how a waiting client hears of an outcome: through the
// store's notification, not a poll; with the fallback look when a notification is lost; across
// a supervisor restart. (A broker restart while a client waits: tests/fault.)
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>

#include "support/harness.h"

using namespace sqlq;
using namespace sqlq::test;

namespace {
constexpr int kReady = 20000;

std::vector<std::string> sqlq_args(const Env& env, std::vector<std::string> args) {
    args.insert(args.begin(), {bin("sqlq"), "-c", env.config()});
    return args;
}

// An env whose waiters look at the store only once a minute unless told: a wait that ends
// within seconds was told by the notification.
Setup notify_only(Setup s = {}) {
    s.sections["store"] += "wait_poll_ms = 60000\n";
    return s;
}

// The id of the newest task of `env`, once there is one.
int64_t newest_task(const Env& env) {
    int64_t id = 0;
    REQUIRE(eventually([&] {
        auto l = nlohmann::json::parse(cli(env, {"list", "--json", "--limit", "1"}).out);
        if (l.empty()) return false;
        id = l[0]["id"].get<int64_t>();
        return true;
    }, 10000));
    return id;
}
}  // namespace

TEST_CASE("sqlq run prints the result in the chosen format and exits 0", "[cli][run]") {
    Env env;
    auto w = start_worker(env);
    REQUIRE(w->wait_report(Report::ready, kReady));

    auto table = cli(env, {"run", "SELECT 'a,b' AS x, NULL AS z"});
    INFO(table.err);
    CHECK(table.code == 0);
    CHECK(table.out.find("a,b") != std::string::npos);
    CHECK(table.out.find("NULL") != std::string::npos);
    CHECK(table.out.find("(1 row)") != std::string::npos);
    CHECK(table.err.empty());

    auto csv = cli(env, {"run", "--format", "csv", "SELECT 'a,b' AS x, 2 AS y"});
    CHECK(csv.code == 0);
    CHECK(csv.out == "x,y\r\n\"a,b\",2\r\n");

    auto json = cli(env, {"run", "--json", "SELECT 7 AS n"});
    CHECK(json.code == 0);
    auto j = nlohmann::json::parse(json.out);
    CHECK(j["columns"] == nlohmann::json::array({"n"}));
    CHECK(j["rows"] == nlohmann::json::parse("[[7]]"));
    // The task is an ordinary one: show knows it, as succeeded.
    CHECK(show(env, j["id"].get<int64_t>())["status"] == "succeeded");

    SECTION("the SQL from -f FILE or from stdin") {
        std::ofstream(env.dir() + "/q.sql") << "SELECT 41 + 1 AS answer\n";
        auto f = cli(env, {"run", "--format", "csv", "-f", env.dir() + "/q.sql"});
        CHECK(f.code == 0);
        CHECK(f.out == "answer\r\n42\r\n");
        auto in = cli(env, {"run", "--format", "csv", "--user", "erin"}, "SELECT 'stdin' AS s");
        CHECK(in.code == 0);
        CHECK(in.out == "s\r\nstdin\r\n");
        CHECK(show(env, newest_task(env))["submitter"] == "erin");
    }
}

TEST_CASE("sqlq run of a failing query: exit 10 and the task's error", "[cli][run]") {
    Env env;
    auto w = start_worker(env);
    REQUIRE(w->wait_report(Report::ready, kReady));
    auto r = cli(env, {"run", "SELECT * FROM nowhere"});
    CHECK(r.code == 10);
    CHECK(r.out.empty());
    CHECK(r.err.find("failed: no such table: nowhere") != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    auto j = cli(env, {"run", "--json", "SELECT * FROM nowhere"});
    CHECK(j.code == 10);
    auto t = nlohmann::json::parse(j.out);  // the task, as wait --json gives it
    CHECK(t["status"] == "failed");
    CHECK(t["error"].get<std::string>().find("no such table") != std::string::npos);
}

TEST_CASE("sqlq run refuses bad input with exit 2 and stores nothing", "[cli][run]") {
    Env env;
    CHECK(cli(env, {"run", ""}).code == 2);
    CHECK(cli(env, {"run"}, "  \n").code == 2);
    std::ofstream(env.dir() + "/q.sql") << "SELECT 1\n";
    auto both = cli(env, {"run", "SELECT 1", "-f", env.dir() + "/q.sql"});
    CHECK(both.code == 2);
    CHECK(both.err.find("not both") != std::string::npos);
    CHECK(cli(env, {"run", "-f", env.dir() + "/missing.sql"}).code == 2);
    CHECK(cli(env, {"run", "--format", "xml", "SELECT 1"}).code == 2);
    CHECK(nlohmann::json::parse(cli(env, {"list", "--json"}).out).empty());
}

TEST_CASE("sqlq run --timeout: exit 12, and the task is cancelled, not left to run unseen", "[cli][run]") {
    Env env;  // no worker: the task stays queued
    auto r = cli(env, {"run", "--timeout", "0.3", "SELECT 1"});
    CHECK(r.code == 12);
    CHECK(r.err.find("after 0.3 s") != std::string::npos);
    CHECK(r.err.find("cancelled (it was queued)") != std::string::npos);
    CHECK(show(env, newest_task(env))["status"] == "cancelled");
}

TEST_CASE("Ctrl-C while sqlq run waits cancels the task and says so, exit 11", "[cli][run][cancel]") {
    SECTION("a running query is stopped") {
        Env env;
        auto w = start_worker(env);
        REQUIRE(w->wait_report(Report::ready, kReady));
        Process run(sqlq_args(env, {"run", "--user", "frank", slow_query(30000)}));
        REQUIRE(w->wait_report(Report::busy, kReady));
        run.signal(SIGINT);
        auto code = run.wait(20000);
        INFO(run.log());
        REQUIRE(code);
        CHECK(*code == 11);
        const int64_t id = newest_task(env);
        CHECK(run.log().find("interrupted: task " + std::to_string(id) + " cancelled; the query stopped in") !=
              std::string::npos);
        auto t = show(env, id);
        CHECK(t["status"] == "cancelled");
        CHECK(t["cancelled_by"] == "frank");
        CHECK(w->running());  // the worker lives on
    }
    SECTION("a queued task is cancelled at once") {
        Env env;  // no worker
        Process run(sqlq_args(env, {"run", "SELECT 1"}));
        const int64_t id = newest_task(env);
        // Published (the submit is over): the interrupt now finds the wait.
        REQUIRE(eventually([&] { return show(env, id)["published"] == true; }, 10000));
        run.signal(SIGINT);
        auto code = run.wait(20000);
        INFO(run.log());
        REQUIRE(code);
        CHECK(*code == 11);
        CHECK(run.log().find("interrupted: task " + std::to_string(id) + " cancelled (it was queued)") !=
              std::string::npos);
        CHECK(show(env, id)["status"] == "cancelled");
    }
}

TEST_CASE("a waiting client hears of the outcome as it is committed, not at its next poll",
          "[notify][wait]") {
    Env env(notify_only());
    auto w = start_worker(env);
    REQUIRE(w->wait_report(Report::ready, kReady));
    const int64_t id = submit(env, slow_query(1500));
    REQUIRE(w->wait_report(Report::busy, kReady));
    // The waiter's only look without a notification would come after a minute.
    Process waiter(sqlq_args(env, {"wait", std::to_string(id)}));
    auto code = waiter.wait(30000);
    INFO(waiter.log());
    REQUIRE(code);
    CHECK(*code == 0);
    SECTION("sqlq run hears it the same way") {
        auto r = run(sqlq_args(env, {"run", "--format", "csv", slow_query(500)}), "", 30000);
        CHECK(r.code == 0);
    }
    SECTION("and so does cancel, waiting for a running query to stop") {
        const int64_t slow = submit(env, slow_query(30000));
        REQUIRE(w->wait_report(Report::busy, kReady));
        auto c = run(sqlq_args(env, {"cancel", std::to_string(slow)}), "", 30000);
        CHECK(c.code == 0);
        CHECK(show(env, slow)["status"] == "cancelled");
    }
}

TEST_CASE("a waiter that starts after the task finished returns at once", "[notify][wait]") {
    Env env(notify_only());
    auto w = start_worker(env);
    REQUIRE(w->wait_report(Report::ready, kReady));
    const int64_t id = submit(env, "SELECT 1");
    REQUIRE(eventually([&] { return show(env, id)["status"] == "succeeded"; }, 20000));
    auto r = run(sqlq_args(env, {"wait", std::to_string(id)}), "", 30000);
    CHECK(r.code == 0);
}

TEST_CASE("with every notification lost, a waiter still returns by its fallback look", "[notify][wait]") {
    Setup s;
    s.sections["store"] += "notify = \"off\"\nwait_poll_ms = 50\n";
    Env env(s);
    const int64_t id = submit(env, slow_query(300));
    Process waiter(sqlq_args(env, {"wait", std::to_string(id)}));
    auto w = start_worker(env);  // the task runs while the client waits
    auto code = waiter.wait(30000);
    INFO(waiter.log());
    REQUIRE(code);
    CHECK(*code == 0);
}

TEST_CASE("a client waiting across a supervisor restart hears of the outcome", "[notify][wait][supervisor]") {
    Setup s = notify_only();
    s.workers = 1;
    Env env(s);
    auto first = std::make_unique<Fleet>(env);
    REQUIRE(first->stop().code == 0);
    const int64_t id = submit(env, "SELECT 1");  // queued: nobody consumes
    Process waiter(sqlq_args(env, {"wait", std::to_string(id)}));
    CHECK_FALSE(waiter.wait(300));  // still waiting
    Fleet second(env);  // started again while the client waits
    auto code = waiter.wait(30000);
    INFO(waiter.log());
    REQUIRE(code);
    CHECK(*code == 0);
    CHECK(show(env, id)["status"] == "succeeded");
}
