// The command lines: clear one-line errors, documented exit codes, output formats.
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <regex>
#include <thread>

#include "support/harness.h"

using namespace sqlq;
using namespace sqlq::test;

namespace {
int count_lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

// Runs argv on a terminal: `script` (util-linux) gives it a pseudo-terminal as stdin, stdout and
// stderr, and copies what it wrote there (both streams, as a terminal shows them) to its stdout.
Result on_terminal(const std::vector<std::string>& argv) {
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "'" : " '") + a + "'";
    return run({"/usr/bin/script", "-qec", cmd, "/dev/null"}, "", 60000);
}

// An error printed with --json: one JSON object, on stderr, and nothing on stdout.
nlohmann::json json_error(const Result& r) {
    INFO("out: " << r.out << "err: " << r.err);
    CHECK(r.out.empty());
    CHECK(count_lines(r.err) == 1);
    auto j = nlohmann::json::parse(r.err);
    CHECK(j["exit_code"] == r.code);
    CHECK(j["error"].is_string());
    return j;
}

const std::regex kLogLine(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} sqlq-worker\[pid \d+\] error: )");
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
        // The worker's last line is a log line like any other: with its time (the supervisor's
        // log has it among the others).
        if (b == bin("sqlq-worker")) CHECK(std::regex_search(r.err, kLogLine));
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

TEST_CASE("with several broker nodes, every client connects to the first that answers", "[cli][broker][failover]") {
    const std::string port = std::to_string(broker_port());
    Setup s;
    // The first node listens nowhere (port 1); its password must show nowhere either.
    s.broker_urls = {"amqp://guest:s3cret-node1@127.0.0.1:1", "amqp://guest:guest@127.0.0.1:" + port};
    Env env(s);
    REQUIRE(env.cfg().broker.urls.size() == 2);
    {
        Fleet fleet(env);
        REQUIRE(fleet.start_result.code == 0);
        auto r = cli(env, {"run", "SELECT 6 * 7"});
        INFO(r.err);
        CHECK(r.code == 0);
        CHECK(r.out.find("42") != std::string::npos);
        auto ids = submit_batch(env, {"SELECT 1", "SELECT 2", "SELECT 3"});
        for (int64_t id : ids) CHECK(cli(env, {"wait", std::to_string(id)}).code == 0);
        CHECK(supervisor_log_shows(env, "on 127.0.0.1:" + port, 5000));
        auto a = audit(env);
        CHECK(a["succeeded"] == 4);
        CHECK(a["lost"] == 0);
        CHECK(a["queue_left"] == 0);
        CHECK(a["exit_code"] == 0);
        fleet.stop();
        CHECK(supervisor_log(env).find("s3cret-node1") == std::string::npos);
    }
    SECTION("when no node answers, the one line names every node, and the task is kept") {
        Setup none = s;
        none.broker_urls = {"amqp://guest:s3cret-node1@127.0.0.1:1", "amqp://guest:s3cret-node2@127.0.0.1:2"};
        env.rewrite(none);
        auto r = cli(env, {"submit", "SELECT 1"});
        CHECK(r.code == 1);
        CHECK(count_lines(r.err) == 1);
        CHECK(r.err.find("no broker node answers") != std::string::npos);
        CHECK(r.err.find("127.0.0.1:1: cannot connect") != std::string::npos);
        CHECK(r.err.find("127.0.0.1:2: cannot connect") != std::string::npos);
        CHECK(r.err.find("s3cret") == std::string::npos);
        CHECK(show(env, std::stoll(r.out))["published"] == false);
    }
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

TEST_CASE("the options -c and --json work before or after the command, on every binary", "[cli][options]") {
    Env env;
    const std::string conf = env.config();
    for (const auto& args : std::vector<std::vector<std::string>>{{"--json", "-c", conf, "list"},
                                                                  {"list", "-c", conf, "--json"},
                                                                  {"-c", conf, "list", "--json"},
                                                                  {"--json", "list", "--config=" + conf}}) {
        std::vector<std::string> argv = {bin("sqlq")};
        argv.insert(argv.end(), args.begin(), args.end());
        auto r = run(argv);
        INFO(r.err);
        CHECK(r.code == 0);
        CHECK(nlohmann::json::parse(r.out).is_array());
    }
    for (const auto& args : std::vector<std::vector<std::string>>{{"--json", "-c", conf, "status"},
                                                                  {"status", "-c", conf, "--json"}}) {
        std::vector<std::string> argv = {bin("sqlq-supervisor")};
        argv.insert(argv.end(), args.begin(), args.end());
        auto r = run(argv);
        INFO(r.err);
        CHECK(r.code == 3);
        CHECK(nlohmann::json::parse(r.out)["running"] == false);
    }
    // The worker has no commands: -c anywhere among its options.
    TempDir d;
    std::ofstream(d.path + "/bad.conf") << "[query]\nmax_rows = \"many\"\n";
    auto w = run({bin("sqlq-worker"), "--slot", "1", "-c", d.path + "/bad.conf"});
    CHECK(w.code == 2);
    CHECK(w.err.find("bad.conf:2: [query] max_rows") != std::string::npos);
}

TEST_CASE("--help lists the exit codes, for every binary", "[cli][help]") {
    for (const auto& b : {bin("sqlq"), bin("sqlq-supervisor"), bin("sqlq-worker"), bin("sqlq-web")}) {
        auto r = run({b, "--help"});
        INFO(b << ": " << r.out);
        CHECK(r.code == 0);
        CHECK(r.out.find("Exit codes") != std::string::npos);
        for (const char* line : {"   0  done", "   2  bad command line", "   6  submit", "  12  wait: timed out"})
            CHECK(r.out.find(line) != std::string::npos);
    }
}

TEST_CASE("an unknown command is named with the list of commands, exit 2", "[cli][usage]") {
    Env env;
    auto r = cli(env, {"frobnicate"});
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK(r.err == "sqlq: unknown command 'frobnicate'; commands: submit, show, result, list, wait, cancel, run, audit, workers\n");
    auto s = supervisor(env, {"frobnicate"});
    CHECK(s.code == 2);
    CHECK(s.err == "sqlq-supervisor: unknown command 'frobnicate'; commands: start, status, stop, reload, restart\n");
    auto j = json_error(cli(env, {"--json", "frobnicate"}));
    CHECK(j["error"] == "unknown command 'frobnicate'; commands: submit, show, result, list, wait, cancel, run, audit, workers");
}

TEST_CASE("with --json an error is one JSON object on stderr, for every kind of error", "[cli][json]") {
    Env env;
    CHECK(json_error(cli(env, {"show", "999999", "--json"}))["exit_code"] == 4);
    CHECK(json_error(cli(env, {"--json", "list", "--status", "bogus"}))["exit_code"] == 2);
    CHECK(json_error(cli(env, {"--json", "submit", ""}))["exit_code"] == 2);
    CHECK(json_error(supervisor(env, {"--json", "reload"}))["error"].get<std::string>().find("not running") !=
          std::string::npos);
    TempDir d;
    const std::string bad = d.path + "/bad.conf";
    std::ofstream(bad) << "[query]\nmax_rows = \"many\"\n";
    for (const auto& b : {bin("sqlq"), bin("sqlq-supervisor")}) {
        auto r = run({b, "-c", bad, b == bin("sqlq") ? "list" : "stop", "--json"});
        auto j = json_error(r);
        CHECK(r.code == 2);
        CHECK(j["error"] == bad + ":2: [query] max_rows: must be an integer");
    }
    SECTION("submit that stores but cannot publish: the ids on stdout, the error on stderr") {
        std::string conf = env.dir() + "/unreachable.conf";
        std::string text = read_file(env.config());
        auto at = text.find("127.0.0.1:");
        text.replace(at, text.find('"', at) - at, "127.0.0.1:1");
        std::ofstream(conf) << text;
        auto r = run({bin("sqlq"), "-c", conf, "submit", "--json", "SELECT 1"});
        CHECK(r.code == 1);
        auto out = nlohmann::json::parse(r.out);
        CHECK(out["published"] == false);
        CHECK(out["published_count"] == 0);
        auto err = nlohmann::json::parse(r.err);
        CHECK(err["exit_code"] == 1);
        CHECK(err["error"].get<std::string>().find("stored but not yet published") != std::string::npos);
    }
}

TEST_CASE("published is a bool in submit, show and list alike", "[cli][json]") {
    Env env;
    auto one = nlohmann::json::parse(cli(env, {"submit", "--json", "SELECT 1"}).out);
    CHECK(one["published"] == true);
    CHECK(one["published_count"] == 1);
    auto batch = nlohmann::json::parse(cli(env, {"submit", "--json", "--batch", "-"}, "SELECT 2\nSELECT 3\n").out);
    CHECK(batch["ids"].size() == 2);
    CHECK(batch["published"] == true);
    CHECK(batch["published_count"] == 2);
    CHECK(show(env, one["id"].get<int64_t>())["published"] == true);
    for (const auto& t : nlohmann::json::parse(cli(env, {"list", "--json"}).out)) CHECK(t["published"].is_boolean());
}

TEST_CASE("list --user shows only that submitter's tasks", "[cli][list]") {
    Env env;
    auto by = [&](const std::string& user, const std::string& sql) {
        return std::stoll(cli(env, {"submit", "--user", user, sql}).out);
    };
    int64_t c1 = by("carol", "SELECT 1");
    by("dave", "SELECT 2");
    int64_t c2 = by("carol", "SELECT 3");
    auto l = nlohmann::json::parse(cli(env, {"list", "--user", "carol", "--json"}).out);
    REQUIRE(l.size() == 2);
    CHECK(l[0]["id"] == c2);
    CHECK(l[1]["id"] == c1);
    auto table = cli(env, {"list", "--user", "dave"}).out;
    CHECK(count_lines(table) == 2);  // the header and dave's one task
    CHECK(table.find("carol") == std::string::npos);
    CHECK(nlohmann::json::parse(cli(env, {"list", "--user", "nobody", "--json"}).out).empty());
}

TEST_CASE("show and list give a running task's elapsed time", "[cli][progress]") {
    Env env;
    auto w = start_worker(env, 1);
    REQUIRE(w->wait_report(Report::ready, 20000));
    int64_t queued_then = submit(env, "SELECT 1");
    REQUIRE(cli(env, {"wait", std::to_string(queued_then)}).code == 0);
    int64_t id = submit(env, slow_query(20000));
    REQUIRE(w->wait_report(Report::busy, 20000));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto t = show(env, id);
    REQUIRE(t["status"] == "running");
    CHECK(t["elapsed_ms"].get<int64_t>() >= 250);
    CHECK(t["elapsed_ms"].get<int64_t>() < 20000);
    auto text = cli(env, {"show", std::to_string(id)}).out;
    CHECK(std::regex_search(text, std::regex(R"(elapsed: +[0-9.]+ m?s \(running\))")));
    auto l = cli(env, {"list", "--status", "running"}).out;
    CHECK(l.find("ELAPSED") != std::string::npos);
    auto lj = nlohmann::json::parse(cli(env, {"list", "--json"}).out);
    CHECK(lj[0]["id"] == id);
    CHECK(lj[0]["elapsed_ms"].is_number());
    CHECK(lj[1]["elapsed_ms"].is_number());  // ended: how long it ran
    REQUIRE(cli(env, {"cancel", std::to_string(id)}).code == 0);
    w->signal(SIGTERM);
    REQUIRE(w->wait(10000) == 0);
    int64_t never = submit(env, "SELECT 2");  // no worker now: it never starts
    CHECK(cli(env, {"cancel", std::to_string(never)}).code == 0);
    CHECK(show(env, never)["elapsed_ms"].is_null());
}

TEST_CASE("progress shows on a terminal only: submit --batch and wait", "[cli][progress]") {
    Env env;  // no worker: the tasks stay queued
    const std::string batch = env.dir() + "/batch.sql";
    {
        std::ofstream f(batch);
        for (int i = 0; i < 1200; ++i) f << "SELECT " << i << "\n";
    }
    SECTION("not a terminal: nothing but the ids, and the one line of a timeout") {
        auto r = cli(env, {"submit", "--batch", batch});
        CHECK(r.code == 0);
        CHECK(count_lines(r.out) == 1200);
        CHECK(r.err.empty());
        int64_t id = std::stoll(r.out);
        auto w = cli(env, {"wait", std::to_string(id), "--timeout", "0.3"});
        CHECK(w.code == 12);
        CHECK(w.err == "sqlq: task " + std::to_string(id) + " is still queued after 0.3 s\n");
    }
    SECTION("a terminal: a bar while publishing, the task's state while waiting, both erased") {
        auto r = on_terminal({bin("sqlq"), "-c", env.config(), "submit", "--batch", batch});
        INFO(r.out);
        CHECK(r.code == 0);
        CHECK(r.out.find("\rsubmit: publishing [") != std::string::npos);
        CHECK(r.out.find("1200/1200") != std::string::npos);
        CHECK(r.out.find("\r\033[K") != std::string::npos);  // erased
        int64_t id = std::stoll(r.out.substr(r.out.rfind("\033[K") + 3));
        auto w = on_terminal({bin("sqlq"), "-c", env.config(), "wait", std::to_string(id), "--timeout", "0.5"});
        INFO(w.out);
        CHECK(w.code == 12);
        CHECK(w.out.find("\rtask " + std::to_string(id) + " queued for ") != std::string::npos);
        CHECK(w.out.find("; waiting") != std::string::npos);
    }
}

TEST_CASE("supervisor status works, with a warning, while the config file has an error", "[cli][status]") {
    Env env;
    Fleet fleet(env);
    std::string text = read_file(env.config());
    SECTION("TOML with a bad key") { text += "\n[supervisor2]\nx = 1\n"; }
    SECTION("not even TOML") { text.replace(text.find("workers = "), 10, "workers = = "); }
    const std::string broken = env.dir() + "/broken.conf";  // beside the good one: same run dir
    std::ofstream(broken) << text;
    auto refused = run({bin("sqlq"), "-c", broken, "list"});
    INFO(text << refused.out << refused.err);
    REQUIRE(refused.code == 2);  // refused elsewhere
    auto r = run({bin("sqlq-supervisor"), "status", "-c", broken});
    INFO(r.err);
    CHECK(r.code == 0);
    CHECK(r.out.find("sqlq-supervisor running") != std::string::npos);
    CHECK(r.err.find("sqlq-supervisor: warning: " + broken + ":") != std::string::npos);
    CHECK(r.err.find("`reload` would refuse this file") != std::string::npos);
    auto j = run({bin("sqlq-supervisor"), "status", "-c", broken, "--json"});
    CHECK(j.code == 0);
    auto st = nlohmann::json::parse(j.out);
    CHECK(st["running"] == true);
    CHECK(st["config_error"].get<std::string>().find(broken + ":") == 0);
    CHECK(st["tasks"].contains("error"));
}
