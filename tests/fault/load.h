#pragma once
// The fault suite's tools: a mixed load, a private RabbitMQ node of its own (for restarts and a
// low heartbeat), the drain, and the closing audit that every scenario ends with.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "support/harness.h"

namespace sqlq::fault {

// SQLQ_SOAK=1: every load grows by this factor.
int soak_factor();
// `ci` tasks in CI mode, `ci * soak_factor()` in soak mode.
int sized(int ci);

// The broker user every scenario connects as. Its password is distinctive so that the suite
// can grep every log it wrote for it (test "no log contains the broker password").
std::string fault_user();
std::string fault_password();
// Adds the user to the node in `node_dir` (a scripts/broker.sh directory) unless it can log in.
void ensure_user(const std::string& node_dir, int port);

// An Env setup that connects as the fault user to the fixture's node, with the sweeper and the
// lease tuned for fast recovery.
test::Setup base_setup(int workers = 8);

// `n` queries: mostly fast ones, one in `slow_every` computing for about `slow_ms`.
std::vector<std::string> mixed_load(int n, int slow_every = 40, int slow_ms = 200);

// A RabbitMQ node of the test's own, on a free port, stopped on destruction.
class Node {
public:
    // `broker_env`: scripts/broker.sh settings, e.g. SQLQ_BROKER_CONSUMER_TIMEOUT_MS.
    explicit Node(int heartbeat_s = 5, std::map<std::string, std::string> broker_env = {});
    ~Node();
    Node(const Node&) = delete;
    int port() const { return port_; }
    std::string url() const;  // as the fault user
    void stop();
    void start();
    // SIGSTOP / SIGCONT to the node's Erlang VM: it still accepts TCP connections (the kernel's
    // backlog) but answers nothing, like a node too loaded to answer in time.
    void pause();
    void resume();

private:
    test::TempDir dir_;
    int port_ = 0;
    int heartbeat_s_;
    std::map<std::string, std::string> env_;
};

// Task counts straight from the store (for polling; the verdict comes from `sqlq audit`).
struct Counts {
    int64_t queued = 0, running = 0, terminal = 0;
};
Counts counts(const test::Env& env);

// Waits until no task is queued or running and the queue is empty. False on timeout.
bool drained(const test::Env& env, int timeout_ms);

// The closing audit: runs `sqlq audit --json`, prints the one line of figures (and appends it
// to <build>/fault-figures.txt), checks lost=0 stuck=0 duplicate_outcomes=0 queue_left=0 and
// that no log written in the env's directory holds the broker password. Returns the audit.
nlohmann::json closing_audit(const test::Env& env, const std::string& scenario,
                             const std::vector<std::string>& extra_logs = {});

// Every file under `dir` (but the config and the task store) and every extra file, searched for
// the password; returns the files that contain it.
std::vector<std::string> files_with_password(const std::string& dir, const std::vector<std::string>& extra);

// `sqlq` through the harness, its output kept in the env's directory so that the password check
// sees it too.
test::Result cli(const test::Env& env, std::vector<std::string> args, const std::string& input = "");

}  // namespace sqlq::fault
