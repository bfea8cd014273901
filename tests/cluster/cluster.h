#pragma once
// The cluster suite's shared tools (tests/cluster/): the fixture's three RabbitMQ nodes
// (Cluster), a fleet's setup on them, producers submitting in the background, and log counts.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fault/load.h"

namespace sqlq::cluster {

using test::Env;
using test::Result;
using test::Setup;
using test::eventually;
using test::read_file;
using test::run;
using test::source_dir;
using fault::ensure_user;
using fault::fault_password;
using fault::fault_user;
using fault::mixed_load;

inline std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
    return s;
}

// The fixture's three nodes, by index 0..2 (node1..node3 of tests/support/cluster-fixture.sh).
class Cluster {
public:
    Cluster() {
        const char* d = std::getenv("SQLQ_TEST_CLUSTER_DIR");
        dir_ = d ? d : std::string(SQLQ_BUILD_DIR) + "/test-cluster";
        std::ifstream in(dir_ + "/ports");
        for (int p; in >> p;) ports_.push_back(p);
        if (ports_.size() != 3)
            throw std::runtime_error("no test cluster: run through ctest (fixture 'cluster'), or start one with "
                                     "tests/support/cluster-fixture.sh start " + dir_);
    }
    size_t size() const { return ports_.size(); }
    std::string node_dir(size_t i) const { return dir_ + "/node" + std::to_string(i + 1); }
    std::string name(size_t i) const { return trim(read_file(node_dir(i) + "/nodename")); }
    int port(size_t i) const { return ports_[i]; }
    std::string url(size_t i) const {
        return "amqp://" + fault_user() + ":" + fault_password() + "@127.0.0.1:" + std::to_string(ports_[i]);
    }
    std::string demo_db() const { return dir_ + "/demo.db"; }

    Result ctl(size_t i, std::vector<std::string> args) const {
        args.insert(args.begin(), {source_dir() + "/scripts/broker.sh", "ctl", node_dir(i)});
        return run(args, "", 60000);
    }
    bool running(size_t i) const {
        return run({source_dir() + "/scripts/broker.sh", "status", node_dir(i)}, "", 60000).code == 0;
    }
    // Starts every node that is down (it rejoins the cluster from its data dir) and waits until
    // all three are in it; makes the fault user (users are the cluster's, not a node's).
    void all_up() const {
        for (size_t i = 0; i < size(); ++i)
            if (!running(i)) start(i);
        auto r = ctl(0, {"await_online_nodes", "3", "--timeout", "120"});
        if (r.code != 0) throw std::runtime_error("the cluster did not come back whole: " + r.err);
        ensure_user(node_dir(0), port(0));
    }
    void start(size_t i) const {
        auto r = run({source_dir() + "/scripts/broker.sh", "start", node_dir(i), std::to_string(port(i)), "5"}, "",
                     180000);
        if (r.code != 0) throw std::runtime_error("cannot start node " + name(i) + ": " + r.err);
    }
    // A polite stop (`rabbitmqctl stop`): the node closes its clients' connections itself.
    void stop(size_t i) const { run({source_dir() + "/scripts/broker.sh", "stop", node_dir(i)}, "", 120000); }
    // SIGKILL of the node's Erlang VM; returns once it is gone.
    void kill(size_t i) const {
        const pid_t pid = pid_t(std::stol(read_file(node_dir(i) + "/pid")));
        if (::kill(pid, SIGKILL) != 0) throw std::runtime_error("cannot kill node " + name(i));
        if (!eventually([&] { return ::kill(pid, 0) != 0; }, 30000))
            throw std::runtime_error("node " + name(i) + " outlived its SIGKILL");
    }
    // The index of the node leading `queue`, asked of node `via`; nullopt when no node leads it.
    std::optional<size_t> leader(const std::string& queue, size_t via) const {
        auto r = ctl(via, {"list_queues", "name", "leader", "--no-table-headers"});
        std::istringstream lines(r.out);
        for (std::string line; std::getline(lines, line);) {
            std::istringstream words(line);
            std::string q, node;
            if (!(words >> q >> node) || q != queue) continue;
            for (size_t i = 0; i < size(); ++i)
                if (name(i) == node) return i;
        }
        return std::nullopt;
    }
    std::optional<size_t> leader(const std::string& queue) const {
        for (size_t via = 0; via < size(); ++via)
            if (running(via))
                if (auto l = leader(queue, via)) return l;
        return std::nullopt;
    }

private:
    std::string dir_;
    std::vector<int> ports_;
};

inline Setup cluster_setup(const Cluster& c, int workers) {
    Setup s;
    s.workers = workers;
    s.queue_type = "quorum";
    for (size_t i = 0; i < c.size(); ++i) s.broker_urls.push_back(c.url(i));
    s.database = c.demo_db();
    s.sections["broker"] = "reconnect_max_ms = 1000\nconnect_timeout_ms = 2000\n";
    s.sections["supervisor"] = "sweep_interval_ms = 500\nrepublish_after_ms = 3000\n";
    return s;
}

// Producers: `sqlq submit --batch` of `chunk` tasks again and again, each a new process (so each
// connects anew, from the first node that answers), until told to stop or `max_chunks` ran.
// Every submit must print one id per task and exit 0 (all confirmed) or 1 (stored, some left to
// the sweeper); the counts are checked by the test thread (Catch's assertions are not for threads).
// `load`: the chunk's queries (`chunk` of them; by default mixed_load(chunk, 20, 100)), one
// chunk every `pause_ms` or so.
class Producer {
public:
    Producer(const Env& env, int chunk, int max_chunks, std::vector<std::string> load = {}, int pause_ms = 150)
        : env_(env) {
        if (load.empty()) load = mixed_load(chunk, 20, 100);
        thread_ = std::thread([this, chunk, max_chunks, pause_ms, load = std::move(load)] {
            std::string text;
            for (auto& q : load) text += q + "\n";
            for (int n = 0; n < max_chunks && !stop_; ++n) {
                auto r = fault::cli(env_, {"submit", "--batch", "-"}, text);
                const int64_t ids = std::count(r.out.begin(), r.out.end(), '\n');
                submitted_ += ids;
                if (r.code == 1) ++unconfirmed_;
                if ((r.code != 0 && r.code != 1) || ids != chunk) {
                    ++bad_;
                    last_bad_ = "exit " + std::to_string(r.code) + ": " + r.err;
                }
                if (r.code != 0) last_problem_ = r.err;
                ++chunks_;
                std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
            }
            finished_ = true;
        });
    }
    ~Producer() { finish(); }
    // Lets `more` chunks go out from now on, then stops.
    void after(int more) {
        const int until = chunks_ + more;
        eventually([&] { return chunks_ >= until || finished_; }, 120000);
    }
    void finish() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    int64_t submitted() const { return submitted_; }
    int chunks() const { return chunks_; }
    int bad() const { return bad_; }
    int unconfirmed() const { return unconfirmed_; }
    std::string last_bad() const { return last_bad_; }
    std::string last_problem() const { return last_problem_; }

private:
    const Env& env_;
    std::thread thread_;
    std::atomic<bool> stop_{false}, finished_{false};
    std::atomic<int64_t> submitted_{0};
    std::atomic<int> chunks_{0}, bad_{0}, unconfirmed_{0};
    std::string last_bad_, last_problem_;
};

inline size_t count_of(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// Lines in the supervisor's log saying a worker started consuming on `port`.
inline size_t consumers_on(const Env& env, int port) {
    return count_of(supervisor_log(env), "consuming from " + env.cfg().broker.queue + " on 127.0.0.1:" +
                                             std::to_string(port));
}


}  // namespace sqlq::cluster
