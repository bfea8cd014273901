#pragma once
// Test harness for the integration and fault suites: the private broker started by the CTest
// fixture, a temporary directory with its own config (own queue, store and run dir), and the
// real binaries run as real processes.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "task/report.h"

namespace sqlq::test {

// Path of a built binary: sqlq, sqlq-worker, sqlq-supervisor, sqlq-web, or sqlq-test-worker (sqlq-worker
// with the fault-injection SQL functions sqlq_test_hang(ms) and sqlq_test_crash(); every Env's
// [supervisor] worker_path points at it).
std::string bin(const std::string& name);
std::string source_dir();
int broker_port();                          // from the fixture
std::string broker_dir();                   // the fixture's directory

struct TempDir {
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    std::string path;
};

// A test installation: temp dir, config file with a queue of its own, store, demo database.
struct Setup {
    int workers = 2;
    std::string queue_type = "classic";
    std::string extra;  // more TOML, appended per section: {"[query]", "timeout_ms = 500"}
    std::map<std::string, std::string> sections;  // section → extra lines
    std::string broker_url;  // empty: the fixture's node as guest
    std::vector<std::string> broker_urls;  // when set, [broker] url is this array (a cluster's nodes)
    std::string store_path = "sqlq.db";  // relative to the env's directory, or absolute
    // [store] url (a PostgreSQL store) instead of store_path when set. With SQLQ_TEST_STORE=postgres
    // in the environment, an Env whose setup names neither gets a database of its own on the
    // postgres fixture's server: a suite runs on the PostgreSQL store unchanged.
    std::string store_url;
    std::string database;  // [query] database; empty: the broker fixture's SQLite demo database
};

class Env {
public:
    explicit Env(const Setup& s = {});
    const std::string& dir() const { return tmp_.path; }
    const std::string& config() const { return config_path_; }
    const Config& cfg() const { return cfg_; }
    std::string broker_url() const;
    // Rewrites the config with other settings (same queue, store and run dir).
    void rewrite(const Setup& s);

private:
    void write(const Setup& s);
    TempDir tmp_;
    std::shared_ptr<void> store_db_;  // SQLQ_TEST_STORE=postgres: the Env's database (a ScratchDatabase)
    std::string url_;
    std::string queue_;
    std::string config_path_;
    Config cfg_;
};

struct Result {
    int code = -1;  // exit code, or 128+signal
    std::string out, err;
};

// Runs a command to the end (killed after timeout_ms) and captures its output.
Result run(const std::vector<std::string>& argv, const std::string& input = "", int timeout_ms = 60000,
           const std::map<std::string, std::string>& env = {});
// `sqlq -c CONFIG args...`
Result cli(const Env& env, std::vector<std::string> args, const std::string& input = "");

// A background process (a worker, a supervisor in the foreground). Its stderr goes to a file.
class Process {
public:
    // With `status_pipe`, the child gets SQLQ_STATUS_FD and wait_report() can read its reports.
    Process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
            bool status_pipe = false);
    ~Process();  // SIGKILLs and reaps it if still running
    Process(const Process&) = delete;

    pid_t pid() const { return pid_; }
    void signal(int sig);
    // Waits for exit; returns the exit code (128+signal for a signal), or nullopt on timeout.
    std::optional<int> wait(int timeout_ms);
    bool running();
    // Blocks until the child reports `what` (e.g. ready), up to timeout_ms. Returns the line.
    std::optional<ReportLine> wait_report(Report what, int timeout_ms);
    std::string log() const;  // its stderr so far
    // Whether `text` shows up in its stderr within timeout_ms. A worker buffers its per-task
    // info lines and writes them once idle (within ~100 ms), so a line may trail the event.
    bool log_shows(const std::string& text, int timeout_ms = 5000) const;
    const std::string& log_path() const { return log_path_; }

private:
    pid_t pid_ = -1;
    int status_fd_ = -1;
    std::string log_path_;
    std::string buffer_;
    std::optional<int> exit_;
};

// A worker of `env` (sqlq-test-worker, so with the fault-injection functions) with a status pipe.
std::unique_ptr<Process> start_worker(const Env& env, int slot = 0);

// A supervisor of `env` started in the background (`sqlq-supervisor start`, which returns once
// every worker is ready), running sqlq-test-worker (the Env's worker_path); stopped (or killed)
// on destruction.
class Fleet {
public:
    explicit Fleet(const Env& env, bool must_start = true);
    ~Fleet();
    Fleet(const Fleet&) = delete;
    Result start_result;           // what `start` said
    nlohmann::json status() const; // sqlq-supervisor status --json (throws when not running)
    pid_t pid() const;             // the supervisor's pid, from status
    Result stop();
    // The pid of the worker busy with `task`, or 0.
    pid_t worker_of(int64_t task) const;

private:
    const Env& env_;
    bool stopped_ = false;
};
Result supervisor(const Env& env, std::vector<std::string> args);

// A whole file as a string ("" when it cannot be read).
std::string read_file(const std::string& path);
// The supervisor's log of `env` (its run dir), worker output included.
std::string supervisor_log(const Env& env);
// Whether `text` shows up in that log within timeout_ms (a worker's info lines reach it only
// when the worker flushes them).
bool supervisor_log_shows(const Env& env, const std::string& text, int timeout_ms);

// Polls `pred` every 10 ms until it holds or timeout_ms passes (for states with no event:
// rows in SQLite, a queue's depth). Returns whether it held.
bool eventually(const std::function<bool()>& pred, int timeout_ms);

// Direct views, for assertions.
nlohmann::json show(const Env& env, int64_t id);     // sqlq show --json
nlohmann::json audit(const Env& env);                // sqlq audit --json
int64_t submit(const Env& env, const std::string& sql);
std::vector<int64_t> submit_batch(const Env& env, const std::vector<std::string>& sqls);
// Ready messages in the env's queue (or another), by passive declare.
uint32_t queue_depth(const Env& env, const std::string& queue = "");
// Publishes a raw body to the env's task queue (to forge duplicates or hostile messages).
void publish_raw(const Env& env, const std::string& body);

// A query that computes for about `ms` milliseconds on this machine (a recursive CTE),
// calibrated once per process.
std::string slow_query(int ms);

}  // namespace sqlq::test
