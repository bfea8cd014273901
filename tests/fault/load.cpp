#include "fault/load.h"

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "amqp/connection.h"
#include "task/store.h"
#include "util/clock.h"

namespace sqlq::fault {
namespace fs = std::filesystem;
using test::Env;
using test::Result;
using test::Setup;

int soak_factor() {
    const char* s = std::getenv("SQLQ_SOAK");
    return s && *s && std::string(s) != "0" ? 10 : 1;
}

int sized(int ci) { return ci * soak_factor(); }

std::string fault_user() { return "sqlq_fault"; }
// Distinctive, so that a grep for it finds nothing but itself.
std::string fault_password() { return "Pw7rQz-sqlq-fault-3xk9"; }

namespace {

std::string url_for(int port) {
    return "amqp://" + fault_user() + ":" + fault_password() + "@127.0.0.1:" + std::to_string(port);
}

bool can_login(int port) {
    BrokerConfig b;
    b.urls = {url_for(port)};
    try {
        amqp::Connection c(b, "sqlq fault: login check");
        c.close();
        return true;
    } catch (const amqp::AmqpError&) {
        return false;
    }
}

}  // namespace

void ensure_user(const std::string& node_dir, int port) {
    if (can_login(port)) return;
    const std::string ctl = test::source_dir() + "/scripts/broker.sh";
    // add_user fails when the user exists (another test process got there first): that is fine.
    test::run({ctl, "ctl", node_dir, "add_user", fault_user(), fault_password()});
    auto r = test::run({ctl, "ctl", node_dir, "set_permissions", "-p", "/", fault_user(), ".*", ".*", ".*"});
    if (r.code != 0) throw std::runtime_error("cannot set the fault user's permissions: " + r.err);
}

Setup base_setup(int workers) {
    static const bool user_ready = [] {
        ensure_user(test::broker_dir() + "/node", test::broker_port());
        return true;
    }();
    (void)user_ready;
    Setup s;
    s.workers = workers;
    s.queue_type = "quorum";  // the product's default
    s.broker_url = url_for(test::broker_port());
    s.sections["supervisor"] = "sweep_interval_ms = 500\nrepublish_after_ms = 3000\n";
    return s;
}

std::vector<std::string> mixed_load(int n, int slow_every, int slow_ms) {
    std::vector<std::string> out;
    out.reserve(size_t(n));
    const std::string slow = test::slow_query(slow_ms);
    for (int i = 0; i < n; ++i) {
        if (slow_every > 0 && i % slow_every == slow_every - 1) out.push_back(slow);
        else if (i % 3 == 0) out.push_back("SELECT count(*) FROM orders WHERE customer_id % 97 = " + std::to_string(i % 97));
        else if (i % 3 == 1) out.push_back("SELECT " + std::to_string(i) + " AS n, name FROM customers WHERE id = " + std::to_string(1 + i % 500));
        else out.push_back("SELECT country, count(*) FROM customers GROUP BY country");
    }
    return out;
}

Node::Node(int heartbeat_s, std::map<std::string, std::string> broker_env)
    : heartbeat_s_(heartbeat_s), env_(std::move(broker_env)) {
    auto env = env_;
    env["SQLQ_TEST_HEARTBEAT"] = std::to_string(heartbeat_s);
    auto r = test::run({test::source_dir() + "/tests/support/broker-fixture.sh", "start", dir_.path}, "", 180000, env);
    if (r.code != 0) throw std::runtime_error("cannot start a private RabbitMQ node: " + r.err + r.out);
    std::ifstream(dir_.path + "/port") >> port_;
    ensure_user(dir_.path + "/node", port_);
}

Node::~Node() { stop(); }

std::string Node::url() const { return url_for(port_); }

void Node::stop() {
    test::run({test::source_dir() + "/scripts/broker.sh", "stop", dir_.path + "/node"}, "", 120000);
}

void Node::start() {
    auto r = test::run({test::source_dir() + "/scripts/broker.sh", "start", dir_.path + "/node",
                        std::to_string(port_), std::to_string(heartbeat_s_)},
                       "", 180000, env_);
    if (r.code != 0) throw std::runtime_error("cannot restart the private RabbitMQ node: " + r.err);
}

namespace {
void signal_node(const std::string& node_dir, int sig) {
    pid_t pid = 0;
    std::ifstream(node_dir + "/pid") >> pid;
    if (pid <= 0 || ::kill(pid, sig) != 0)
        throw std::runtime_error("cannot signal the private RabbitMQ node (pid file " + node_dir + "/pid)");
}
}  // namespace

void Node::pause() { signal_node(dir_.path + "/node", SIGSTOP); }

void Node::resume() { signal_node(dir_.path + "/node", SIGCONT); }

Counts counts(const Env& env) {
    auto store = open_store(env.cfg().store);
    auto c = store->counts();
    return {c["queued"], c["running"], c["succeeded"] + c["failed"] + c["cancelled"]};
}

bool drained(const Env& env, int timeout_ms) {
    return test::eventually(
        [&] {
            try {
                auto c = counts(env);
                return c.queued == 0 && c.running == 0 && test::queue_depth(env) == 0;
            } catch (const std::exception&) {
                return false;  // the store or the broker is being hurt right now
            }
        },
        timeout_ms);
}

Result cli(const Env& env, std::vector<std::string> args, const std::string& input) {
    Result r = test::cli(env, args, input);
    std::ofstream(env.dir() + "/cli-transcript.log", std::ios::app) << r.out << r.err;
    return r;
}

std::vector<std::string> files_with_password(const std::string& dir, const std::vector<std::string>& extra) {
    std::vector<std::string> files = extra;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) break;
        if (!it->is_regular_file(ec)) continue;
        const std::string name = it->path().filename().string();
        // The config holds the password by design; the store holds tasks, not credentials.
        if (name == "sqlq.conf" || name.rfind("sqlq.db", 0) == 0) continue;
        files.push_back(it->path().string());
    }
    std::vector<std::string> hits;
    for (const auto& f : files) {
        if (test::read_file(f).find(fault_password()) != std::string::npos) hits.push_back(f);
    }
    return hits;
}

nlohmann::json closing_audit(const Env& env, const std::string& scenario, const std::vector<std::string>& extra_logs) {
    Result r = fault::cli(env, {"audit", "--json"});
    auto a = nlohmann::json::parse(r.out, nullptr, false);
    INFO("sqlq audit: exit " << r.code << ": " << r.out << r.err);
    REQUIRE(!a.is_discarded());
    auto num = [&](const char* k) { return a.contains(k) ? a[k].dump() : std::string("?"); };
    std::ostringstream line;
    line << "submitted=" << num("submitted") << " succeeded=" << num("succeeded") << " failed=" << num("failed")
         << " cancelled=" << num("cancelled") << " lost=" << num("lost") << " stuck=" << num("stuck")
         << " duplicate_outcomes=" << num("duplicate_outcomes") << " reexecuted=" << num("reexecuted")
         << " dead_lettered=" << num("dead_lettered") << " queue_left=" << num("queue_left")
         << " recovery_ms_p50=" << num("recovery_ms_p50") << " recovery_ms_p99=" << num("recovery_ms_p99");
    std::cout << "[" << scenario << "] " << line.str() << std::endl;
    std::ofstream(std::string(SQLQ_BUILD_DIR) + "/fault-figures.txt", std::ios::app)
        << now_ms() << " " << (soak_factor() > 1 ? "soak " : "ci ") << scenario << ": " << line.str() << "\n";
    INFO(line.str());
    CHECK(a["lost"] == 0);
    CHECK(a["stuck"] == 0);
    CHECK(a["duplicate_outcomes"] == 0);
    CHECK(a["queue_left"] == 0);
    CHECK(r.code == 0);

    auto hits = files_with_password(env.dir(), extra_logs);
    INFO("files holding the broker password: " << nlohmann::json(hits).dump());
    CHECK(hits.empty());
    return a;
}

}  // namespace sqlq::fault
