// The command lines: clear one-line errors, documented exit codes, output formats.
#include <catch2/catch.hpp>

#include <fstream>

#include "support/harness.h"

using namespace sqlq;
using namespace sqlq::test;

namespace {
int count_lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }
}  // namespace

TEST_CASE("a broken config is one clear line and exit 2, for every binary", "[cli][config]") {
    TempDir d;
    std::string conf = d.path + "/bad.conf";
    std::ofstream(conf) << "[broker]\nqueue = \"q\"\n\n[query]\nmax_rows = \"many\"\n";
    for (const auto& b : {bin("sqlq-worker"), bin("sqlq")}) {
        std::vector<std::string> args = {b, "-c", conf};
        if (b == bin("sqlq")) args.push_back("list");
        auto r = run(args);
        INFO(b << ": " << r.err);
        CHECK(r.code == 2);
        CHECK(count_lines(r.err) == 1);
        CHECK(r.err.find(conf + ":5: [query] max_rows: must be an integer") != std::string::npos);
    }
}

TEST_CASE("an unreachable broker is one clear line and a non-zero exit, and the task is kept",
          "[cli][broker]") {
    Env env;
    std::string conf = env.dir() + "/unreachable.conf";
    {
        std::string text = read_file(env.config());
        auto at = text.find("127.0.0.1:");
        auto end = text.find('"', at);
        text.replace(at, end - at, "127.0.0.1:1");  // nobody listens on port 1
        text.replace(text.find("guest:guest"), 11, "guest:s3cret");
        std::ofstream(conf) << text;
    }
    auto r = run({bin("sqlq"), "-c", conf, "submit", "SELECT 1"});
    CHECK(r.code == 1);
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.find("stored but not yet published") != std::string::npos);
    CHECK(r.err.find("cannot connect") != std::string::npos);
    CHECK(r.err.find("s3cret") == std::string::npos);
    int64_t id = std::stoll(r.out);
    auto t = show(env, id);
    CHECK(t["status"] == "queued");
    CHECK(t["published"] == false);
}

TEST_CASE("a wrong broker password stops a worker with one clear line", "[cli][broker]") {
    Env env;
    std::string conf = env.dir() + "/badpw.conf";
    {
        std::string text = read_file(env.config());
        text.replace(text.find("guest:guest"), 11, "guest:wrong-s3cret");
        std::ofstream(conf) << text;
    }
    auto r = run({bin("sqlq-worker"), "-c", conf}, "", 30000);
    CHECK(r.code == 1);
    CHECK(r.err.find("login refused") != std::string::npos);
    CHECK(r.err.find("wrong-s3cret") == std::string::npos);
    CHECK(count_lines(r.err) == 1);
}

TEST_CASE("sqlq commands: ids, tables, csv, json and exit codes", "[cli]") {
    Env env;
    auto w = start_worker(env, 1);
    REQUIRE(w->wait_report(Report::ready, 20000));

    auto sub = cli(env, {"submit", "--user", "carol", "SELECT 'a,b' AS x, 'say \"hi\"' AS y, NULL AS z"});
    REQUIRE(sub.code == 0);
    REQUIRE(count_lines(sub.out) == 1);  // the id alone
    std::string id = sub.out.substr(0, sub.out.size() - 1);
    REQUIRE(cli(env, {"wait", id}).code == 0);

    auto csv = cli(env, {"result", id, "--format", "csv"});
    CHECK(csv.out == "x,y,z\r\n\"a,b\",\"say \"\"hi\"\"\",\r\n");
    auto json = nlohmann::json::parse(cli(env, {"result", id, "--format", "json"}).out);
    CHECK(json["columns"] == nlohmann::json::array({"x", "y", "z"}));
    auto table = cli(env, {"result", id});
    CHECK(table.out.find("(1 row)") != std::string::npos);

    auto s = show(env, std::stoll(id));
    for (auto key : {"id", "status", "attempts", "executions", "error", "rows"}) CHECK(s.contains(key));
    CHECK(s["submitter"] == "carol");
    CHECK(s["rows"] == 1);

    SECTION("batch submit: one id per line, in order") {
        auto b = cli(env, {"submit", "--batch", "-"}, "SELECT 1\n\nSELECT 2\n  \nSELECT 3\n");
        REQUIRE(b.code == 0);
        CHECK(count_lines(b.out) == 3);
        std::istringstream in(b.out);
        int64_t a, c, d;
        in >> a >> c >> d;
        CHECK(c == a + 1);
        CHECK(d == a + 2);
        CHECK(cli(env, {"wait", std::to_string(d)}).code == 0);
        auto l = nlohmann::json::parse(cli(env, {"list", "--status", "succeeded", "--json", "--limit", "2"}).out);
        CHECK(l.size() == 2);
        CHECK(l[0]["id"] == d);
    }
    SECTION("exit codes: failed, unknown, bad usage, cancel of a finished task") {
        int64_t bad = submit(env, "SELECT * FROM nowhere");
        CHECK(cli(env, {"wait", std::to_string(bad)}).code == 10);
        auto r = cli(env, {"result", std::to_string(bad)});
        CHECK(r.code == 10);
        CHECK(r.err.find("no such table: nowhere") != std::string::npos);
        CHECK(cli(env, {"show", "999999"}).code == 4);
        CHECK(cli(env, {"wait", "999999"}).code == 4);
        auto u = cli(env, {"list", "--status", "bogus"});
        CHECK(u.code == 2);
        CHECK(count_lines(u.err) == 1);
        CHECK(cli(env, {"frobnicate"}).code == 2);
        CHECK(cli(env, {"submit", ""}).code == 2);
        auto c = cli(env, {"cancel", id});
        CHECK(c.code == 5);
        CHECK(c.err.find("already succeeded") != std::string::npos);
        CHECK(cli(env, {"result", id}).code == 0);  // the result is kept
    }
}

TEST_CASE("wait --timeout gives up with exit 12 while a task is queued", "[cli][wait]") {
    Env env;  // no worker
    int64_t id = submit(env, "SELECT 1");
    auto r = cli(env, {"wait", std::to_string(id), "--timeout", "0.2"});
    CHECK(r.code == 12);
    CHECK(cli(env, {"cancel", std::to_string(id)}).code == 0);
    CHECK(cli(env, {"wait", std::to_string(id)}).code == 11);
}

TEST_CASE("a queue that exists with other arguments is a clear error naming both", "[cli][topology]") {
    Setup s;
    s.queue_type = "classic";
    Env env(s);
    submit(env, "SELECT 1");  // declares the queue as classic
    s.queue_type = "quorum";
    env.rewrite(s);
    auto r = run({bin("sqlq-worker"), "-c", env.config()}, "", 30000);
    CHECK(r.code == 1);
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.find("inequivalent arg 'x-queue-type'") != std::string::npos);
    CHECK(r.err.find("'quorum'") != std::string::npos);
    CHECK(r.err.find("'classic'") != std::string::npos);
}

TEST_CASE("a query longer than max_sql_bytes is refused by submit with exit 6, and nothing is stored",
          "[cli][size]") {
    Setup s;
    s.sections["query"] = "max_sql_bytes = 100\n";
    Env env(s);
    const std::string big = "SELECT '" + std::string(200, 'x') + "'";
    auto r = run({bin("sqlq"), "-c", env.config(), "submit", big});
    INFO(r.err);
    CHECK(r.code == 6);
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.find("209 bytes, more than 100 ([query] max_sql_bytes); nothing was stored") != std::string::npos);
    std::string batch = env.dir() + "/batch.sql";
    std::ofstream(batch) << "SELECT 1\n" << big << "\n";
    auto b = run({bin("sqlq"), "-c", env.config(), "submit", "--batch", batch});
    CHECK(b.code == 6);
    CHECK(b.err.find("task 2 of 2") != std::string::npos);
    auto l = run({bin("sqlq"), "-c", env.config(), "--json", "list"});
    CHECK(l.code == 0);
    CHECK(nlohmann::json::parse(l.out).empty());
    CHECK(run({bin("sqlq"), "-c", env.config(), "submit", "SELECT 1"}).code == 0);
}
