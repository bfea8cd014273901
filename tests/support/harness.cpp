#include "support/harness.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <random>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <sqlite3.h>

#include "amqp/connection.h"
#include "support/postgres.h"
#include "util/clock.h"

extern char** environ;

namespace sqlq::test {
namespace fs = std::filesystem;

std::string bin(const std::string& name) {
    std::string b = SQLQ_BUILD_DIR;
    if (name == "sqlq") return b + "/client/sqlq";
    if (name == "sqlq-worker") return b + "/worker/sqlq-worker";
    if (name == "sqlq-test-worker") return b + "/tests/sqlq-test-worker";
    if (name == "sqlq-supervisor") return b + "/supervisor/sqlq-supervisor";
    if (name == "sqlq-web") return b + "/web/sqlq-web";
    return b + "/" + name;
}

std::string source_dir() { return SQLQ_SOURCE_DIR; }

std::string broker_dir() {
    const char* d = std::getenv("SQLQ_TEST_BROKER_DIR");
    return fs::absolute(d ? d : std::string(SQLQ_BUILD_DIR) + "/test-broker").lexically_normal().string();
}

int broker_port() {
    std::ifstream in(broker_dir() + "/port");
    int port = 0;
    if (!(in >> port))
        throw std::runtime_error("no test broker: run through ctest (fixture 'broker'), or start one with "
                                 "tests/support/broker-fixture.sh start " + broker_dir());
    return port;
}

TempDir::TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sqlq-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
}

TempDir::~TempDir() {
    if (std::getenv("SQLQ_KEEP_TEST_DIRS")) return;
    std::error_code ec;
    fs::remove_all(path, ec);
}

namespace {
std::string random_suffix() {
    static std::mt19937_64 rng{std::random_device{}()};
    std::ostringstream s;
    s << std::hex << rng();
    return s.str();
}
}  // namespace

Env::Env(const Setup& s) : queue_("sqlq.test." + random_suffix()) { write(s); }

std::string Env::broker_url() const {
    if (!url_.empty()) return url_;
    return "amqp://guest:guest@127.0.0.1:" + std::to_string(broker_port());
}

void Env::rewrite(const Setup& s) { write(s); }

void Env::write(const Setup& given) {
    Setup s = given;
    const char* engine = std::getenv("SQLQ_TEST_STORE");
    if (engine && std::string(engine) == "postgres" && s.store_url.empty() && s.store_path == Setup{}.store_path) {
        if (!store_db_) store_db_ = std::make_shared<ScratchDatabase>();
        s.store_url = static_cast<ScratchDatabase*>(store_db_.get())->url;
    }
    config_path_ = dir() + "/sqlq.conf";
    url_ = s.broker_url;
    std::map<std::string, std::string> sec = s.sections;
    std::ofstream out(config_path_);
    std::string urls;
    if (s.broker_urls.empty()) {
        urls = "\"" + broker_url() + "\"";
    } else {
        urls = "[";
        for (size_t i = 0; i < s.broker_urls.size(); ++i) urls += (i ? ", \"" : "\"") + s.broker_urls[i] + "\"";
        urls += "]";
    }
    out << "[broker]\nurl = " << urls << "\nqueue = \"" << queue_ << "\"\nqueue_type = \""
        << s.queue_type << "\"\n"
        << (sec["broker"].find("heartbeat_s") == std::string::npos ? "heartbeat_s = 5\n" : "") << sec["broker"]
        << "\n";
    out << "[store]\n" << (s.store_url.empty() ? "path = \"" + s.store_path + "\"\n" : "url = \"" + s.store_url + "\"\n")
        << (sec["store"].find("lease_ms") == std::string::npos ? "lease_ms = 1500\n" : "") << sec["store"] << "\n";
    out << "[query]\ndatabase = \"" << (s.database.empty() ? broker_dir() + "/demo.db" : s.database) << "\"\n"
        << sec["query"] << "\n";
    out << "[supervisor]\nworkers = " << s.workers << "\nrun_dir = \"run\"\nworker_path = \"" << bin("sqlq-test-worker")
        << "\"\n" << sec["supervisor"] << "\n";
    out.close();
    cfg_ = load_config(config_path_);
}

namespace {

struct Spawned {
    pid_t pid;
    int status_fd;
};

Spawned spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, int in_fd,
              int out_fd, int err_fd, bool status_pipe) {
    int pipefd[2] = {-1, -1};
    if (status_pipe && pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    std::vector<std::string> envs;
    for (char** e = environ; *e; ++e) {
        std::string kv = *e;
        if (!env.count(kv.substr(0, kv.find('=')))) envs.push_back(kv);
    }
    for (auto& [k, v] : env) envs.push_back(k + "=" + v);
    if (status_pipe) envs.push_back("SQLQ_STATUS_FD=3");
    std::vector<char*> cargv, cenv;
    for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    for (auto& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
    cenv.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        setpgid(0, 0);  // the test can kill the whole group
        dup2(in_fd, 0);
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        if (status_pipe) dup2(pipefd[1], 3);
        execve(cargv[0], cargv.data(), cenv.data());
        _exit(127);
    }
    if (status_pipe) {
        close(pipefd[1]);
        fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    }
    return {pid, pipefd[0]};
}

int decode_status(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

}  // namespace

Result run(const std::vector<std::string>& argv, const std::string& input, int timeout_ms,
           const std::map<std::string, std::string>& env) {
    TempDir io;
    std::string in_path = io.path + "/in", out_path = io.path + "/out", err_path = io.path + "/err";
    std::ofstream(in_path) << input;
    int in = open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    Spawned s = spawn(argv, env, in, out, err, false);
    close(in);
    close(out);
    close(err);
    Result r;
    int64_t deadline = mono_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t w = waitpid(s.pid, &st, WNOHANG);
        if (w == s.pid) break;
        if (mono_ms() > deadline) {
            kill(-s.pid, SIGKILL);
            waitpid(s.pid, &st, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    r.code = decode_status(st);
    r.out = read_file(out_path);
    r.err = read_file(err_path);
    return r;
}

Result cli(const Env& env, std::vector<std::string> args, const std::string& input) {
    args.insert(args.begin(), {bin("sqlq"), "-c", env.config()});
    return run(args, input);
}

Process::Process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                 bool status_pipe) {
    static int counter = 0;
    log_path_ = fs::temp_directory_path().string() + "/sqlq-test-" + std::to_string(getpid()) + "-" +
                std::to_string(++counter) + ".log";
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int err = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    Spawned s = spawn(argv, env, in, err, err, status_pipe);
    close(in);
    close(err);
    pid_ = s.pid;
    status_fd_ = s.status_fd;
}

Process::~Process() {
    if (!exit_) {
        kill(-pid_, SIGKILL);
        int st;
        waitpid(pid_, &st, 0);
    }
    if (status_fd_ >= 0) close(status_fd_);
    if (!std::getenv("SQLQ_KEEP_TEST_DIRS")) unlink(log_path_.c_str());
}

void Process::signal(int sig) {
    if (!exit_) kill(pid_, sig);
}

std::optional<int> Process::wait(int timeout_ms) {
    if (exit_) return exit_;
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t w = waitpid(pid_, &st, WNOHANG);
        if (w == pid_) {
            exit_ = decode_status(st);
            return exit_;
        }
        if (mono_ms() > deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

bool Process::running() { return !wait(0).has_value(); }

std::optional<ReportLine> Process::wait_report(Report what, int timeout_ms) {
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        for (auto nl = buffer_.find('\n'); nl != std::string::npos; nl = buffer_.find('\n')) {
            auto line = parse_report(buffer_.substr(0, nl));
            buffer_.erase(0, nl + 1);
            if (line && line->what == what) return line;
        }
        int64_t left = deadline - mono_ms();
        if (left <= 0 || status_fd_ < 0) return std::nullopt;
        pollfd p{status_fd_, POLLIN, 0};
        if (poll(&p, 1, int(left)) <= 0) continue;
        char buf[512];
        ssize_t n = read(status_fd_, buf, sizeof buf);
        if (n == 0) return std::nullopt;  // the worker is gone
        if (n > 0) buffer_.append(buf, size_t(n));
    }
}

std::string Process::log() const { return read_file(log_path_); }

bool Process::log_shows(const std::string& text, int timeout_ms) const {
    return eventually([&] { return log().find(text) != std::string::npos; }, timeout_ms);
}

std::unique_ptr<Process> start_worker(const Env& env, int slot) {
    return std::make_unique<Process>(
        std::vector<std::string>{bin("sqlq-test-worker"), "-c", env.config(), "--slot", std::to_string(slot)},
        std::map<std::string, std::string>{}, /*status_pipe=*/true);
}

Result supervisor(const Env& env, std::vector<std::string> args) {
    std::vector<std::string> argv = {bin("sqlq-supervisor")};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("-c");
    argv.push_back(env.config());
    return run(argv, "", 120000);
}

Fleet::Fleet(const Env& env, bool must_start) : env_(env) {
    start_result = supervisor(env, {"start"});
    if (must_start && start_result.code != 0)
        throw std::runtime_error("sqlq-supervisor start failed (" + std::to_string(start_result.code) +
                                 "): " + start_result.err);
    stopped_ = start_result.code != 0;
}

Fleet::~Fleet() {
    if (stopped_) return;
    pid_t sup = 0;
    try {
        sup = pid();
    } catch (...) {
    }
    auto r = supervisor(env_, {"stop"});
    if (r.code != 0 && sup > 0) kill(sup, SIGKILL);
}

Result Fleet::stop() {
    stopped_ = true;
    return supervisor(env_, {"stop"});
}

nlohmann::json Fleet::status() const {
    auto r = supervisor(env_, {"status", "--json"});
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded()) throw std::runtime_error("sqlq-supervisor status: " + std::to_string(r.code) + " " + r.err);
    return j;
}

pid_t Fleet::pid() const { return status()["pid"].get<pid_t>(); }

pid_t Fleet::worker_of(int64_t task) const {
    auto st = status();
    if (std::getenv("SQLQ_TEST_DEBUG")) fprintf(stderr, "status: %s\n", st.dump().c_str());
    for (const auto& w : st["workers"])
        if (w.contains("task") && w["task"].is_number() && w["task"].get<int64_t>() == task && w["pid"].is_number())
            return w["pid"].get<pid_t>();
    return 0;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string supervisor_log(const Env& env) { return read_file(env.cfg().supervisor.run_dir + "/supervisor.log"); }

bool supervisor_log_shows(const Env& env, const std::string& text, int timeout_ms) {
    return eventually([&] { return supervisor_log(env).find(text) != std::string::npos; }, timeout_ms);
}

bool eventually(const std::function<bool()>& pred, int timeout_ms) {
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        if (pred()) return true;
        if (mono_ms() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

nlohmann::json show(const Env& env, int64_t id) {
    auto r = cli(env, {"show", std::to_string(id), "--json"});
    if (r.code != 0) throw std::runtime_error("sqlq show " + std::to_string(id) + ": " + r.err);
    return nlohmann::json::parse(r.out);
}

nlohmann::json audit(const Env& env) {
    auto r = cli(env, {"audit", "--json"});
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded()) throw std::runtime_error("sqlq audit: " + r.err);
    j["exit_code"] = r.code;
    return j;
}

int64_t submit(const Env& env, const std::string& sql) {
    auto r = cli(env, {"submit", sql});
    if (r.code != 0) throw std::runtime_error("sqlq submit: " + r.err);
    return std::stoll(r.out);
}

std::vector<int64_t> submit_batch(const Env& env, const std::vector<std::string>& sqls) {
    std::string input;
    for (auto& s : sqls) input += s + "\n";
    auto r = cli(env, {"submit", "--batch", "-"}, input);
    if (r.code != 0) throw std::runtime_error("sqlq submit --batch: " + r.err);
    std::vector<int64_t> ids;
    std::istringstream in(r.out);
    for (int64_t id; in >> id;) ids.push_back(id);
    return ids;
}

uint32_t queue_depth(const Env& env, const std::string& queue) {
    amqp::Connection c(env.cfg().broker, "sqlq test");
    auto info = c.inspect(queue.empty() ? env.cfg().broker.queue : queue);
    c.close();
    return info.messages;
}

void publish_raw(const Env& env, const std::string& body) {
    amqp::Connection c(env.cfg().broker, "sqlq test");
    c.declare_topology();
    c.enable_confirms();
    uint64_t tag = c.publish(env.cfg().broker.queue, body);
    if (!c.wait_confirms(tag, tag, 10000).count(tag)) throw std::runtime_error("publish not confirmed");
    c.close();
}

std::string slow_query(int ms) {
    // The fastest of three runs: a run slowed by a moment of load on the machine (CI builds
    // beside the tests) made every "3 s" query of the process run in well under a second once
    // the load was gone, and tests that need it still running saw it end.
    static const double per_ms = [] {
        sqlite3* db = nullptr;
        sqlite3_open(":memory:", &db);
        const char* q = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 300000) "
                        "SELECT count(*) FROM c";
        double fastest = 1e9;
        for (int i = 0; i < 3; ++i) {
            auto t0 = std::chrono::steady_clock::now();
            sqlite3_exec(db, q, nullptr, nullptr, nullptr);
            fastest = std::min(fastest,
                               std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        sqlite3_close(db);
        return 300000.0 / std::max(fastest, 1.0);
    }();
    int64_t n = std::max<int64_t>(1000, int64_t(per_ms * ms));
    return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < " + std::to_string(n) +
           ") SELECT count(*) FROM c";
}

}  // namespace sqlq::test
