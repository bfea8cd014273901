#include "supervisor/commands.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <iostream>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "amqp/connection.h"
#include "config/config.h"
#include "supervisor/broker_node.h"
#include "supervisor/launch.h"
#include "supervisor/supervisor.h"
#include "task/store.h"
#include "util/cli.h"
#include "util/clock.h"
#include "util/control.h"
#include "util/error.h"
#include "util/files.h"
#include "util/log.h"
#include "util/table.h"

namespace sqlq::supervisor {

namespace fs = std::filesystem;
using nlohmann::json;

// --- the lock ---

RunLock::RunLock(const std::string& run_dir) {
    const std::string p = path(run_dir);
    fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) throw Error(p + ": cannot open the lock file: " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[32] = {};
        ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
        ::close(fd_);
        fd_ = -1;
        if (e != EWOULDBLOCK) throw Error(p + ": cannot lock: " + std::strerror(e));
        std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
        while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
        throw Error("already running in " + run_dir + (pid.empty() ? "" : " (pid " + pid + ")") +
                        "; use `sqlq-supervisor status` or `stop`",
                    kExitConflict);
    }
}

RunLock::~RunLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
}

void RunLock::write_pid(pid_t pid) {
    std::string s = std::to_string(pid) + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, s.data(), s.size(), 0) < 0)
        spdlog::warn("cannot write the pid into {}: {}", path(""), std::strerror(errno));
}

bool RunLock::held(const std::string& run_dir) {
    int fd = ::open(path(run_dir).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool busy = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    ::close(fd);
    return busy;
}

namespace {

Config load(const std::string& config_opt) { return find_and_load_config(config_opt); }

// What start checks itself before any worker exists, so that the reason of a failure is one
// clear line instead of N workers backing off. A broker that answers too slowly (a loaded node, a
// quorum queue's leader being elected) is asked again until start_timeout_ms has passed, each
// time on a fresh connection; a broker that refuses (nothing listening, login, arguments) is the
// one clear line at once.
void preflight(const Config& cfg) {
    const int64_t deadline = mono_ms() + cfg.supervisor.start_timeout_ms;
    for (int64_t pause_ms = 200;; pause_ms = std::min<int64_t>(pause_ms * 2, 2000)) {
        try {
            amqp::Connection conn(cfg.broker, "sqlq-supervisor start");
            conn.declare_topology();
            conn.close();
            break;
        } catch (const amqp::AmqpError& e) {
            if (e.kind() != amqp::AmqpError::Kind::timeout) throw;
            const int64_t left = deadline - mono_ms();
            if (left <= pause_ms)
                throw Error(std::string(e.what()) + " (still, after asking until [supervisor] start_timeout_ms = " +
                            std::to_string(cfg.supervisor.start_timeout_ms) + " ms)");
            std::cerr << "sqlq-supervisor: " << e.what() << "; asking again (until [supervisor] start_timeout_ms, "
                      << left / 1000 << " s left)" << std::endl;
            ::usleep(static_cast<useconds_t>(pause_ms * 1000));
        }
    }
    open_store(cfg.store);  // creates and migrates the schema once
}

// RabbitMQ closes the channel of a delivery left unacked longer than its consumer_timeout. No AMQP
// frame carries its value (the connection.start properties do not, and the management API is not
// assumed): with [broker] node set, start asks the node (rabbitmqctl eval, about 1.3 s); without,
// it compares with the default of RabbitMQ 3.8.17 and later, and says so.
constexpr int64_t kDefaultConsumerTimeoutMs = 30 * 60 * 1000;
constexpr int64_t kAskNodeTimeoutMs = 5000;

std::string consumer_timeout_warning(const Config& cfg) {
    const std::string timeout = "[query] timeout_ms = " + std::to_string(cfg.query.timeout_ms) + " ms";
    const std::string consequence =
        ": the broker takes back the delivery of a query that runs that long, and another worker waits for it "
        "until it ends (docs/operations.md, \"Timeouts that must fit together\")";
    if (cfg.broker.node.empty()) {
        if (cfg.query.timeout_ms < kDefaultConsumerTimeoutMs) return {};
        return timeout + " is not below RabbitMQ's default consumer_timeout (" +
               std::to_string(kDefaultConsumerTimeoutMs) + " ms, 30 min)" + consequence +
               " ([broker] node is not set, so the broker's own value was not read: set it to the node's name to "
               "compare with that instead)";
    }
    const ConsumerTimeout node = read_consumer_timeout(cfg.broker.node, kAskNodeTimeoutMs);
    switch (node.kind) {
    case ConsumerTimeout::Kind::disabled: return {};
    case ConsumerTimeout::Kind::unknown:
        return "cannot ask broker node " + cfg.broker.node + " ([broker] node) for its consumer_timeout: " + node.why +
               "; " + timeout + " is not checked against it";
    case ConsumerTimeout::Kind::set: break;
    }
    if (cfg.query.timeout_ms < node.ms) return {};
    return timeout + " is not below the consumer_timeout of broker node " + cfg.broker.node + " (" +
           std::to_string(node.ms) + " ms)" + consequence + "; raise consumer_timeout above it (rabbitmq.conf) or "
           "lower timeout_ms";
}

// On a task store shared by hosts (PostgreSQL), a worker of this host is a remote owner for the
// others: they take its task over once its lease has run out, while this host's supervisor kills
// a silent (wedged, paused) worker only after watchdog_ms. A running worker renews its lease every
// third of it, so a worker that falls silent has at least two thirds of its lease left; that must
// outlast the watchdog, the kill, and the second a PostgreSQL target's statement may outlive its
// worker (client_connection_check_interval): lease_ms >= 1.5 * (watchdog_ms + 2000).
int64_t shared_lease_floor_ms(const Config& cfg) { return (cfg.supervisor.watchdog_ms + 2000) * 3 / 2; }

std::string shared_lease_warning(const Config& cfg) {
    if (cfg.store.url.empty()) return {};
    const int64_t floor = shared_lease_floor_ms(cfg);
    if (cfg.store.lease_ms >= floor) return {};
    const int64_t window = cfg.supervisor.watchdog_ms - cfg.store.lease_ms * 2 / 3 + 1000;
    return "[store] lease_ms = " + std::to_string(cfg.store.lease_ms) +
           " ms is shorter than what this host's supervisor enforces on a store shared by hosts ([supervisor] "
           "watchdog_ms = " + std::to_string(cfg.supervisor.watchdog_ms) +
           " ms): another host may take over the task of a silent (wedged) worker here while it still runs, for up "
           "to about " + std::to_string(window) + " ms; lease_ms >= " + std::to_string(floor) +
           " closes that window (a host that vanishes whole then keeps its tasks that long; docs/reliability.md)";
}

std::string log_file(const Config& cfg) {
    return cfg.supervisor.log_file.empty() ? cfg.supervisor.run_dir + "/supervisor.log" : cfg.supervisor.log_file;
}

// Detaches the caller's stdio: stdin from /dev/null, stdout and stderr to the log file.
void redirect_stdio(const std::string& log) {
    int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    create_private_file(log);
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (in >= 0) ::dup2(in, 0);
    if (out >= 0) {
        ::dup2(out, 1);
        ::dup2(out, 2);
    }
    if (in > 2) ::close(in);
    if (out > 2) ::close(out);
}

std::string read_all(int fd) {
    std::string s;
    char buf[1024];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        s.append(buf, static_cast<size_t>(n));
    }
    return s;
}

std::optional<control::Reply> request(const Config& cfg, const control::Request& req) {
    return control_request(cfg.supervisor.run_dir, req);
}

int not_running(const Config& cfg, Format format) {
    return report_error("sqlq-supervisor", "not running (run dir " + cfg.supervisor.run_dir + ")", kExitNotRunning,
                        format == Format::json);
}

// The config for `status`, which must work while the file has an error (that is when an operator
// edits it and wants to see the fleet): then the run directory comes from a best-effort read of
// the file, and `problem` says what is wrong. A file that cannot be read at all still fails.
Config load_for_status(const std::string& config_opt, std::string& problem) {
    try {
        return load(config_opt);
    } catch (const Error& e) {
        if (e.exit_code() != kExitUsage) throw;
        const std::string path = config_path(config_opt);
        auto run_dir = best_effort_run_dir(path);
        if (!run_dir) throw;
        problem = e.what();
        Config c;
        c.file = fs::absolute(path).lexically_normal().string();
        c.supervisor.run_dir = *run_dir;
        return c;
    }
}

const control::Reply& must_ok(const control::Reply& reply) {
    if (!reply.ok) throw Error("the supervisor refused: " + reply.error);
    return reply;
}

std::string dash_or(const json& v, const std::function<std::string(const json&)>& f) {
    return v.is_null() ? "-" : f(v);
}

// The queue and the tasks are read here, by the client: the supervisor's loop never waits on
// the broker or the database for a status.
void read_queue_and_tasks(const Config& cfg, json& st) {
    try {
        BrokerConfig b = cfg.broker;
        b.connect_timeout_ms = std::min(b.connect_timeout_ms, 3000);
        amqp::Connection conn(b, "sqlq-supervisor status");
        auto q = conn.inspect(b.queue);
        st["queue"] = {{"name", b.queue}, {"messages", q.messages}, {"consumers", q.consumers}};
        conn.close();
    } catch (const Error& e) {
        st["queue"] = {{"name", cfg.broker.queue}, {"error", e.what()}};
    }
    try {
        auto store = open_store(cfg.store);
        st["tasks"] = store->counts();
    } catch (const Error& e) {
        st["tasks"] = {{"error", e.what()}};
    }
}

}  // namespace

// --- start ---

int cmd_start(const std::string& config_opt, Attach attach, Format format) {
    const bool foreground = attach == Attach::foreground;
    Config cfg = load(config_opt);
    // The run dir holds the control socket, the lock and the log (which has users' queries in
    // it): private to the fleet's user, whatever the umask.
    if (auto ec = create_private_dirs(cfg.supervisor.run_dir))
        throw Error(cfg.supervisor.run_dir + ": cannot create the run directory: " + ec.message());
    RunLock lock(cfg.supervisor.run_dir);
    RunOptions opts;
    opts.foreground = foreground;
    opts.worker = find_worker(cfg.supervisor.worker_path);
    if (cfg.web.enabled) opts.web = find_program("sqlq-web", "web", " ([web] enabled = true)");
    preflight(cfg);
    for (const auto& w : {consumer_timeout_warning(cfg), shared_lease_warning(cfg)})
        if (!w.empty()) std::cerr << "sqlq-supervisor: warning: " << w << "\n";

    if (foreground) {
        lock.write_pid(::getpid());
        opts.log_file = cfg.supervisor.log_file;
        init_log("sqlq-supervisor", opts.log_file);
        Supervisor sup(cfg, opts);
        return sup.run();
    }

    // Background: the child runs the loop and tells us through a pipe when the fleet is ready
    // (or why it is not); we print that and leave. The lock is shared with the child through
    // the inherited file description and stays held after we exit.
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw Error(std::string("pipe: ") + std::strerror(errno));
    const std::string log = log_file(cfg);
    pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        ::close(p[0]);
        ::setsid();
        redirect_stdio(log);
        int code = kExitError;
        try {
            lock.write_pid(::getpid());
            opts.log_file = log;
            init_log("sqlq-supervisor", log);
            opts.ready_fd = p[1];
            Supervisor sup(cfg, opts);
            code = sup.run();
        } catch (const std::exception& e) {
            std::string msg = std::string("error ") + e.what() + "\n";
            ssize_t n = ::write(p[1], msg.data(), msg.size());
            (void)n;
            spdlog::error("{}", e.what());
        }
        std::fflush(nullptr);
        ::_exit(code);
    }
    ::close(p[1]);
    std::string answer = read_all(p[0]);
    ::close(p[0]);
    while (!answer.empty() && answer.back() == '\n') answer.pop_back();
    if (answer.rfind("ok ", 0) == 0) {
        if (format == Format::json)
            std::cout << json{{"started", true}, {"pid", std::stoll(answer.substr(3))},
                              {"workers", cfg.supervisor.workers}, {"log", log}}.dump() << "\n";
        else
            std::cout << "sqlq-supervisor: started, pid " << answer.substr(3) << ", " << cfg.supervisor.workers
                      << " workers ready (log " << log << ")\n";
        return kExitOk;
    }
    // A failed start reports before the child has stopped what it started (workers, the control
    // socket): wait for it to exit, so "start failed" means nothing of it is left running.
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    if (answer.rfind("error ", 0) == 0) throw Error(answer.substr(6) + " (log " + log + ")");
    throw Error("the supervisor exited during its start; see " + log);
}

// --- status ---

int cmd_status(const std::string& config_opt, StatusFormat format) {
    const bool as_json = format == StatusFormat::json;
    std::string config_problem;
    Config cfg = load_for_status(config_opt, config_problem);
    if (!config_problem.empty() && !as_json)
        std::cerr << "sqlq-supervisor: warning: " << config_problem << " (status read from run dir "
                  << cfg.supervisor.run_dir << "; `reload` would refuse this file)\n";
    auto reply = request(cfg, control::Request::status());
    if (!reply) {
        if (as_json) {
            json j{{"running", false}, {"run_dir", cfg.supervisor.run_dir}, {"alive", 0}};
            if (!config_problem.empty()) j["config_error"] = config_problem;
            std::cout << j.dump() << "\n";
        } else {
            not_running(cfg, format);
        }
        return kExitNotRunning;
    }
    json st = must_ok(*reply).status();
    st["running"] = true;
    if (!config_problem.empty()) {
        // The broker and store settings of a broken file cannot be trusted: leave them out.
        st["config_error"] = config_problem;
        const std::string why = "not read: the config file has an error";
        st["queue"] = {{"name", "-"}, {"error", why}};
        st["tasks"] = {{"error", why}};
    }
    if (config_problem.empty()) read_queue_and_tasks(cfg, st);
    if (as_json) {
        std::cout << st.dump() << "\n";
        return kExitOk;
    }

    std::cout << "sqlq-supervisor " << st.value("phase", std::string()) << ", pid " << st["pid"] << ", up "
              << format_duration(st.value("uptime_ms", int64_t(0))) << "\n";
    std::cout << "config  " << st.value("config", std::string()) << "\n";
    std::cout << "broker  " << st.value("broker", std::string()) << "\n";
    std::cout << "workers " << st["ready"] << " of " << st["target"] << " ready, " << st["alive"] << " processes\n";
    if (st.contains("web")) {
        // sqlq-web, kept by the supervisor: "web     running, pid 812, up 3m, 127.0.0.1:8080, 1 restart"
        const json& w = st["web"];
        std::cout << "web     " << w.value("state", std::string()) << ", "
                  << (w["pid"].is_null() ? std::string("no process") : "pid " + std::to_string(w["pid"].get<int64_t>()));
        if (!w["uptime_ms"].is_null()) std::cout << ", up " << format_duration(w["uptime_ms"].get<int64_t>());
        std::cout << ", " << w.value("listen", std::string()) << ", " << w.value("restarts", int64_t(0)) << " restarts";
        if (!w["last_exit"].is_null()) std::cout << ", last exit " << w["last_exit"].get<std::string>();
        if (w.contains("retry_in_ms"))
            std::cout << "; " << w.value("failed_starts", 0) << " failed starts, retry in "
                      << format_duration(w["retry_in_ms"].get<int64_t>())
                      << (w.contains("last_error") ? ": " + w["last_error"].get<std::string>() : "");
        std::cout << "\n";
    }
    const json& q = st["queue"];
    if (q.contains("error")) std::cout << "queue   " << q["name"].get<std::string>() << ": " << q["error"].get<std::string>() << "\n";
    else
        std::cout << "queue   " << q["name"].get<std::string>() << ": " << q["messages"] << " waiting, " << q["consumers"]
                  << " consumers\n";
    const json& t = st["tasks"];
    if (t.contains("error")) std::cout << "tasks   " << t["error"].get<std::string>() << "\n";
    else {
        std::cout << "tasks  ";
        for (const char* s : {"queued", "running", "succeeded", "failed", "cancelled"})
            std::cout << " " << s << " " << t.value(s, int64_t(0));
        std::cout << "\n";
    }
    std::cout << "\n";
    std::vector<std::vector<std::string>> rows;
    auto num = [](const json& v) { return std::to_string(v.get<int64_t>()); };
    auto dur = [](const json& v) { return format_duration(v.get<int64_t>()); };
    for (const json& w : st["workers"]) {
        std::string state = w["state"].get<std::string>();
        if (w.contains("waiting_on")) state += " on the " + w["waiting_on"].get<std::string>();
        if (w.contains("waiting_for")) state += " for task " + num(w["waiting_for"]);
        if (w.value("retiring", false)) state += " (retiring)";
        std::string exit = dash_or(w["last_exit"], [](const json& v) { return v.get<std::string>(); });
        if (w.contains("retry_in_ms"))
            exit += "; " + std::to_string(w["failed_starts"].get<int>()) + " failed starts, retry in " +
                    format_duration(w["retry_in_ms"].get<int64_t>()) +
                    (w.contains("last_error") ? ": " + w["last_error"].get<std::string>() : "");
        rows.push_back({num(w["slot"]), dash_or(w["pid"], num), state, dash_or(w["task"], num), dash_or(w["task_ms"], dur),
                        dash_or(w["uptime_ms"], dur), std::to_string(w["restarts"].get<int>()), exit});
    }
    std::cout << format_table({"SLOT", "PID", "STATE", "TASK", "TASK TIME", "UPTIME", "RESTARTS", "LAST EXIT"}, rows);
    return kExitOk;
}

// --- stop, reload, restart ---

int cmd_stop(const std::string& config_opt, Format format) {
    Config cfg = load(config_opt);
    auto reply = request(cfg, control::Request::stop());
    if (!reply) {
        // Stopping what is not running succeeds (LSB), but says so.
        if (format == Format::json)
            std::cout << json{{"stopped", false}, {"running", false}, {"run_dir", cfg.supervisor.run_dir}}.dump() << "\n";
        else
            std::cerr << "sqlq-supervisor: not running (run dir " << cfg.supervisor.run_dir << ")\n";
        return kExitOk;
    }
    must_ok(*reply);
    // Busy workers may take stop_timeout_ms to finish, then are killed; the supervisor exits
    // after it has reaped them all, which frees the lock.
    const int64_t deadline = mono_ms() + cfg.supervisor.stop_timeout_ms + 30000;
    while (RunLock::held(cfg.supervisor.run_dir)) {
        if (mono_ms() > deadline) throw Error("the supervisor is still stopping after " +
                                              std::to_string(cfg.supervisor.stop_timeout_ms + 30000) + " ms");
        ::usleep(20 * 1000);
    }
    if (format == Format::json) std::cout << json{{"stopped", true}}.dump() << "\n";
    else std::cout << "sqlq-supervisor: stopped\n";
    return kExitOk;
}

int cmd_reload(const std::string& config_opt, Format format) {
    Config cfg = load(config_opt);
    auto reply = request(cfg, control::Request::reload());
    if (!reply) return not_running(cfg, format);
    if (!reply->ok) throw Error("reload refused: " + reply->error, kExitUsage);
    if (format == Format::json) std::cout << json{{"reloaded", true}, {"target", reply->target()}}.dump() << "\n";
    else std::cout << "sqlq-supervisor: reloaded, " << reply->target() << " workers wanted\n";
    return kExitOk;
}

int cmd_restart(const std::string& config_opt, std::optional<int> slot, Format format) {
    Config cfg = load(config_opt);
    auto reply = request(cfg, control::Request::restart(slot));
    if (!reply) return not_running(cfg, format);
    if (!reply->ok) throw Error("restart refused: " + reply->error, kExitUsage);
    if (format == Format::json)
        std::cout << json{{"restarting", true}, {"slot", slot ? json(*slot) : json(nullptr)}}.dump() << "\n";
    else
        std::cout << "sqlq-supervisor: restarting "
                  << (slot ? "slot " + std::to_string(*slot) : "every slot, one at a time") << "\n";
    return kExitOk;
}

}  // namespace sqlq::supervisor
