// The supervisor's promises on real parts: a RabbitMQ node, the real sqlq-supervisor,
// sqlq-worker and sqlq binaries, real kills.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/harness.h"
#include "task/store.h"
#include "util/clock.h"
#include "util/process.h"

using namespace sqlq;
using namespace sqlq::test;
using nlohmann::json;

namespace {
constexpr int kReady = 20000;

// Every wanted slot consuming, as many processes as slots, and the broker agrees.
bool fleet_ready(const Fleet& f, int n) {
    auto st = f.status();
    if (st.value("alive", -1) != n || st.value("ready", -1) != n || int(st["workers"].size()) != n) return false;
    return st["queue"].value("consumers", -1) == n;
}

std::set<pid_t> worker_pids(const json& st) {
    std::set<pid_t> pids;
    for (const auto& w : st["workers"])
        if (w["pid"].is_number()) pids.insert(w["pid"].get<pid_t>());
    return pids;
}

// Polls status as fast as it answers until `n` slots are ready with a pid not in `old` (the pids
// before the kill) and the fleet is complete again; returns the elapsed milliseconds, or -1.
int64_t ms_until_replaced(const Fleet& f, const std::set<pid_t>& old, int n, int64_t since) {
    for (;;) {
        auto st = f.status();
        int fresh = 0;
        for (const auto& w : st["workers"])
            if (w["state"] == "ready" && w["pid"].is_number() && !old.count(w["pid"].get<pid_t>())) ++fresh;
        if (fresh == n && st["ready"] == st["target"]) return mono_ms() - since;
        if (mono_ms() - since > kReady) return -1;
    }
}



// Changes the broker password in the config file (the harness writes the URL itself).
void set_password(const Env& env, const std::string& from, const std::string& to) {
    std::string text = read_file(env.config());
    auto at = text.find("guest:" + from + "@");
    REQUIRE(at != std::string::npos);
    text.replace(at, 6 + from.size(), "guest:" + to);
    std::ofstream(env.config()) << text;
}

// Whether nobody holds the run directory's lock.
bool lock_free(const Env& env) {
    int fd = ::open((env.cfg().supervisor.run_dir + "/supervisor.lock").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return true;
    bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    ::close(fd);
    return free;
}

// Whether a process (by pid and start time) is still there; zombies count as gone.
bool gone(pid_t pid, uint64_t start) { return !process_alive(pid, start); }
}  // namespace

TEST_CASE("start returns once every worker is ready, and status shows the fleet", "[supervisor][start]") {
    Setup s;
    s.workers = 3;
    Env env(s);
    Fleet f(env);
    CHECK(f.start_result.out.find("3 workers ready") != std::string::npos);
    auto st = f.status();
    INFO(st.dump());
    CHECK(st["running"] == true);
    CHECK(st["target"] == 3);
    CHECK(st["alive"] == 3);
    REQUIRE(st["workers"].size() == 3);
    for (const auto& w : st["workers"]) {
        CHECK(w["state"] == "ready");
        CHECK(w["pid"].is_number());
        CHECK(w["restarts"] == 0);
        CHECK(w["task"].is_null());
    }
    CHECK(st["queue"]["consumers"] == 3);
    CHECK(st["tasks"]["queued"] == 0);
    CHECK(st["broker"].get<std::string>().find(":***@") != std::string::npos);
    // The run directory and what is in it are the fleet user's alone (the test runs at umask 022).
    auto mode = [](const std::string& p) {
        struct stat sb {};
        REQUIRE(::stat(p.c_str(), &sb) == 0);
        return sb.st_mode & 07777;
    };
    const std::string run = env.cfg().supervisor.run_dir;
    CHECK(mode(run) == 0700);
    CHECK(mode(run + "/supervisor.lock") == 0600);
    CHECK(mode(run + "/supervisor.log") == 0600);
    CHECK(mode(run + "/control.sock") == 0600);

    SECTION("the human table has one row per slot and no password") {
        auto r = supervisor(env, {"status"});
        CHECK(r.code == 0);
        CHECK(r.out.find("SLOT") != std::string::npos);
        CHECK(r.out.find("3 of 3 ready") != std::string::npos);
        CHECK(r.out.find("guest:guest") == std::string::npos);
    }
    SECTION("the control socket is its owner's only") {
        struct stat sb {};
        REQUIRE(::stat((env.cfg().supervisor.run_dir + "/control.sock").c_str(), &sb) == 0);
        CHECK((sb.st_mode & 0777) == 0600);
    }
    SECTION("a second start on the same run directory is refused, naming the first") {
        auto r = supervisor(env, {"start"});
        CHECK(r.code == 5);
        CHECK(r.err.find("already running in " + env.cfg().supervisor.run_dir + " (pid " +
                         std::to_string(st["pid"].get<int>()) + ")") != std::string::npos);
        CHECK(f.status()["alive"] == 3);  // the first one is untouched
    }
    SECTION("stop returns once everything is gone; status then says not running") {
        auto pids = worker_pids(st);
        auto r = f.stop();
        CHECK(r.code == 0);
        auto after = supervisor(env, {"status"});
        CHECK(after.code == 3);
        CHECK(after.err.find("not running") != std::string::npos);
        for (pid_t p : pids) CHECK(::kill(p, 0) != 0);
    }
}

TEST_CASE("start fails with the reason, and leaves nothing running", "[supervisor][start]") {
    Env env;
    SECTION("wrong broker password") {
        set_password(env, "guest", "secret-pw-7");
        auto r = supervisor(env, {"start"});
        CHECK(r.code == 1);
        CHECK(r.err.find("login refused") != std::string::npos);
        CHECK(r.err.find("secret-pw-7") == std::string::npos);
        CHECK(supervisor(env, {"status"}).code == 3);
    }
    SECTION("broker unreachable") {
        std::string text = read_file(env.config());
        auto at = text.find(":" + std::to_string(broker_port()));
        REQUIRE(at != std::string::npos);
        text.replace(at, 1 + std::to_string(broker_port()).size(), ":1");
        std::ofstream(env.config()) << text;
        auto r = supervisor(env, {"start"});
        CHECK(r.code == 1);
        CHECK(r.err.find("broker 127.0.0.1:1: cannot connect") != std::string::npos);
        CHECK(supervisor(env, {"status"}).code == 3);
    }
    SECTION("bad config") {
        std::ofstream(env.config(), std::ios::app) << "[supervisor]\nbogus = 1\n";
        auto r = supervisor(env, {"start"});
        CHECK(r.code == 2);
        CHECK(r.err.find("sqlq.conf:") != std::string::npos);
    }
    SECTION("every worker fails to start") {
        Setup s;
        s.sections["supervisor"] = "failed_starts_before_backoff = 2\n";
        env.rewrite(s);
        // A worker binary that exits at once: the broker check passes, the workers do not.
        std::string text = read_file(env.config());
        auto at = text.find(bin("sqlq-test-worker"));
        REQUIRE(at != std::string::npos);
        text.replace(at, bin("sqlq-test-worker").size(), "/bin/false");
        std::ofstream(env.config()) << text;
        auto r = supervisor(env, {"start"});
        CHECK(r.code == 1);
        CHECK(r.err.find("failed to start 2 times in a row (last exit 1") != std::string::npos);
        CHECK(supervisor(env, {"status"}).code == 3);
    }
    // Whatever the reason, the run directory is free again.
    CHECK(lock_free(env));
}

TEST_CASE("SIGKILLed workers are replaced at once: one, then all of them", "[supervisor][kill]") {
    Setup s;
    s.workers = 4;
    Env env(s);
    Fleet f(env);
    auto st = f.status();
    auto pids = worker_pids(st);
    REQUIRE(pids.size() == 4);

    pid_t victim = *pids.begin();
    int64_t t0 = mono_ms();
    REQUIRE(::kill(victim, SIGKILL) == 0);
    int64_t one = ms_until_replaced(f, pids, 1, t0);
    std::printf("supervisor: one worker SIGKILLed → replacement ready in %lld ms\n", (long long)one);
    REQUIRE(one >= 0);
    CHECK(eventually([&] { return fleet_ready(f, 4); }, kReady));

    pids = worker_pids(f.status());
    t0 = mono_ms();
    for (pid_t p : pids) ::kill(p, SIGKILL);
    int64_t all = ms_until_replaced(f, pids, 4, t0);
    std::printf("supervisor: all 4 workers SIGKILLed → all replacements ready in %lld ms\n", (long long)all);
    REQUIRE(all >= 0);
    CHECK(eventually([&] { return fleet_ready(f, 4); }, kReady));
    const auto after = f.status();  // kept: a range-for over a temporary's member dangles
    for (const auto& w : after["workers"]) {
        CHECK(w["last_exit"] == "signal 9 (KILL)");
        CHECK(w["state"] == "ready");
    }
    // Tasks run on the new fleet.
    int64_t id = submit(env, "SELECT count(*) FROM customers");
    CHECK(cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 0);
}

TEST_CASE("a worker binary that cannot be executed is a failed start with exit 127 or 126, in status and log",
          "[supervisor][launch]") {
    Setup s;
    s.workers = 1;
    s.sections["supervisor"] = "backoff_initial_ms = 200\nbackoff_max_ms = 1000\nfailed_starts_before_backoff = 2\n";
    Env env(s);
    // worker_path names a copy of the test worker, so the test can take it away under a running
    // fleet (start itself refuses a worker_path that is not an executable file).
    const std::string worker = env.dir() + "/sqlq-worker";
    std::filesystem::copy_file(bin("sqlq-test-worker"), worker);
    REQUIRE(::chmod(worker.c_str(), 0755) == 0);
    std::string text = read_file(env.config());
    auto at = text.find(bin("sqlq-test-worker"));
    REQUIRE(at != std::string::npos);
    text.replace(at, bin("sqlq-test-worker").size(), worker);
    std::ofstream(env.config()) << text;
    Fleet f(env);
    REQUIRE(fleet_ready(f, 1));

    std::string exit_code, errno_text;
    SECTION("missing: exit 127") {
        REQUIRE(::unlink(worker.c_str()) == 0);
        exit_code = "exit 127";
        errno_text = "errno " + std::to_string(ENOENT);
    }
    SECTION("not executable: exit 126") {
        REQUIRE(::chmod(worker.c_str(), 0644) == 0);
        exit_code = "exit 126";
        errno_text = "errno " + std::to_string(EACCES);
    }
    ::kill(f.status()["workers"][0]["pid"].get<pid_t>(), SIGKILL);
    // The child's line reaches the supervisor through the output pipe, which may be read after
    // its exit is: wait for both.
    const std::string said = "sqlq-supervisor: cannot execute " + worker + ": " + errno_text;
    json slot;
    const bool shown = eventually([&] {
        slot = f.status()["workers"][0];
        return slot["state"] == "backoff" && slot.value("last_error", "") == said;
    }, kReady);
    INFO(slot.dump());
    CHECK(shown);
    CHECK(slot["last_exit"] == exit_code);
    CHECK(slot["failed_starts"].get<int>() >= 2);
    CHECK(supervisor_log_shows(env, exit_code + " after", 5000));
    CHECK(supervisor_log_shows(env, said, 5000));
}

TEST_CASE("a launched worker has its own process group, the supervisor's signal mask, default dispositions and "
          "only its four fds",
          "[supervisor][launch]") {
    Setup s;
    s.workers = 1;
    Env env(s);
    // The supervisor is started with SIGUSR1 ignored and SIGUSR2 blocked (both inherited through
    // fork and exec): the worker must get the mask back and SIGUSR1's default disposition.
    sigset_t usr2, old_mask;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &usr2, &old_mask) == 0);
    auto old_usr1 = std::signal(SIGUSR1, SIG_IGN);
    std::string supervisor_mask;
    {
        std::ifstream st("/proc/thread-self/status");
        for (std::string line; std::getline(st, line);)
            if (line.rfind("SigBlk:", 0) == 0) supervisor_mask = line.substr(line.find_first_not_of(" \t", 7));
    }
    std::unique_ptr<Fleet> f;
    try {
        f = std::make_unique<Fleet>(env);
    } catch (...) {
        std::signal(SIGUSR1, old_usr1);
        ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
        throw;
    }
    std::signal(SIGUSR1, old_usr1);
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    REQUIRE(supervisor_mask != std::string(16, '0'));  // SIGUSR2 at least

    const int64_t id = submit(env, "SELECT sqlq_test_launch_state()");
    REQUIRE(cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 0);
    auto rows = json::parse(cli(env, {"result", std::to_string(id), "--format", "json"}).out)["rows"];
    REQUIRE(rows.size() == 1);
    const auto state = json::parse(rows[0][0].get<std::string>());
    INFO(state.dump());
    const pid_t sup = f->pid();
    const pid_t worker = f->status()["workers"][0]["pid"].get<pid_t>();
    CHECK(state["pid"] == worker);
    CHECK(state["ppid"] == sup);
    CHECK(state["pgid"] == worker);  // a group of its own: a ^C at the supervisor's terminal is not its
    CHECK(state["pgid"] != ::getpgid(sup));
    CHECK(state["pdeathsig"] == SIGKILL);
    CHECK(state["sigblk"] == supervisor_mask);
    CHECK(state["sigign"] == std::string(16, '0'));
    // stdin from /dev/null, stdout and stderr one pipe, the status pipe on 3, nothing else.
    const auto& fds = state["fds"];
    CHECK(fds.size() == 4);
    CHECK(fds.value("0", "") == "/dev/null");
    CHECK_THAT(fds.value("1", ""), Catch::StartsWith("pipe:["));
    CHECK(fds.value("2", "") == fds.value("1", ""));
    CHECK_THAT(fds.value("3", ""), Catch::StartsWith("pipe:["));
    CHECK(fds.value("3", "") != fds.value("1", ""));
}

TEST_CASE("a worker that cannot start backs off instead of spinning, and status shows it", "[supervisor][backoff]") {
    Setup s;
    s.workers = 2;
    s.sections["supervisor"] = "backoff_initial_ms = 200\nbackoff_max_ms = 1000\nfailed_starts_before_backoff = 3\n";
    Env env(s);
    Fleet f(env);
    // The password changes under a running fleet: new workers read the file, old ones are fine.
    set_password(env, "guest", "badpass123");
    pid_t victim = f.status()["workers"][0]["pid"].get<pid_t>();
    ::kill(victim, SIGKILL);
    json slot1;
    REQUIRE(eventually([&] {
        slot1 = f.status()["workers"][0];
        return slot1["state"] == "backoff";
    }, kReady));
    INFO(slot1.dump());
    CHECK(slot1["failed_starts"].get<int>() >= 3);
    CHECK(slot1["retry_in_ms"].get<int>() <= 1000);
    CHECK(slot1["last_error"].get<std::string>().find("login refused") != std::string::npos);
    CHECK(slot1["last_error"].get<std::string>().find("badpass123") == std::string::npos);
    // Not spinning: in 3 s a backoff of 200 → 400 → 800 → 1000 ms allows a handful of spawns.
    int before = slot1["restarts"].get<int>();
    ::usleep(3000 * 1000);
    auto st = f.status();
    int spawned = st["workers"][0]["restarts"].get<int>() - before;
    CHECK(spawned <= 5);
    CHECK(st["workers"][1]["state"] == "ready");  // the other slot is untouched
    auto table = supervisor(env, {"status"});
    CHECK(table.out.find("backoff") != std::string::npos);
    CHECK(table.out.find("login refused") != std::string::npos);
    CHECK(supervisor_log(env).find("slot 1: backoff") != std::string::npos);

    // Fixed, and an operator restart retries at once.
    set_password(env, "badpass123", "guest");
    REQUIRE(supervisor(env, {"restart", "1"}).code == 0);
    CHECK(eventually([&] { return fleet_ready(f, 2); }, kReady));
}

TEST_CASE("stop while queries run: every task ends terminal after the next start, none lost, none run twice",
          "[supervisor][stop]") {
    Setup s;
    s.workers = 2;
    const bool kill_them = GENERATE(true, false);
    // Either the busy workers outlast stop_timeout_ms and are killed, or they finish in time.
    s.sections["supervisor"] = kill_them ? "stop_timeout_ms = 300\n" : "stop_timeout_ms = 20000\n";
    Env env(s);
    std::vector<int64_t> ids;
    {
        Fleet f(env);
        // The two that run first: when they must outlast stop_timeout_ms, a hang of fixed length
        // (slow_query is calibrated once per process, and one calibrated while the machine was busy
        // runs shorter than asked once it is not: the sanitizer CI saw both end inside the 300 ms).
        for (int i = 0; i < 6; ++i)
            ids.push_back(submit(env, kill_them && i < 2 ? "SELECT sqlq_test_hang(4000)" : slow_query(1500)));
        REQUIRE(eventually([&] { return f.status()["tasks"]["running"] == 2; }, kReady));
        auto r = f.stop();
        REQUIRE(r.code == 0);
        CHECK(supervisor(env, {"status"}).code == 3);
        if (kill_them) CHECK(supervisor_log(env).find("SIGKILL") != std::string::npos);
    }
    Fleet again(env);
    for (int64_t id : ids) {
        INFO("task " << id);
        CHECK(cli(env, {"wait", std::to_string(id), "--timeout", "60"}).code == 0);
        auto t = show(env, id);
        CHECK(t["outcomes"] == 1);
    }
    CHECK(eventually([&] { return queue_depth(env) == 0; }, 10000));
    auto a = audit(env);
    CHECK(a["lost"] == 0);
    CHECK(a["succeeded"] == 6);
}

TEST_CASE("reload converges 4 → 8 → 2 without touching healthy workers", "[supervisor][reload]") {
    Setup s;
    s.workers = 4;
    Env env(s);
    Fleet f(env);
    auto first = worker_pids(f.status());

    s.workers = 8;
    env.rewrite(s);
    auto r = supervisor(env, {"reload"});
    CHECK(r.code == 0);
    REQUIRE(eventually([&] { return fleet_ready(f, 8); }, kReady));
    auto eight = worker_pids(f.status());
    for (pid_t p : first) CHECK(eight.count(p));

    // SIGHUP does the same.
    s.workers = 2;
    env.rewrite(s);
    ::kill(f.pid(), SIGHUP);
    REQUIRE(eventually([&] { return fleet_ready(f, 2); }, kReady));
    auto st = f.status();
    CHECK(st["workers"][0]["slot"] == 1);
    CHECK(st["workers"][1]["slot"] == 2);
    for (pid_t p : worker_pids(st)) CHECK(first.count(p));  // the survivors are the first ones
    CHECK(supervisor_log(env).find("reload: workers 4 → 8") != std::string::npos);
    CHECK(supervisor_log(env).find("reload: workers 8 → 2") != std::string::npos);

    SECTION("a broken config is refused and the fleet keeps running") {
        pid_t pid = f.pid();
        std::ofstream(env.config(), std::ios::app) << "[query]\nmax_rows = -5\n";
        auto bad = supervisor(env, {"reload"});
        CHECK(bad.code == 2);
        CHECK(bad.err.find("sqlq.conf:") != std::string::npos);
        ::kill(pid, SIGHUP);  // the supervisor reads it itself too, and refuses it
        CHECK(supervisor_log_shows(env, "reload refused, keeping the running config", 5000));
        env.rewrite(s);  // the status command reads the config too
        CHECK(fleet_ready(f, 2));
    }
}

TEST_CASE("restart replaces every worker, one slot at a time", "[supervisor][restart]") {
    Setup s;
    s.workers = 3;
    Env env(s);
    Fleet f(env);
    auto first = worker_pids(f.status());
    REQUIRE(supervisor(env, {"restart"}).code == 0);
    REQUIRE(eventually([&] {
        auto now = worker_pids(f.status());
        for (pid_t p : now)
            if (first.count(p)) return false;
        return fleet_ready(f, 3);
    }, kReady));
    CHECK(supervisor(env, {"restart", "9"}).code == 2);
}

TEST_CASE("SIGKILL the supervisor: no worker survives it, and the next start recovers every task",
          "[supervisor][orphans]") {
    Setup s;
    s.workers = 2;
    Env env(s);
    std::vector<int64_t> ids;
    std::vector<std::pair<pid_t, uint64_t>> workers;
    {
        Fleet f(env);
        for (int i = 0; i < 4; ++i) ids.push_back(submit(env, slow_query(1500)));
        REQUIRE(eventually([&] { return f.status()["tasks"]["running"] == 2; }, kReady));
        for (pid_t p : worker_pids(f.status())) workers.emplace_back(p, process_start_time(p));
        ::kill(f.pid(), SIGKILL);
        for (const auto& w : workers) {
            INFO("worker " << w.first);
            CHECK(eventually([&] { return gone(w.first, w.second); }, 5000));
        }
        CHECK(supervisor(env, {"status"}).code == 3);
    }
    Fleet again(env);
    for (int64_t id : ids) {
        INFO("task " << id);
        CHECK(cli(env, {"wait", std::to_string(id), "--timeout", "60"}).code == 0);
        CHECK(show(env, id)["outcomes"] == 1);
    }
    auto a = audit(env);
    CHECK(a["lost"] == 0);
}

TEST_CASE("a task inserted but never published is picked up by the sweeper", "[supervisor][sweeper]") {
    Setup s;
    s.workers = 1;
    s.sections["supervisor"] = "sweep_interval_ms = 200\nrepublish_after_ms = 500\n";
    Env env(s);
    Fleet f(env);
    int64_t id = 0;
    {
        // A producer that crashed between its insert and its publish.
        auto store = open_store(env.cfg().store);
        id = store->insert("SELECT count(*) FROM orders", "crashed-producer");
    }
    CHECK(cli(env, {"wait", std::to_string(id), "--timeout", "20"}).code == 0);
    auto t = show(env, id);
    CHECK(t["status"] == "succeeded");
    CHECK(t["published"] == true);
    CHECK(t["executions"] == 1);
    CHECK(supervisor_log(env).find("sweep: republished 1 of 1 tasks (" + std::to_string(id) + ")") != std::string::npos);
}

TEST_CASE("in the foreground the supervisor logs to stderr and SIGTERM stops it cleanly",
          "[supervisor][foreground]") {
    Setup s;
    s.workers = 2;
    Env env(s);
    Process sup({bin("sqlq-supervisor"), "start", "--foreground", "-c", env.config()});
    REQUIRE(sup.log_shows("all 2 workers ready", kReady));
    auto st = json::parse(supervisor(env, {"status", "--json"}).out);
    CHECK(st["pid"] == sup.pid());
    auto pids = worker_pids(st);
    sup.signal(SIGTERM);
    auto code = sup.wait(20000);
    REQUIRE(code);
    CHECK(*code == 0);
    for (pid_t p : pids) CHECK(::kill(p, 0) != 0);
    CHECK(sup.log().find("asked to stop (SIGTERM)") != std::string::npos);
}

TEST_CASE("a worker wedged in native code is killed by the watchdog and replaced", "[supervisor][watchdog]") {
    Setup s;
    s.workers = 1;
    // failed_start_ms low: each wedged worker lived only about a second, which is no failed start here.
    s.sections["supervisor"] = "watchdog_ms = 1000\nfailed_start_ms = 100\n";
    s.sections["query"] = "max_attempts = 2\n";
    Env env(s);
    Fleet f(env);
    pid_t first = f.status()["workers"][0]["pid"].get<pid_t>();
    int64_t id = submit(env, "SELECT sqlq_test_hang(60000)");
    REQUIRE(eventually([&] { return f.worker_of(id) == first; }, kReady));
    int64_t t0 = mono_ms();
    json w;
    REQUIRE(eventually([&] {
        w = f.status()["workers"][0];
        return w["restarts"].get<int>() >= 1;
    }, 10000));
    int64_t took = mono_ms() - t0;
    INFO(w.dump());
    CHECK(took < 5000);
    CHECK(w["last_exit"] == "signal 9 (KILL)");
    CHECK(supervisor_log(env).find("(watchdog_ms 1000): SIGKILL") != std::string::npos);
    // Every attempt wedges; after max_attempts the task fails instead of wedging workers forever.
    CHECK(cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 10);
    // The task's error says what really happened to the last attempt. The next delivery's claim
    // may give the task up before the supervisor has recorded that loss; the record then
    // completes the error.
    const std::string want = "gave up after 2 attempts: the worker running it was lost each time (it died, or stopped "
                             "renewing its lease) (last: killed by its supervisor: no sign of life for";
    std::string error;
    (void)eventually([&] {
        error = show(env, id)["error"].get<std::string>();
        return error.rfind(want, 0) == 0;
    }, 10000);
    CHECK_THAT(error, Catch::StartsWith(want));
    CHECK(eventually([&] { return fleet_ready(f, 1); }, kReady));
}

TEST_CASE("a worker that really grows past max_worker_rss_mb is recycled after its task", "[supervisor][recycle]") {
    Setup s;
    s.workers = 1;
    Env env(s);
    Fleet f(env);
    const pid_t first = f.status()["workers"][0]["pid"].get<pid_t>();
    CHECK(cli(env, {"wait", std::to_string(submit(env, "SELECT count(*) FROM orders")), "--timeout", "60"}).code == 0);
    // The cap: 64 MiB above what this worker holds after a task (a sanitizer build holds far
    // more than a plain one), set by a reload, which keeps the healthy worker.
    const int64_t rss_mb = int64_t(process_memory(first).rss_kib / 1024);
    REQUIRE(rss_mb > 0);
    const int64_t cap = rss_mb + 64;
    s.sections["supervisor"] = "max_worker_rss_mb = " + std::to_string(cap) + "\n";
    env.rewrite(s);
    REQUIRE(supervisor(env, {"reload"}).code == 0);
    // Small tasks leave it alone.
    CHECK(cli(env, {"wait", std::to_string(submit(env, "SELECT count(*) FROM orders")), "--timeout", "60"}).code == 0);
    CHECK(f.status()["workers"][0]["pid"] == first);
    // This one keeps 128 MiB resident: once it is done, the supervisor replaces the worker.
    int64_t id = submit(env, "SELECT sqlq_test_grow(128)");
    CHECK(cli(env, {"wait", std::to_string(id), "--timeout", "60"}).code == 0);
    CHECK(show(env, id)["status"] == "succeeded");  // recycled after the task, not during it
    REQUIRE(eventually([&] { return fleet_ready(f, 1) && f.status()["workers"][0]["pid"] != first; }, kReady));
    CHECK(supervisor_log_shows(env, "MiB resident (max_worker_rss_mb " + std::to_string(cap) + ")", 5000));
    CHECK(f.status()["workers"][0]["restarts"] == 1);
}

TEST_CASE("a query stuck in one long native step is killed at its hard deadline, runs once, and says why",
          "[supervisor][deadline]") {
    Setup s;
    s.workers = 2;
    // A lease far shorter than the deadline, and a heartbeat short enough that the broker gives
    // up on the stuck worker's connection and hands its message to the other worker long before
    // the kill: that worker must wait, not run the task a second time beside the first.
    s.sections["broker"] = "heartbeat_s = 1\n";
    s.sections["store"] = "lease_ms = 500\n";
    s.sections["query"] = "timeout_ms = 1000\n";
    s.sections["supervisor"] = "deadline_grace_ms = 5000\n";
    Env env(s);
    Fleet f(env);
    // One LIKE over a megabyte: a single VM step for many seconds, so the worker's own timeout
    // (checked between steps) never sees it, and no lease is renewed meanwhile.
    int64_t id = submit(env, "SELECT printf('%.*c',1000000,'a') LIKE '%'||printf('%.*c',40000,'a')||'b'");
    REQUIRE(eventually([&] { return f.worker_of(id) != 0; }, kReady));
    const int64_t t0 = mono_ms();
    CHECK(cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 10);
    const int64_t took = mono_ms() - t0;
    auto t = show(env, id);
    INFO(t.dump());
    CHECK(t["status"] == "failed");
    CHECK_THAT(t["error"].get<std::string>(),
               Catch::Contains("ran past query.timeout_ms (1000 ms) + deadline_grace_ms (5000 ms)") &&
                   Catch::Contains("its worker was killed"));
    // Never taken over while the first worker lived, although its lease ran out long before.
    CHECK(t["attempts"] == 1);
    CHECK(t["executions"] == 1);
    CHECK(t["outcomes"] == 1);
    CHECK(took >= 4000);  // the deadline, not an earlier death, ended it
    CHECK(took < 20000);
    CHECK(supervisor_log_shows(env, "past query.timeout_ms + deadline_grace_ms", 5000));
    CHECK(eventually([&] { return fleet_ready(f, 2); }, kReady));
}

TEST_CASE("a crashing worker is replaced and its task is recorded as lost", "[supervisor][crash]") {
    Setup s;
    s.workers = 2;
    s.sections["query"] = "max_attempts = 2\n";
    Env env(s);
    Fleet f(env);
    int64_t id = submit(env, "SELECT sqlq_test_crash()");
    CHECK(cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 10);
    CHECK(show(env, id)["attempts"].get<int>() >= 2);
    CHECK(eventually([&] { return fleet_ready(f, 2); }, kReady));
    std::string log = supervisor_log(env);
    CHECK(log.find("signal 11 (SEGV)") != std::string::npos);
    CHECK(log.find("task " + std::to_string(id) + " lost") != std::string::npos);
}

TEST_CASE("a worker is recycled after max_tasks_per_worker tasks, between tasks", "[supervisor][recycle]") {
    Setup s;
    s.workers = 1;
    s.sections["supervisor"] = "max_tasks_per_worker = 2\n";
    Env env(s);
    Fleet f(env);
    std::vector<int64_t> ids;
    for (int i = 0; i < 5; ++i) {
        ids.push_back(submit(env, "SELECT " + std::to_string(i)));
        REQUIRE(cli(env, {"wait", std::to_string(ids.back()), "--timeout", "30"}).code == 0);
    }
    for (int64_t id : ids) CHECK(show(env, id)["executions"] == 1);
    REQUIRE(eventually([&] { return f.status()["workers"][0]["restarts"].get<int>() >= 2; }, kReady));
    auto w = f.status()["workers"][0];
    CHECK(w["last_exit"] == "exit 0");  // asked politely, between tasks
    CHECK(w["failed_starts"] == 0);
    CHECK(supervisor_log(env).find("recycling after 2 tasks") != std::string::npos);
}

TEST_CASE("a worker's per-task log lines reach the supervisor's log once it is idle, and all of them by stop",
          "[supervisor][log]") {
    Setup s;
    s.workers = 2;
    Env env(s);
    std::vector<int64_t> ids;
    {
        Fleet f(env);
        std::vector<std::string> sqls(200, "SELECT 1");
        ids = submit_batch(env, sqls);
        for (int64_t id : ids) REQUIRE(cli(env, {"wait", std::to_string(id), "--timeout", "60"}).code == 0);
        // Buffered while deliveries keep coming, flushed when the worker falls idle: no later
        // event (another task, a stop) is needed for the last line to show up.
        const std::string last = "task " + std::to_string(ids.back()) + ": succeeded in ";
        CHECK(supervisor_log_shows(env, last, 10000));
        // A warning gets there too (that it is written at once, without waiting for a flush:
        // the unit test "buffered log").
        std::string bad = "{\"v\":1,\"task_id\":999999}";
        publish_raw(env, bad);
        CHECK(supervisor_log_shows(env, "task 999999: no such task", 10000));
    }
    const std::string log = supervisor_log(env);
    for (int64_t id : ids)
        CHECK(log.find("task " + std::to_string(id) + ": succeeded in ") != std::string::npos);
}

TEST_CASE("a start that times out names ten slots, counts the rest, and quotes one of them", "[supervisor][start]") {
    // Twelve workers that never report ready (a broker that stopped accepting connections looks
    // like this to hundreds of them at once): the error stays one short line.
    Env env;
    const std::string stuck = env.dir() + "/stuck-worker";
    std::ofstream(stuck) << "#!/bin/sh\necho 'waiting for a broker that never answers' >&2\nexec sleep 600\n";
    REQUIRE(::chmod(stuck.c_str(), 0755) == 0);
    Setup s;
    s.workers = 12;
    s.sections["supervisor"] = "start_timeout_ms = 3000\n";
    env.rewrite(s);
    std::string text = read_file(env.config());
    auto at = text.find(bin("sqlq-test-worker"));
    REQUIRE(at != std::string::npos);
    text.replace(at, bin("sqlq-test-worker").size(), stuck);
    std::ofstream(env.config()) << text;
    auto r = supervisor(env, {"start"});
    INFO(r.err);
    CHECK(r.code == 1);
    CHECK(r.err.find("not every worker was ready within start_timeout_ms 3000 (slots 1 starting, ") != std::string::npos);
    CHECK(r.err.find("10 starting and 2 more)") != std::string::npos);
    CHECK(r.err.find("11 starting") == std::string::npos);
    CHECK(r.err.find("said: waiting for a broker that never answers") != std::string::npos);
    CHECK(supervisor(env, {"status"}).code == 3);
    CHECK(lock_free(env));
}

TEST_CASE("the workers of one start are all forked before any of them runs", "[supervisor][start][limits]") {
#if defined(SQLQ_SANITIZED)
    WARN("skipped under AddressSanitizer: 100 instrumented workers take gigabytes");
    return;
#endif
    // The StartGate: a child waits before its exec until the whole batch is forked, so the
    // supervisor's fork loop does not share the CPU with the workers it already started (with
    // 1,000 that loop took up to 16 s). Each worker is a script that records, as it begins, its
    // own fork time and the time now, both in clock ticks since boot, then execs the worker.
    Env env;
    const std::string stamps = env.dir() + "/execs";
    const std::string script = env.dir() + "/exec-stamp";
    std::ofstream(script) << "#!/bin/sh\nread up rest < /proc/uptime\n"
                          << "echo \"$(awk '{print $22}' /proc/$$/stat) ${up%.*}${up#*.}\" >> " << stamps << "\n"
                          << "exec " << bin("sqlq-test-worker") << " \"$@\"\n";
    REQUIRE(::chmod(script.c_str(), 0755) == 0);
    Setup s;
    s.workers = 100;
    s.sections["supervisor"] = "start_timeout_ms = 120000\n";
    env.rewrite(s);
    std::string text = read_file(env.config());
    auto at = text.find(bin("sqlq-test-worker"));
    REQUIRE(at != std::string::npos);
    text.replace(at, bin("sqlq-test-worker").size(), script);
    std::ofstream(env.config()) << text;
    Fleet fleet(env);
    CHECK(fleet.status()["ready"] == 100);
    std::ifstream in(stamps);
    long long fork_tick = 0, exec_tick = 0, last_fork = 0, first_exec = -1;
    int n = 0;
    while (in >> fork_tick >> exec_tick) {
        ++n;
        last_fork = std::max(last_fork, fork_tick);
        if (first_exec < 0 || exec_tick < first_exec) first_exec = exec_tick;
    }
    CHECK(n == 100);
    INFO("last fork at tick " << last_fork << ", first worker running at tick " << first_exec);
    CHECK(first_exec + 1 >= last_fork);  // a tick (10 ms) of slack for the two clocks' rounding
    CHECK(fleet.stop().code == 0);
}

TEST_CASE("a fleet larger than the soft limit on open files allows starts: the supervisor raises it",
          "[supervisor][start][limits]") {
#if defined(SQLQ_SANITIZED)
    WARN("skipped under AddressSanitizer: 100 instrumented workers take gigabytes");
    return;
#endif
    // 100 workers keep 200 pipes open in the supervisor; a soft limit of 128 would stop the fleet
    // near 50 workers. The supervisor inherits this process's limits.
    rlimit before{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
    if (before.rlim_max != RLIM_INFINITY && before.rlim_max < 1024) {
        WARN("skipped: the hard limit on open files is " << before.rlim_max);
        return;
    }
    rlimit low = before;
    low.rlim_cur = 128;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    Setup s;
    s.workers = 100;
    s.sections["supervisor"] = "start_timeout_ms = 120000\n";
    Env env(s);
    std::unique_ptr<Fleet> fleet;
    try {
        fleet = std::make_unique<Fleet>(env);
    } catch (...) {
        ::setrlimit(RLIMIT_NOFILE, &before);
        throw;
    }
    ::setrlimit(RLIMIT_NOFILE, &before);
    const json st = fleet->status();
    CHECK(st["ready"] == 100);
    // Its soft limit is its hard one now.
    std::ifstream limits("/proc/" + std::to_string(fleet->pid()) + "/limits");
    std::string line;
    while (std::getline(limits, line))
        if (line.rfind("Max open files", 0) == 0) {
            std::istringstream in(line.substr(std::strlen("Max open files")));
            std::string soft, hard;
            in >> soft >> hard;
            CHECK(soft == hard);
        }
    CHECK(fleet->stop().code == 0);
}
