// GET /metrics on a real fleet: the real supervisor, workers and broker, scraped over TCP and
// parsed by Prometheus' own parser (Debian's python3-prometheus-client), its values checked
// against the store after a known run.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <csignal>
#include <cstring>
#include <map>
#include <netinet/in.h>
#include <set>
#include <sys/socket.h>
#include <unistd.h>

#include "support/harness.h"
#include "util/clock.h"

using namespace sqlq;
using namespace sqlq::test;
using nlohmann::json;

namespace {
constexpr int kReady = 20000;

// A TCP socket for the test's own use; closed on scope exit.
struct Socket {
    int fd = -1;
    Socket() : fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) { REQUIRE(fd >= 0); }
    ~Socket() {
        if (fd >= 0) ::close(fd);
    }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
};

sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

// A port nobody listens on now (the kernel's pick, released again).
int free_port() {
    Socket s;
    sockaddr_in a = loopback(0);
    REQUIRE(::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    return ntohs(a.sin_port);
}

// Sends `request` as is and returns everything the server wrote until it closed (or 10 s).
std::string http_exchange(int port, const std::string& request, bool half_close = true) {
    Socket s;
    sockaddr_in a = loopback(port);
    timeval tv{10, 0};
    ::setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "connect: " + std::string(std::strerror(errno));
    size_t sent = 0;
    while (sent < request.size()) {
        ssize_t n = ::send(s.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;  // the server may close early (a header too big): read what it said
        sent += size_t(n);
    }
    if (half_close) ::shutdown(s.fd, SHUT_WR);
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(s.fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        out.append(buf, size_t(n));
    }
    return out;
}

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

// GET /metrics, the body only ("" when the status is not 200).
std::string scrape(int port) {
    std::string r = http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if (status_line(r) != "HTTP/1.1 200 OK") return "";
    auto body = r.find("\r\n\r\n");
    return body == std::string::npos ? "" : r.substr(body + 4);
}

// The exposition text through prometheus_client.parser: {"name{k=v,...}": value}, labels sorted,
// histogram series under their sample names (_bucket, _sum, _count). Throws when it does not
// parse: the parser is the judge of the format.
std::map<std::string, double> parse(const std::string& text) {
    static const char* kScript = R"(
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        key = s.name + "{" + ",".join(k + "=" + v for k, v in sorted(s.labels.items())) + "}"
        out[key] = s.value
    out["#type " + fam.name] = {"counter": 1, "gauge": 2, "histogram": 3}.get(fam.type, 0)
print(json.dumps(out))
)";
    Result r = run({"/usr/bin/python3", "-c", kScript}, text);
    if (r.code != 0) throw std::runtime_error("prometheus_client could not parse the metrics: " + r.err);
    std::map<std::string, double> out;
    const json parsed = json::parse(r.out);  // kept: items() of a temporary dangles
    for (const auto& [k, v] : parsed.items()) out[k] = v.get<double>();
    return out;
}

double at(const std::map<std::string, double>& m, const std::string& key) {
    auto it = m.find(key);
    if (it == m.end()) throw std::runtime_error("no series " + key);
    return it->second;
}

}  // namespace

TEST_CASE("/metrics, parsed by Prometheus' parser, agrees with the store after a known run",
          "[supervisor][metrics]") {
    const int port = free_port();
    Setup s;
    s.workers = 3;
    s.sections["supervisor"] = "metrics_listen = \"127.0.0.1:" + std::to_string(port) + "\"\nsweep_interval_ms = 200\n"
                              // A worker up for 100 ms started fine: the one killed below is a crash.
                              "failed_start_ms = 100\n";
    Env env(s);
    Fleet f(env);

    // Before any task: every series with a bounded label set is there, at 0.
    auto m = parse(scrape(port));
    CHECK(at(m, "sqlq_workers_target{}") == 3);
    CHECK(at(m, "sqlq_worker_restarts_total{reason=crash}") == 0);
    CHECK(at(m, "sqlq_tasks_finished_total{recorded_by=worker,status=succeeded}") == 0);
    CHECK(at(m, "sqlq_task_wait_seconds_count{}") == 0);
    CHECK(at(m, "#type sqlq_worker_restarts") == 1);  // the parser strips _total off a counter's family name
    CHECK(at(m, "#type sqlq_task_run_seconds") == 3);

    // A known run: 5 succeed, 2 fail, 1 is cancelled while it runs.
    std::vector<int64_t> ok, bad;
    for (int i = 0; i < 5; ++i) ok.push_back(submit(env, "SELECT count(*) FROM customers"));
    for (int i = 0; i < 2; ++i) bad.push_back(submit(env, "SELECT * FROM no_such_table"));
    for (int64_t id : ok) REQUIRE(cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 0);
    for (int64_t id : bad) REQUIRE(cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 10);
    int64_t slow = submit(env, slow_query(20000));
    REQUIRE(eventually([&] { return f.worker_of(slow) != 0; }, kReady));
    REQUIRE(cli(env, {"cancel", std::to_string(slow)}).code == 0);
    REQUIRE(cli(env, {"wait", std::to_string(slow), "--timeout", "30"}).code == 11);

    // One idle worker killed: the slot is refilled, and the restart counted as a crash.
    pid_t victim = 0;
    const json st = f.status();  // kept: a range-for over a temporary's member dangles
    for (const auto& w : st["workers"])
        if (w["state"] == "ready" && w["pid"].is_number()) victim = w["pid"].get<pid_t>();
    REQUIRE(victim > 0);
    REQUIRE(::kill(victim, SIGKILL) == 0);

    // The outcomes reach the supervisor on the workers' status pipes, after the store has them
    // (a worker reports after its commit): scrape until they are all in and the fleet is whole.
    auto a = audit(env);
    REQUIRE(a["succeeded"] == 5);
    REQUIRE(a["failed"] == 2);
    REQUIRE(a["cancelled"] == 1);
    REQUIRE(eventually(
        [&] {
            m = parse(scrape(port));
            return at(m, "sqlq_tasks_finished_total{recorded_by=worker,status=cancelled}") == 1 &&
                   at(m, "sqlq_worker_restarts_total{reason=crash}") == 1 && at(m, "sqlq_workers{state=ready}") == 3 &&
                   m.count("sqlq_queue_consumers{queue=" + env.cfg().broker.queue + "}") &&
                   at(m, "sqlq_queue_consumers{queue=" + env.cfg().broker.queue + "}") == 3;
        },
        kReady));
    INFO(scrape(port));

    // Outcomes: as many of each status as the store holds.
    CHECK(at(m, "sqlq_tasks_finished_total{recorded_by=worker,status=succeeded}") == a["succeeded"].get<double>());
    CHECK(at(m, "sqlq_tasks_finished_total{recorded_by=worker,status=failed}") == a["failed"].get<double>());
    CHECK(at(m, "sqlq_tasks_finished_total{recorded_by=worker,status=cancelled}") == a["cancelled"].get<double>());
    CHECK(at(m, "sqlq_tasks_finished_total{recorded_by=sweeper,status=failed}") == 0);

    // Wait and run times: one observation per task; the waits are exactly the store's
    // started_at - created_at (both written by the store's clock).
    double waits = 0;
    std::vector<int64_t> all = ok;
    all.insert(all.end(), bad.begin(), bad.end());
    all.push_back(slow);
    for (int64_t id : all) {
        auto t = show(env, id);
        REQUIRE(t["attempts"] == 1);
        waits += double(t["started_at"].get<int64_t>() - t["created_at"].get<int64_t>()) / 1000.0;
    }
    CHECK(at(m, "sqlq_task_wait_seconds_count{}") == 8);
    CHECK(at(m, "sqlq_task_wait_seconds_sum{}") == Approx(waits).margin(0.0005));
    CHECK(at(m, "sqlq_task_wait_seconds_bucket{le=+Inf}") == 8);
    CHECK(at(m, "sqlq_task_run_seconds_count{}") == 8);
    // The slow query ran until its cancel, so the run times add up to at least a little; and no
    // more than the whole test has taken (sanity bounds, not a speed figure).
    CHECK(at(m, "sqlq_task_run_seconds_sum{}") > 0);
    CHECK(at(m, "sqlq_task_run_seconds_sum{}") < 120);
    // Buckets are cumulative: never decreasing, ending at the count.
    double prev = 0;
    for (const char* le : {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "25", "60",
                           "150", "300", "600", "1800", "3600", "+Inf"}) {
        double v = at(m, std::string("sqlq_task_run_seconds_bucket{le=") + le + "}");
        CHECK(v >= prev);
        prev = v;
    }
    CHECK(prev == 8);
    // The cancel: one observation, about the store's stop_ms (cancel request → the outcome's
    // finished_at). Sanity bounds only: the worker reads its clock after the outcome's commit
    // and its fsync (durability full, docs/operations.md), which stop_ms does not count (on a
    // disk busy with a build, that sync alone took 90 ms in CI), and it counts from its claim's
    // reading of the store's clock by its own monotonic clock, started once the claim returned.
    auto c = show(env, slow);
    const double stop_s = c["stop_ms"].get<double>() / 1000.0;
    CHECK(at(m, "sqlq_task_cancel_seconds_count{}") == 1);
    CHECK(at(m, "sqlq_task_cancel_seconds_sum{}") > stop_s - 0.5);
    CHECK(at(m, "sqlq_task_cancel_seconds_sum{}") < stop_s + 5);

    // The fleet and what the sweeper saw.
    CHECK(at(m, "sqlq_workers_target{}") == 3);
    CHECK(at(m, "sqlq_workers{state=busy}") == 0);
    CHECK(at(m, "sqlq_workers{state=backoff}") == 0);
    CHECK(at(m, "sqlq_worker_failed_starts_total{reason=exec}") == 0);
    CHECK(at(m, "sqlq_broker_up{}") == 1);
    CHECK(at(m, "sqlq_store_up{}") == 1);
    CHECK(at(m, "sqlq_queue_messages{queue=" + env.cfg().broker.queue + "}") == 0);
    CHECK(at(m, "sqlq_sweep_age_seconds{}") < 60);
    CHECK(at(m, "process_start_time_seconds{}") > 1.6e9);
    bool build = false;
    for (const auto& [k, v] : m)
        if (k.rfind("sqlq_build_info{commit=", 0) == 0 && k.find(",version=0.") != std::string::npos) build = v == 1;
    CHECK(build);
    // No task id, SQL or user in any label: only these label names, each with a small fixed set
    // of values (the queue's name and the build's are one value each).
    const std::set<std::string> allowed = {"state", "reason", "status", "recorded_by", "queue", "le", "version", "commit"};
    for (const auto& [key, v] : m) {
        if (key[0] == '#') continue;
        auto open = key.find('{');
        std::string labels = key.substr(open + 1, key.size() - open - 2);
        for (size_t pos = 0; pos < labels.size();) {
            auto eq = labels.find('=', pos);
            INFO(key);
            CHECK(allowed.count(labels.substr(pos, eq - pos)) == 1);
            auto comma = labels.find(',', eq);
            pos = comma == std::string::npos ? labels.size() : comma + 1;
        }
    }
    std::string text = scrape(port);
    CHECK(text.find("customers") == std::string::npos);
    // Prometheus' own linter on names, units, HELP and TYPE (promtool, when installed).
    if (Result which = run({"/bin/sh", "-c", "command -v promtool"}); which.code == 0) {
        Result lint = run({which.out.substr(0, which.out.find('\n')), "check", "metrics"}, text);
        INFO(lint.out + lint.err);
        CHECK(lint.code == 0);
        CHECK(lint.out + lint.err == "");
    }
    CHECK(text.find("no_such_table") == std::string::npos);
}

TEST_CASE("bad HTTP requests to the metrics port get their status, and the supervisor serves on",
          "[supervisor][metrics][http]") {
    const int port = free_port();
    Setup s;
    s.workers = 1;
    s.sections["supervisor"] = "metrics_listen = \"127.0.0.1:" + std::to_string(port) + "\"\n";
    Env env(s);
    Fleet f(env);
    const pid_t sup = f.pid();

    SECTION("not HTTP at all: 400") {
        CHECK(status_line(http_exchange(port, "HELLO THERE\r\n\r\n")).rfind("HTTP/1.1 400 ", 0) == 0);
        CHECK(status_line(http_exchange(port, std::string("\0\1\2\3\r\n\r\n", 8))).rfind("HTTP/1.1 400 ", 0) == 0);
    }
    SECTION("another path: 404; another method: 405 naming the allowed ones") {
        CHECK(status_line(http_exchange(port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")) == "HTTP/1.1 404 Not Found");
        auto r = http_exchange(port, "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(status_line(r) == "HTTP/1.1 405 Method Not Allowed");
        CHECK(r.find("Allow: GET, HEAD\r\n") != std::string::npos);
    }
    SECTION("a body over 1 KiB: 413; headers over 8 KiB: 431") {
        CHECK(status_line(http_exchange(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                                             std::string(50000, 'x'))) == "HTTP/1.1 413 Payload Too Large");
        CHECK(status_line(http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') +
                                             "\r\n\r\n")) == "HTTP/1.1 431 Request Header Fields Too Large");
    }
    SECTION("HEAD: the headers of the GET, no body; keep-alive serves a second request") {
        auto r = http_exchange(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n"
                                "Connection: close\r\n\r\n");
        CHECK(r.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
        CHECK(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != std::string::npos);
        auto second = r.find("HTTP/1.1 200 OK", 10);
        REQUIRE(second != std::string::npos);
        // Nothing between the HEAD's headers and the second response: no body was sent.
        CHECK(r.substr(0, second).find("# HELP") == std::string::npos);
        CHECK(r.find("# TYPE sqlq_workers gauge", second) != std::string::npos);
    }
    SECTION("connections that say nothing, or half a request, then go away") {
        for (int i = 0; i < 50; ++i) http_exchange(port, i % 2 ? "" : "GET /met", true);
    }
    // Whatever came before, the supervisor is alive and still answers.
    CHECK(f.pid() == sup);
    CHECK(!parse(scrape(port)).empty());
}

TEST_CASE("a metrics address that cannot be bound fails the start, naming it", "[supervisor][metrics][start]") {
    Socket taken;
    int one = 1;
    ::setsockopt(taken.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = loopback(0);
    REQUIRE(::bind(taken.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(taken.fd, 1) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(taken.fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    const std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));

    Setup s;
    s.workers = 1;
    s.sections["supervisor"] = "metrics_listen = \"" + addr + "\"\n";
    Env env(s);
    Fleet f(env, /*must_start=*/false);
    CHECK(f.start_result.code != 0);
    INFO(f.start_result.err);
    CHECK(f.start_result.err.find("metrics_listen " + addr) != std::string::npos);
    CHECK(f.start_result.err.find("in use") != std::string::npos);
    CHECK(supervisor(env, {"status"}).code != 0);  // nothing of it left running
}

TEST_CASE("a reload keeps metrics on the address the supervisor started with, and says a change needs a restart",
          "[supervisor][metrics][reload]") {
    const int port = free_port();
    Setup s;
    s.workers = 1;
    s.sections["supervisor"] = "metrics_listen = \"127.0.0.1:" + std::to_string(port) + "\"\n";
    Env env(s);
    Fleet f(env);
    const int other = free_port();
    s.workers = 2;
    s.sections["supervisor"] = "metrics_listen = \"127.0.0.1:" + std::to_string(other) + "\"\n";
    env.rewrite(s);
    REQUIRE(supervisor(env, {"reload"}).code == 0);
    // The reload took (the new target shows on the old address); the new address serves nothing.
    CHECK(eventually([&] { return at(parse(scrape(port)), "sqlq_workers_target{}") == 2; }, kReady));
    CHECK(http_exchange(other, "GET /metrics HTTP/1.1\r\n\r\n").rfind("connect: ", 0) == 0);
    CHECK(supervisor_log_shows(env, "metrics_listen changed to \"127.0.0.1:" + std::to_string(other) +
                                        "\"; this needs a stop and a start", 5000));
}
