// The whole pipeline (submit → broker → worker → PostgreSQL → store) on the fixture's private
// PostgreSQL server: results, cancel and worker kills that leave nothing running on the server,
// a server that is down or restarts, and the password never shown.
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "support/harness.h"
#include "support/postgres.h"
#include "util/clock.h"

using namespace sqlq;
using namespace sqlq::test;
using nlohmann::json;

namespace {
constexpr int kReady = 20000;

Setup on_postgres(int workers = 2, const std::string& url = postgres_url()) {
    Setup s;
    s.workers = workers;
    s.database = url;
    return s;
}

std::string password_of(const std::string& url) {
    auto colon = url.find(':', url.find("://") + 3);
    return url.substr(colon + 1, url.rfind('@') - colon - 1);
}

int wait_code(const Env& env, int64_t id) { return cli(env, {"wait", std::to_string(id), "--timeout", "60"}).code; }

void audit_clean(const Env& env) {
    auto a = audit(env);
    INFO(a.dump());
    CHECK(a["lost"] == 0);
    CHECK(a["queue_left"] == 0);
    CHECK(a["exit_code"] == 0);
}

// The app name a worker's backend has on the server.
std::string app_of(pid_t worker) { return "sqlq-worker " + std::to_string(worker); }

// Submits `sql` (into `id`) and waits until a worker runs it and the server shows that worker's
// statement running: that worker's pid.
pid_t running_on_server(const Env& env, const Fleet& fleet, PgAdmin& admin, const std::string& sql, int64_t& id) {
    id = submit(env, sql);
    pid_t w = 0;
    REQUIRE(eventually([&] { return (w = fleet.worker_of(id)) != 0; }, kReady));
    REQUIRE(eventually([&] { return admin.active_backends(app_of(w)) == 1; }, kReady));
    return w;
}
}  // namespace

TEST_CASE("a fleet on a PostgreSQL target runs queries, and never shows the password", "[postgres][pipeline]") {
    Env env(on_postgres());
    Fleet fleet(env);
    auto ids = submit_batch(env, {"SELECT count(*) AS n FROM orders", "SELECT name FROM customers WHERE id = 7",
                                  "SELECT 1/0", "INSERT INTO customers VALUES (9999, 'x', 'DE')",
                                  R"(SELECT '{"a": 1}'::json AS j, ARRAY[1, 2] AS a, true AS b, 'x,"y"' AS t, NULL AS n)"});
    REQUIRE(wait_code(env, ids[0]) == 0);
    REQUIRE(wait_code(env, ids[1]) == 0);
    CHECK(wait_code(env, ids[2]) == 10);
    CHECK(wait_code(env, ids[3]) == 10);
    auto r = cli(env, {"result", std::to_string(ids[0]), "--format", "json"});
    REQUIRE(r.code == 0);
    CHECK(json::parse(r.out)["rows"] == json::parse("[[200000]]"));
    r = cli(env, {"result", std::to_string(ids[1]), "--format", "csv"});
    CHECK(r.out == "name\r\ncustomer 7\r\n");
    // CSV stays RFC 4180 with typed values: JSON as its text, quoted where it must be.
    REQUIRE(wait_code(env, ids[4]) == 0);
    r = cli(env, {"result", std::to_string(ids[4]), "--format", "csv"});
    CHECK(r.out == "j,a,b,t,n\r\n\"{\"\"a\"\":1}\",\"[1,2]\",true,\"x,\"\"y\"\"\",\r\n");
    CHECK_THAT(show(env, ids[2])["error"].get<std::string>(), Catch::Contains("division by zero (SQLSTATE 22012)"));
    CHECK_THAT(show(env, ids[3])["error"].get<std::string>(), Catch::Contains("only queries run here"));

    const std::string pw = password_of(postgres_url());
    REQUIRE(pw.size() >= 8);
    auto st = supervisor(env, {"status"});
    CHECK(st.out.find(pw) == std::string::npos);
    CHECK(cli(env, {"show", std::to_string(ids[0])}).out.find(pw) == std::string::npos);
    fleet.stop();
    CHECK(supervisor_log(env).find(pw) == std::string::npos);
    audit_clean(env);
}

TEST_CASE("sqlq cancel stops a running PostgreSQL query on the server before it returns", "[postgres][cancel]") {
    Env env(on_postgres(1));
    Fleet fleet(env);
    PgAdmin admin;
    std::vector<int64_t> stop_ms;
    for (int i = 0; i < 5; ++i) {
        const std::string marker = "cancel-" + std::to_string(i) + "-" + std::to_string(mono_ms());
        int64_t id = submit(env, "SELECT pg_sleep(60), '" + marker + "'");
        REQUIRE(eventually([&] { return admin.active_with(marker) == 1; }, kReady));
        const int64_t t0 = mono_ms();
        auto r = cli(env, {"cancel", std::to_string(id), "--json"});
        const int64_t took = mono_ms() - t0;
        REQUIRE(r.code == 0);
        CHECK(json::parse(r.out)["was"] == "running");
        // When `cancel` says it is cancelled, the server has stopped the statement.
        CHECK(admin.active_with(marker) == 0);
        CHECK(show(env, id)["status"] == "cancelled");
        CHECK(show(env, id)["executions"] == 1);
        stop_ms.push_back(took);
        CHECK(took < 5000);  // sanity; bench/ measures p50/p99
    }
    std::string line;
    for (auto ms : stop_ms) line += " " + std::to_string(ms);
    std::printf("postgres: sqlq cancel → cancelled and statement gone (ms):%s\n", line.c_str());
    // The worker lives on and serves.
    int64_t next = submit(env, "SELECT 1");
    CHECK(wait_code(env, next) == 0);
    audit_clean(env);
}

TEST_CASE("a worker killed mid-query leaves no statement running on the PostgreSQL server", "[postgres][kill]") {
    Setup s = on_postgres(1);
    s.sections["query"] = "max_attempts = 1\n";  // not run again: the server's view stays about this one run
    SECTION("SIGKILL") {
        Env env(s);
        Fleet fleet(env);
        PgAdmin admin;
        int64_t id = 0;
        const pid_t w = running_on_server(env, fleet, admin, "SELECT pg_sleep(60), 'killed-mid-query'", id);
        const int64_t t0 = mono_ms();
        REQUIRE(::kill(w, SIGKILL) == 0);
        // client_connection_check_interval (1 s) ends a statement whose client is gone.
        CHECK(eventually([&] { return admin.active_backends(app_of(w)) == 0; }, 10000));
        std::printf("postgres: worker SIGKILLed → its statement gone on the server in %lld ms\n",
                    (long long)(mono_ms() - t0));
        CHECK(wait_code(env, id) == 10);  // max_attempts = 1: failed, not run again
        CHECK(show(env, id)["executions"] == 1);
    }
    SECTION("the hard kill of a worker that does not honour a cancel") {
        s.sections["supervisor"] = "cancel_grace_ms = 300\n";
        Env env(s);
        Fleet fleet(env);
        PgAdmin admin;
        int64_t id = 0;
        const pid_t w = running_on_server(env, fleet, admin, "SELECT pg_sleep(60), 'stopped-worker'", id);
        REQUIRE(::kill(w, SIGSTOP) == 0);  // it cannot see the cancel: the supervisor kills it
        auto r = cli(env, {"cancel", std::to_string(id)});
        CHECK(r.code == 0);
        CHECK(::kill(w, 0) != 0);
        CHECK(eventually([&] { return admin.active_backends(app_of(w)) == 0; }, 10000));
        CHECK(show(env, id)["status"] == "cancelled");
    }
}

TEST_CASE("a PostgreSQL server that is down, comes up and restarts under load: tasks wait, nothing is lost",
          "[postgres][restart]") {
    // A server of this test's own: the fixture's is shared with the other tests.
    TempDir pgdir;
    const std::string port = run({source_dir() + "/scripts/free-port.sh"}).out.substr(0, 5);
    const std::string url = "postgresql://sqlq_reader:restart-pw-31@127.0.0.1:" + port + "/postgres";
    Env env(on_postgres(2, url));
    Fleet fleet(env);  // the workers start although the target does not answer

    int64_t first = submit(env, "SELECT 42 AS answer");
    // The worker holding it waits on the target, and says so; the task stays queued.
    auto waiting_on_target = [&] {
        const auto st = fleet.status();  // kept: a range-for over a temporary's member dangles
        for (const auto& w : st["workers"])
            if (w.value("waiting_on", "") == "target" && w.value("waiting_for", int64_t(0)) == first) return true;
        return false;
    };
    INFO("target " << url);
    REQUIRE(eventually(waiting_on_target, kReady));
    INFO(fleet.status().dump());
    CHECK(show(env, first)["status"] == "queued");
    CHECK(supervisor(env, {"status"}).out.find("waiting on the target for task " + std::to_string(first)) !=
          std::string::npos);

    auto pg = [&](std::vector<std::string> args) {
        args.insert(args.begin(), {source_dir() + "/scripts/postgres.sh"});
        auto r = run(args, "", 120000, {{"SQLQ_PG_FSYNC", "off"}});
        INFO(r.err);
        REQUIRE(r.code == 0);
        return r;
    };
    pg({"start", pgdir.path, port});
    run({source_dir() + "/scripts/postgres.sh", "psql", pgdir.path, "-d", "postgres", "-c",
         "CREATE ROLE sqlq_reader LOGIN PASSWORD 'restart-pw-31'"});
    CHECK(wait_code(env, first) == 0);
    CHECK(json::parse(cli(env, {"result", std::to_string(first), "--format", "json"}).out)["rows"] ==
          json::parse("[[42]]"));

    // Under load: the server restarts while tasks run.
    std::vector<std::string> sqls;
    for (int i = 0; i < 60; ++i) sqls.push_back("SELECT " + std::to_string(i) + ", pg_sleep(0.02)");
    auto ids = submit_batch(env, sqls);
    REQUIRE(eventually([&] { return show(env, ids[10])["status"] != "queued"; }, kReady));
    pg({"restart", pgdir.path});
    int succeeded = 0, failed = 0;
    for (int64_t id : ids) {
        int code = wait_code(env, id);
        CHECK((code == 0 || code == 10));
        if (code == 0) ++succeeded;
        if (code == 10) {
            ++failed;
            // A task that failed says why, in words about the target.
            CHECK_THAT(show(env, id)["error"].get<std::string>(),
                       Catch::Contains("postgresql://sqlq_reader:***@") || Catch::Contains("terminat"));
        }
    }
    std::printf("postgres: restart under load: %d succeeded, %d failed with the reason\n", succeeded, failed);
    CHECK(succeeded >= 40);  // only those running at the restart (2 workers) may fail, and a few racing it
    CHECK(fleet.status()["alive"] == 2);
    audit_clean(env);
    fleet.stop();
    pg({"stop", pgdir.path});
    CHECK(supervisor_log(env).find("restart-pw-31") == std::string::npos);
}
