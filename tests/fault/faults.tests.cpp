// The fault suite (issue 6): the real binaries, a real RabbitMQ node, a load of mixed queries and
// an injector. Every scenario ends with `sqlq audit --json`, prints its figures on one line and
// requires lost=0 stuck=0 duplicate_outcomes=0 queue_left=0, and no log holding the broker
// password. Loads are sized for CI; SQLQ_SOAK=1 makes them ten times larger.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <sys/mount.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

#include "amqp/connection.h"
#include "fault/load.h"
#include "task/message.h"
#include "task/store.h"
#include "util/clock.h"

using namespace sqlq;
using namespace sqlq::test;
using namespace sqlq::fault;
using nlohmann::json;

namespace {

constexpr int kDrainMs = 300000;

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

std::mt19937_64& rng() {
    static std::mt19937_64 r = [] {
        uint64_t seed = std::random_device{}();
        std::cout << "random seed " << seed << std::endl;
        return std::mt19937_64(seed);
    }();
    return r;
}

int64_t random_between(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng()); }

std::vector<pid_t> worker_pids(const Fleet& fleet) {
    std::vector<pid_t> pids;
    try {
        const json st = fleet.status();  // a named copy: a range over a temporary's member dangles
        for (const auto& w : st["workers"])
            if (w["pid"].is_number() && w["pid"].get<pid_t>() > 0) pids.push_back(w["pid"].get<pid_t>());
    } catch (const std::exception& e) {
        // the supervisor is busy replacing workers: try again next time
        std::cout << "status: " << e.what() << std::endl;
    }
    return pids;
}

int total_restarts(const Fleet& fleet) {
    int n = 0;
    const json st = fleet.status();
    for (const auto& w : st["workers"]) n += w["restarts"].get<int>();
    return n;
}

bool all_terminal(const Env& env, int64_t n) {
    try {
        return counts(env).terminal >= n;
    } catch (const std::exception&) {
        return false;
    }
}

size_t count_of(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// Every kind of body a worker must refuse without crashing: random bytes, broken and wrong JSON,
// wrong types, out-of-range and unknown ids, other versions, huge payloads.
std::vector<std::string> hostile_messages(int n, int64_t unknown_from) {
    const std::vector<std::string> fixed = {
        "",
        "{",
        "null",
        "[]",
        "[1,2,3]",
        "\"task\"",
        "42",
        "{}",
        R"({"v":1})",
        R"({"task_id":1})",
        R"({"v":"1","task_id":1})",
        R"({"v":1,"task_id":"1"})",
        R"({"v":1,"task_id":1.5})",
        R"({"v":1,"task_id":-3})",
        R"({"v":1,"task_id":0})",
        R"({"v":1,"task_id":null})",
        R"({"v":1,"task_id":[1]})",
        R"({"v":1,"task_id":{"id":1}})",
        R"({"v":2,"task_id":1})",
        R"({"v":-1,"task_id":1})",
        R"({"v":1,"task_id":18446744073709551616})",
        R"({"v":1,"task_id":9223372036854775808})",
        R"({"v":1,"task_id":1e400})",
        R"({"v":1e400,"task_id":1})",
        R"({"v":1,"task_id":1}garbage)",
        "{\"v\":1,\"task_id\":1\0}",
        std::string(R"({"v":1,"task_id":1,"pad":")") + std::string(5000, 'x') + "\"}",
        std::string(4000, '[') + std::string(4000, ']'),
        std::string(1 << 20, '{'),
        "\xff\xfe\xfd{\"v\":1}",
        R"({"v":1,"task_id":"\ud800"})",
    };
    std::vector<std::string> out;
    out.reserve(size_t(n));
    for (int i = 0; i < n; ++i) {
        switch (i % 4) {
        case 0: out.push_back(fixed[size_t(i / 4) % fixed.size()]); break;
        case 1: {
            std::string b(size_t(random_between(1, 300)), '\0');
            for (auto& c : b) c = char(random_between(0, 255));
            out.push_back(b);
            break;
        }
        case 2:  // well formed, but no such task
            out.push_back(encode_message(unknown_from + i));
            break;
        default:
            if (i % 40 == 3) out.push_back(std::string(size_t(random_between(5000, 200000)), char(random_between(32, 126))));
            else out.push_back(R"({"v":1,"task_id":)" + std::to_string(random_between(-1000, 0)) + "}");
        }
    }
    return out;
}

// Publishes bodies with confirms over one connection.
void publish_all(const Env& env, const std::vector<std::string>& bodies) {
    amqp::Connection c(env.cfg().broker, "sqlq fault: hostile producer");
    c.declare_topology();
    c.enable_confirms();
    for (size_t first = 0; first < bodies.size(); first += 200) {
        size_t last = std::min(bodies.size(), first + 200);
        uint64_t t0 = 0, t1 = 0;
        for (size_t i = first; i < last; ++i) {
            t1 = c.publish(env.cfg().broker.queue, bodies[i]);
            if (i == first) t0 = t1;
        }
        auto acked = c.wait_confirms(t0, t1, 20000);
        REQUIRE(acked.size() == last - first);
    }
    c.close();
}

// A small tmpfs for the task store, unmounted on destruction.
struct Tmpfs {
    explicit Tmpfs(const std::string& dir, const std::string& size) : path(dir) {
        mkdir(path.c_str(), 0755);
        std::string opts = "size=" + size;
        if (mount("tmpfs", path.c_str(), "tmpfs", 0, opts.c_str()) != 0)
            throw std::runtime_error("mount tmpfs on " + path + ": " + std::strerror(errno) + " (the fault suite runs as root)");
    }
    ~Tmpfs() { umount2(path.c_str(), MNT_DETACH); }
    std::string path;
};

// Writes until the file system is full; returns the bytes written.
int64_t fill(const std::string& file) {
    int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    std::string chunk(4096, 'f');
    int64_t n = 0;
    for (;;) {
        ssize_t w = write(fd, chunk.data(), chunk.size());
        if (w <= 0) break;
        n += w;
    }
    close(fd);
    return n;
}

}  // namespace

TEST_CASE("a random worker SIGKILLed every 100 ms for the whole load: nothing lost, nothing recorded twice",
          "[fault][kill]") {
    Env env(base_setup(8));
    Fleet fleet(env);
    const int n = sized(5000);
    auto ids = submit_batch(env, mixed_load(n));
    REQUIRE(ids.size() == size_t(n));
    int kills = 0;
    const int64_t deadline = mono_ms() + kDrainMs;
    int64_t next_kill = mono_ms();
    while (!all_terminal(env, n) && mono_ms() < deadline) {
        sleep_ms(int(std::max<int64_t>(0, next_kill - mono_ms())));
        next_kill += 100;
        auto pids = worker_pids(fleet);
        if (!pids.empty()) {
            pid_t victim = pids[size_t(random_between(0, int64_t(pids.size()) - 1))];
            if (kill(victim, SIGKILL) == 0) ++kills;
        }
    }
    const int64_t took = mono_ms() - (deadline - kDrainMs);
    std::cout << "killed " << kills << " workers in " << took << " ms" << std::endl;
    REQUIRE(drained(env, kDrainMs));
    auto a = closing_audit(env, "1 kill a worker every 100 ms");
    // A task whose worker is killed max_attempts times in a row fails ("gave up"): that is the
    // policy, not a loss. Everything else succeeds.
    CHECK(a["succeeded"].get<int64_t>() + a["failed"].get<int64_t>() == n);
    CHECK(a["failed"].get<int64_t>() * 3 <= kills);
    for (const auto& t : json::parse(fault::cli(env, {"list", "--status", "failed", "--json"}).out)) {
        INFO(t.dump());
        CHECK(t["error"].get<std::string>().find("gave up after 3 attempts") == 0);
    }
    // Only a task whose worker died mid-query runs again, once per death at most.
    CHECK(a["reexecuted"].get<int>() <= kills);
    // The fleet is whole again.
    CHECK(eventually([&] { return fleet.status()["alive"] == 8; }, 60000));
}

TEST_CASE("the broker restarted during the load (twice, and once more at prefetch 3): workers and producers carry on, "
          "nothing lost",
          "[fault][broker]") {
    // At prefetch 3 a worker may hold a claim made with its last outcome (docs/architecture.md,
    // "One transaction per task") when its connection goes: it runs that task, acks nothing on
    // the new channel, and the redelivered message is skipped.
    const int prefetch = GENERATE(1, 3);
    INFO("prefetch " << prefetch);
    // Twice at the default prefetch; once at 3, which tests only what prefetch adds (a node's
    // restart is the suite's dearest step, and the suite's time is bounded).
    const int restarts = prefetch == 1 ? 2 : 1;
    Node node(5);
    Setup s = base_setup(8);
    s.broker_url = node.url();
    s.sections["broker"] = "prefetch = " + std::to_string(prefetch) + "\n";
    Env env(s);
    Fleet fleet(env);
    const int per_wave = sized(300);
    int64_t submitted = 0;
    int refused_publishes = 0;
    enum class Broker { up, down };
    auto wave = [&](Broker broker) {
        auto r = fault::cli(env, {"submit", "--batch", "-"}, [&] {
            std::string in;
            for (auto& q : mixed_load(per_wave, 20, 200)) in += q + "\n";
            return in;
        }());
        INFO(r.err);
        // With the broker down the rows are stored and left to the sweeper: exit 1, ids printed.
        CHECK(r.code == (broker == Broker::up ? 0 : 1));
        CHECK(std::count(r.out.begin(), r.out.end(), '\n') == per_wave);
        if (r.code != 0) ++refused_publishes;
        submitted += std::count(r.out.begin(), r.out.end(), '\n');
    };
    for (int restart = 0; restart < restarts; ++restart) {
        wave(Broker::up);
        sleep_ms(500);  // mid-load
        node.stop();
        wave(Broker::down);  // a producer while the broker is down
        sleep_ms(1000);
        node.start();
        wave(Broker::up);
    }
    CHECK(submitted == 3 * restarts * per_wave);
    CHECK(refused_publishes == restarts);
    std::cout << refused_publishes << " submits found the broker down" << std::endl;
    REQUIRE(eventually([&] { return all_terminal(env, submitted); }, kDrainMs));
    REQUIRE(drained(env, kDrainMs));
    auto a = closing_audit(env, prefetch == 1 ? "2 broker restarted twice" : "2b broker restarted, prefetch 3", {});
    CHECK(a["succeeded"] == submitted);
    CHECK(fleet.status()["alive"] == 8);
}

TEST_CASE("start meets a broker too slow to answer: it asks again until start_timeout_ms, starts once the broker "
          "answers, and gives up with one line naming the limit when it never does",
          "[fault][broker][start]") {
    Node node(5);
    Setup s = base_setup(2);
    s.broker_url = node.url();
    s.sections["broker"] = "connect_timeout_ms = 300\n";
    s.sections["supervisor"] = "start_timeout_ms = 2000\n";
    Env env(s);
    struct Resume {  // a paused node cannot be stopped
        Node& node;
        bool paused = false;
        ~Resume() {
            if (paused) node.resume();
        }
    } paused{node};

    // Never answers within start_timeout_ms: one clear failure naming the limit, no fleet.
    node.pause();
    paused.paused = true;
    auto gave_up = supervisor(env, {"start"});
    INFO(gave_up.out << gave_up.err);
    CHECK(gave_up.code != 0);
    CHECK(gave_up.err.find("timed out") != std::string::npos);
    CHECK(gave_up.err.find("start_timeout_ms = 2000 ms") != std::string::npos);
    CHECK(!supervisor_log_shows(env, "workers ready", 0));

    // Answers after a few tries: start waits for it and the fleet works.
    s.sections["supervisor"] = "start_timeout_ms = 60000\n";
    env.rewrite(s);
    struct Stop {
        const Env& env;
        ~Stop() { supervisor(env, {"stop"}); }
    } stop{env};
    Process start({bin("sqlq-supervisor"), "start", "-c", env.config()});
    REQUIRE(start.log_shows("asking again", 30000));
    node.resume();
    paused.paused = false;
    const auto code = start.wait(60000);
    INFO(start.log());
    REQUIRE(code == 0);
    int64_t id = submit(env, "SELECT 1");
    CHECK(fault::cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 0);
    closing_audit(env, "start against a slow broker", {});
}

TEST_CASE("the supervisor SIGKILLed mid-load and started again: every task finishes once",
          "[fault][supervisor]") {
    Env env(base_setup(8));
    auto first = std::make_unique<Fleet>(env);
    const int n = sized(1000);
    auto ids = submit_batch(env, mixed_load(n, 10, 200));
    REQUIRE(eventually([&] { return counts(env).terminal >= n / 4; }, kDrainMs));
    auto workers = worker_pids(*first);
    REQUIRE(kill(first->pid(), SIGKILL) == 0);
    // No worker outlives its supervisor.
    CHECK(eventually([&] {
        for (pid_t p : workers)
            if (kill(p, 0) == 0) return false;
        return true;
    }, 10000));
    auto mid = counts(env);
    std::cout << "supervisor killed with " << mid.terminal << " of " << n << " tasks done, " << mid.running
              << " running" << std::endl;
    first.reset();  // its stop finds nobody
    Fleet second(env);
    REQUIRE(drained(env, kDrainMs));
    auto a = closing_audit(env, "3 supervisor killed and restarted");
    CHECK(a["succeeded"] == n);
    CHECK(a["reexecuted"].get<int64_t>() <= mid.running);
}

TEST_CASE("a poison task that kills its worker every time: failed after max attempts, never run more",
          "[fault][poison]") {
    Setup s = base_setup(4);
    s.sections["query"] = "max_attempts = 3\n";
    Env env(s);
    Fleet fleet(env);
    auto load = mixed_load(sized(400), 20, 200);
    const int poisons = 3;
    for (int i = 0; i < poisons; ++i) load.insert(load.begin() + long(load.size() / poisons * size_t(i)), "SELECT sqlq_test_crash()");
    auto ids = submit_batch(env, load);
    REQUIRE(drained(env, kDrainMs));
    int poisoned = 0;
    for (size_t i = 0; i < load.size(); ++i) {
        if (load[i] != "SELECT sqlq_test_crash()") continue;
        ++poisoned;
        auto t = show(env, ids[i]);
        INFO(t.dump());
        CHECK(t["status"] == "failed");
        CHECK(t["executions"] == 3);
        CHECK(t["error"].get<std::string>().find("gave up after 3 attempts") != std::string::npos);
    }
    CHECK(poisoned == poisons);
    auto a = closing_audit(env, "4 poison task");
    CHECK(a["failed"] == poisons);
    CHECK(a["succeeded"] == int64_t(load.size()) - poisons);
    CHECK(a["reexecuted"] == poisons * 2);
    CHECK(fleet.status()["alive"] == 4);
}

TEST_CASE("1,000 hostile messages mixed into the load: all dead-lettered, no crash loop, every task done",
          "[fault][hostile]") {
    Env env(base_setup(4));
    Fleet fleet(env);
    const int valid = sized(500), hostile = sized(1000);
    auto bodies = hostile_messages(hostile, 1000000000);
    std::shuffle(bodies.begin(), bodies.end(), rng());
    std::vector<int64_t> ids;
    for (int part = 0; part < 4; ++part) {
        auto more = submit_batch(env, mixed_load(valid / 4, 25, 200));
        ids.insert(ids.end(), more.begin(), more.end());
        publish_all(env, std::vector<std::string>(bodies.begin() + long(bodies.size() * size_t(part) / 4),
                                                  bodies.begin() + long(bodies.size() * size_t(part + 1) / 4)));
    }
    // Duplicates of valid messages are not hostile: they are skipped, not dead-lettered.
    publish_all(env, {encode_message(ids.front()), encode_message(ids.back())});
    REQUIRE(drained(env, kDrainMs));
    REQUIRE(eventually([&] { return queue_depth(env, env.cfg().broker.dead_letter_queue()) == uint32_t(hostile); }, 30000));
    auto a = closing_audit(env, "5 hostile messages");
    CHECK(a["succeeded"] == int64_t(ids.size()));
    CHECK(a["dead_lettered"] == hostile);
    CHECK(total_restarts(fleet) == 0);
    CHECK(fleet.status()["alive"] == 4);
}

TEST_CASE("producers killed between the insert and the publish confirm: the sweeper publishes, tasks complete",
          "[fault][producer]") {
    Env env(base_setup(4));
    Fleet fleet(env);
    // A producer that died right after its insert: rows stored, never published.
    std::vector<int64_t> orphans;
    auto unpublished = [&] {
        auto store = open_store(env.cfg().store);
        int64_t n = 0;
        for (const auto& t : store->list(Status::queued, 1000000)) n += !t.published;
        return n;
    };
    {
        auto store = open_store(env.cfg().store);
        auto load = mixed_load(sized(300), 30, 200);
        orphans = store->insert_batch(load, "dead-producer");
    }
    // Checked now: the sweeper publishes them once they are republish_after_ms (3 s) old, which
    // the killed producers below may take on a loaded machine.
    CHECK(unpublished() >= int64_t(orphans.size()));
    // Producers SIGKILLed at random moments of their submit.
    std::string batch = env.dir() + "/batch.sql";
    {
        std::ofstream out(batch);
        for (auto& q : mixed_load(sized(150), 50, 200)) out << q << "\n";
    }
    for (int i = 0; i < 8; ++i) {
        Process p({bin("sqlq"), "-c", env.config(), "submit", "--batch", batch, "--user", "killed-producer"});
        sleep_ms(int(random_between(5, 120)));
        p.signal(SIGKILL);
        p.wait(10000);
    }
    std::cout << unpublished() << " tasks stored but unpublished after the killed producers" << std::endl;
    REQUIRE(drained(env, kDrainMs));
    // The orphans went through the sweeper and ran once.
    for (int64_t id : {orphans.front(), orphans[orphans.size() / 2], orphans.back()}) {
        auto t = show(env, id);
        CHECK(t["status"] == "succeeded");
        CHECK(t["executions"] == 1);
    }
    auto a = closing_audit(env, "6 producers killed before the confirm");
    CHECK(a["failed"] == 0);
    CHECK(a["reexecuted"] == 0);
    CHECK(supervisor_log(env).find("sweep: republished") != std::string::npos);
}

TEST_CASE("the task store's disk fills up: workers fail the write cleanly, do not ack, recover when space returns",
          "[fault][disk]") {
    TempDir mnt_parent;
    Tmpfs disk(mnt_parent.path + "/store", "32m");
    Setup s = base_setup(4);
    s.store_path = disk.path + "/sqlq.db";
    Env env(s);
    Fleet fleet(env);
    const int n = sized(600);
    // Results of about 2 KB each, so that the store keeps growing while the disk is full.
    std::vector<std::string> load = mixed_load(n, 20, 200);
    for (size_t i = 0; i < load.size(); i += 2) load[i] = "SELECT " + std::to_string(i) + ", hex(randomblob(1000))";
    auto ids = submit_batch(env, load);
    REQUIRE(eventually([&] { return counts(env).terminal >= n / 10; }, 60000));
    int64_t filled = fill(disk.path + "/filler");
    const auto before = counts(env);
    std::cout << "disk full (" << filled << " bytes of filler) with " << before.terminal << " of " << n
              << " tasks done" << std::endl;
    // While the disk is full: writes fail, and they are retried, not acked away.
    REQUIRE(supervisor_log_shows(env, "database or disk is full", 30000));
    // Progress stops while full, once the commits that still fit in space the WAL file already
    // holds are made (after a checkpoint the WAL is rewritten from its start: up to its size in
    // commits go through; seen: from none to 76 tasks). Sampled once a second until it stands still.
    auto during = counts(env);
    bool stalled = false;
    for (const int64_t until = mono_ms() + 30000; !stalled && mono_ms() < until;) {
        sleep_ms(1000);
        const auto now = counts(env);
        stalled = now.terminal == during.terminal;
        during = now;
    }
    CHECK(stalled);
    CHECK(during.terminal < n);
    CHECK(fleet.status()["alive"] == 4);
    unlink((disk.path + "/filler").c_str());
    std::cout << "space back with " << during.terminal << " of " << n << " tasks done" << std::endl;
    REQUIRE(drained(env, kDrainMs));
    auto a = closing_audit(env, "7 task store disk full");
    CHECK(a["succeeded"] == n);
    CHECK(total_restarts(fleet) == 0);
}

TEST_CASE("a cancel storm: 20% of the tasks cancelled while they run, each ends once", "[fault][cancel]") {
    Env env(base_setup(8));
    Fleet fleet(env);
    const int n = sized(300);
    auto ids = submit_batch(env, mixed_load(n, 3, 300));
    std::set<int64_t> asked;
    int running_when_asked = 0;
    const int64_t deadline = mono_ms() + kDrainMs;
    while (asked.size() < size_t(n / 5) && !all_terminal(env, n) && mono_ms() < deadline) {
        // Mostly running tasks, some queued ones.
        auto r = fault::cli(env, {"list", "--status", random_between(0, 3) ? "running" : "queued", "--limit", "50", "--json"});
        auto list = json::parse(r.out, nullptr, false);
        if (list.is_discarded() || list.empty()) {
            sleep_ms(20);
            continue;
        }
        const auto& t = list[size_t(random_between(0, int64_t(list.size()) - 1))];
        int64_t id = t["id"].get<int64_t>();
        if (!asked.insert(id).second) continue;
        if (t["status"] == "running") ++running_when_asked;
        auto c = fault::cli(env, {"cancel", std::to_string(id)});
        INFO(c.out << c.err);
        CHECK((c.code == 0 || c.code == 5));  // 5: it finished first
        // Each answer says how the task ended: 0 cancelled (queued, or stopped while running),
        // 5 it succeeded before the cancel took effect.
        if (c.code == 0) CHECK(show(env, id)["status"] == "cancelled");
        if (c.code == 5) CHECK(show(env, id)["status"] == "succeeded");
    }
    std::cout << "asked to cancel " << asked.size() << " tasks, " << running_when_asked << " of them running"
              << std::endl;
    REQUIRE(drained(env, kDrainMs));
    auto a = closing_audit(env, "8 cancel storm");
    CHECK(a["succeeded"].get<int64_t>() + a["cancelled"].get<int64_t>() == n);
    CHECK(a["cancelled"].get<int64_t>() >= int64_t(asked.size()) / 2);
    for (int64_t id : asked) {
        auto t = show(env, id);
        INFO(t.dump());
        CHECK(t["executions"].get<int>() <= 1);
        CHECK(t["outcomes"] == 1);
    }
}

TEST_CASE("a worker paused past its lease keeps its task until its supervisor kills it: never two runners, one outcome",
          "[fault][pause][fencing]") {
    Setup s = base_setup(4);
    // A short heartbeat, so that the broker gives the paused worker's delivery to another soon; a
    // lease that runs out long before the watchdog (2 s of silence) kills the paused worker. On
    // one host a live owner keeps its task whatever its lease: the other worker waits for the kill.
    s.sections["broker"] = "heartbeat_s = 1\n";
    s.sections["store"] = "lease_ms = 500\n";
    s.sections["supervisor"] = "watchdog_ms = 2000\n";
    Env env(s);
    Fleet fleet(env);
    auto background = submit_batch(env, mixed_load(sized(200), 0));
    const int rounds = sized(5);
    for (int round = 0; round < rounds; ++round) {
        int64_t id = submit(env, slow_query(1500));
        pid_t paused = 0;
        REQUIRE(eventually([&] { return (paused = fleet.worker_of(id)) != 0; }, 30000));
        REQUIRE(kill(paused, SIGSTOP) == 0);
        const int64_t t0 = mono_ms();
        REQUIRE(eventually([&] { return show(env, id)["attempts"].get<int>() >= 2; }, 30000));
        // Attempt 2 began only after the supervisor had killed the paused worker (the kill is
        // logged before the SIGKILL, and the takeover waits for the process to be gone).
        INFO("round " << round << ", paused pid " << paused);
        CHECK(supervisor_log(env).find("pid " + std::to_string(paused) + ": silent for") != std::string::npos);
        CHECK(mono_ms() - t0 >= 1500);  // not at the lease's end (500 ms), at the watchdog's (2 s)
        REQUIRE(eventually([&] { return show(env, id)["status"] == "succeeded"; }, 30000));
        auto t = show(env, id);
        INFO(t.dump());
        CHECK(t["outcomes"] == 1);
        CHECK(t["attempts"] == 2);
    }
    REQUIRE(drained(env, kDrainMs));
    const std::string log = supervisor_log(env);
    // No worker ever woke up to find its claim taken: none was left alive to wake.
    CHECK(count_of(log, "lost its claim") + count_of(log, "of attempt 1 not recorded") == 0);
    auto a = closing_audit(env, "9 paused worker killed before a takeover");
    CHECK(a["reexecuted"] == rounds);
    CHECK(a["succeeded"] == int64_t(background.size()) + rounds);
}

TEST_CASE("queries several times longer than the broker heartbeat: no connection dropped, no second run",
          "[fault][heartbeat]") {
    Node node(1);
    Setup s = base_setup(4);
    s.broker_url = node.url();
    s.sections["broker"] = "heartbeat_s = 1\n";
    Env env(s);
    Fleet fleet(env);
    auto load = mixed_load(sized(100), 0);
    const int slow = sized(8);
    for (int i = 0; i < slow; ++i) load.push_back(slow_query(5000));
    std::shuffle(load.begin(), load.end(), rng());
    auto ids = submit_batch(env, load);
    REQUIRE(drained(env, kDrainMs));
    auto a = closing_audit(env, "10 queries 5x the heartbeat");
    CHECK(a["succeeded"] == int64_t(load.size()));
    CHECK(a["reexecuted"] == 0);
    for (size_t i = 0; i < load.size(); ++i) {
        auto t = show(env, ids[i]);
        CHECK(t["attempts"] == 1);
    }
    const std::string log = supervisor_log(env);
    CHECK(log.find("reconnecting") == std::string::npos);
    CHECK(total_restarts(fleet) == 0);
}

TEST_CASE("no message sqlq writes holds the broker password, on the paths that fail too", "[fault][password]") {
    Env env(base_setup(2));
    Fleet fleet(env);
    int64_t id = submit(env, "SELECT 1");
    REQUIRE(fault::cli(env, {"wait", std::to_string(id), "--timeout", "30"}).code == 0);
    fault::cli(env, {"show", std::to_string(id)});
    fault::cli(env, {"audit"});
    supervisor(env, {"status"});
    // The same password with paths that fail: nobody listening, a wrong vhost, an unparsable URL.
    std::vector<std::string> outputs;
    for (std::string url : {"amqp://" + fault_user() + ":" + fault_password() + "@127.0.0.1:1",
                            "amqp://" + fault_user() + ":" + fault_password() + "@127.0.0.1:" +
                                std::to_string(broker_port()) + "/no-such-vhost",
                            "amqp://" + fault_user() + ":" + fault_password() + "@127.0.0.1:notaport",
                            "amqp://nobody:" + fault_password() + "@127.0.0.1:" + std::to_string(broker_port()),
                            // a raw '@' in the password: unparsable, and none of it may show
                            "amqp://nobody:Pw@" + fault_password() + "@127.0.0.1:" + std::to_string(broker_port())}) {
        Setup bad = base_setup(1);
        bad.broker_url = url;
        bad.sections["broker"] = "connect_timeout_ms = 1000\nreconnect_max_ms = 200\n";
        bad.sections["supervisor"] = "start_timeout_ms = 3000\n";
        Env broken(bad);
        auto r1 = fault::cli(broken, {"submit", "SELECT 1"});
        CHECK(r1.code != 0);
        auto r2 = fault::cli(broken, {"audit"});
        CHECK(r2.code != 0);
        auto r3 = supervisor(broken, {"start"});
        CHECK(r3.code != 0);
        supervisor(broken, {"stop"});
        auto w = start_worker(broken);
        w->wait(3000);
        w->signal(SIGKILL);
        w->wait(3000);
        outputs.push_back(r1.out + r1.err + r2.out + r2.err + r3.out + r3.err + w->log());
        auto hits = files_with_password(broken.dir(), {});
        INFO(url << ": " << json(hits).dump());
        CHECK(hits.empty());
    }
    for (const auto& o : outputs) {
        INFO(o);
        CHECK(o.find(fault_password()) == std::string::npos);
    }
    closing_audit(env, "password grep");
}

TEST_CASE("the store's disk stays full past record_timeout_ms: the worker gives the task up and is replaced, "
          "a cancel meanwhile answers, and the task ends cancelled once space returns",
          "[fault][disk][record-timeout]") {
    TempDir mnt_parent;
    Tmpfs disk(mnt_parent.path + "/store", "16m");
    Setup s = base_setup(1);
    s.store_path = disk.path + "/sqlq.db";
    s.sections["store"] = "record_timeout_ms = 2000\n";
    Env env(s);
    Fleet fleet(env);
    // A result of about 1 MB, ready 1.5 s after the claim: the disk fills up in between.
    int64_t id = submit(env, "SELECT sqlq_test_hang(1500), hex(randomblob(500000))");
    REQUIRE(eventually([&] { return fleet.worker_of(id) != 0; }, 30000));
    const int64_t filled = fill(disk.path + "/filler");
    std::cout << "disk full (" << filled << " bytes of filler) while task " << id << " runs" << std::endl;
    // One clear line, then the worker leaves (unacked) and the supervisor refills the slot at
    // once: a worker that reached ready and worked is no failed start, so no backoff.
    REQUIRE(supervisor_log_shows(env, "([store] record_timeout_ms)", 30000));
    REQUIRE(eventually([&] { return total_restarts(fleet) >= 1; }, 10000));
    CHECK(eventually([&] { return fleet.status()["alive"] == 1; }, 10000));
    // A cancel while the disk is full answers, never hangs, and never says the task finished
    // otherwise (its outcome could not be written): cancelled (0: its request and the cancelled
    // outcome fit in space the log already had), its request refused (1, saying the disk is
    // full), or requested but not ended in time (12: nothing can write the outcome yet).
    auto c = fault::cli(env, {"cancel", std::to_string(id)});
    std::cout << "cancel with the disk full: exit " << c.code << ": " << c.out << c.err << std::endl;
    INFO(c.out << c.err);
    REQUIRE((c.code == 0 || c.code == 1 || c.code == 12));
    if (c.code == 1) CHECK(c.err.find("full") != std::string::npos);
    const json st = fleet.status();
    for (const auto& w : st["workers"]) CHECK(w["state"] != "backoff");
    unlink((disk.path + "/filler").c_str());
    if (c.code == 1) {
        // Its request was not written: asked again once there is space, it is, and the task
        // (waiting for a claim, or run again) stops.
        auto again = fault::cli(env, {"cancel", std::to_string(id)});
        INFO(again.out << again.err);
        CHECK(again.code == 0);
    }
    // The promise: once space returns, a task whose cancel was asked ends cancelled (a worker's
    // claim finds the request and its owner gone), once.
    REQUIRE(drained(env, kDrainMs));
    auto t = show(env, id);
    INFO(t.dump());
    CHECK(t["status"] == "cancelled");
    CHECK(t["outcomes"] == 1);
    auto a = closing_audit(env, "11 disk full past record_timeout_ms");
    CHECK(a["cancelled"] == 1);
    CHECK(a["succeeded"].get<int64_t>() + a["failed"].get<int64_t>() == 0);
}

TEST_CASE("a delivery unacked past the broker's consumer_timeout: the worker reconnects instead of exiting, "
          "the redelivery is skipped, the task runs once",
          "[fault][consumer-timeout]") {
    // consumer_timeout 3 s, checked every second (channel_tick_interval), on a node of its own.
    Node node(5, {{"SQLQ_BROKER_CONSUMER_TIMEOUT_MS", "3000"}, {"SQLQ_BROKER_CHANNEL_TICK_MS", "1000"}});
    Setup s = base_setup(2);
    s.broker_url = node.url();
    Env env(s);
    Fleet fleet(env);
    int64_t id = submit(env, slow_query(9000));
    REQUIRE(eventually([&] { return fleet.worker_of(id) != 0; }, 30000));
    // The broker closes the channel after ~3 s. RabbitMQ 3.10 hands the message to another
    // consumer only once the channel is closed on both sides, i.e. when the worker next reads
    // from the broker, after it recorded the outcome: the redelivery then finds the task done.
    REQUIRE(eventually([&] { return show(env, id)["status"] == "succeeded"; }, 60000));
    REQUIRE(supervisor_log_shows(env, "consumer_timeout (rabbitmq.conf", 15000));
    REQUIRE(drained(env, 60000));
    auto t = show(env, id);
    INFO(t.dump());
    CHECK(t["executions"] == 1);
    CHECK(t["attempts"] == 1);
    const std::string log = supervisor_log(env);
    CHECK(log.find("timeout_ms = ") != std::string::npos);
    CHECK(supervisor_log_shows(env, "task " + std::to_string(id) + ": already succeeded, skipped", 5000));
    CHECK(total_restarts(fleet) == 0);
    CHECK(eventually([&] { return fleet.status()["ready"] == 2; }, 15000));
    closing_audit(env, "12 consumer_timeout shorter than a query", {});
}

TEST_CASE("a client waiting while the broker restarts hears of the outcome, and sqlq run works after it",
          "[fault][broker][notify]") {
    Node node(5);
    Setup s = base_setup(1);
    s.broker_url = node.url();
    // Without a notification the waiter would look only after a minute.
    s.sections["store"] += "wait_poll_ms = 60000\n";
    Env env(s);
    Fleet fleet(env);
    // A task that ends while the broker is down: its outcome is committed all the same, and the
    // waiter, which never talks to the broker, hears of it.
    const int64_t id = submit(env, slow_query(3000));
    REQUIRE(eventually([&] { return fleet.worker_of(id) != 0; }, 30000));
    test::Process waiter({test::bin("sqlq"), "-c", env.config(), "wait", std::to_string(id)});
    node.stop();
    auto code = waiter.wait(60000);
    INFO(waiter.log());
    REQUIRE(code);
    CHECK(*code == 0);
    node.start();
    // The worker reconnects; a whole run (submit, wait, result) goes through.
    auto r = fault::cli(env, {"run", "--format", "csv", "SELECT 5 AS n"});
    INFO(r.err);
    CHECK(r.code == 0);
    CHECK(r.out == "n\r\n5\r\n");
    REQUIRE(drained(env, 60000));
    closing_audit(env, "13 broker restarted while a client waits", {});
}
