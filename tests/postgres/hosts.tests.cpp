// Two hosts on one PostgreSQL task store. The second host is this machine in a UTS namespace of
// its own (hostname "hostb"): the first host's workers are remote owners for it, whose liveness
// only their lease (or their supervisor's record of their loss) tells, as on a second machine.
// What these tests assert is the cross-host guarantee (an outcome recorded once, fenced by the
// attempt token), not a timing: bench/ measures the overlap window (docs/reliability.md).
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/harness.h"
#include "support/postgres.h"
#include "task/store.h"
#include "util/clock.h"

using namespace sqlq;
using namespace sqlq::test;

namespace {
constexpr int kReady = 20000;

// A supervisor on "host B": the config of `env` (same broker, queue and store) copied into a
// directory of its own (so its own run dir), started in a new UTS namespace; stopped at the end.
class OtherHost {
public:
    explicit OtherHost(const Env& env) : config_(dir_.path + "/sqlq.conf") {
        std::filesystem::copy_file(env.config(), config_);
    }
    ~OtherHost() { run({bin("sqlq-supervisor"), "stop", "-c", config_}); }
    OtherHost(const OtherHost&) = delete;
    Result start() {
        return run({"/usr/bin/unshare", "--uts", "sh", "-c", "hostname hostb && exec \"$0\" \"$@\"", bin("sqlq-supervisor"),
                    "start", "-c", config_});
    }
    std::string log() const { return read_file(dir_.path + "/run/supervisor.log"); }

private:
    TempDir dir_;
    std::string config_;
};

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }
}  // namespace

TEST_CASE("two hosts on one PostgreSQL store: a wedged worker's task is taken over by the other host after its "
          "lease, the outcome is recorded once, by that attempt, and the wedged attempt's late write is refused",
          "[postgres][store][hosts]") {
    ScratchDatabase db;
    Setup s;
    s.workers = 1;
    s.store_url = db.url;
    // A short heartbeat, so that the broker soon gives the wedged worker's delivery back; a short
    // lease; a watchdog that leaves the wedged worker alive throughout: the window that the start
    // warning is about, held open on purpose.
    s.sections["broker"] = "heartbeat_s = 1\n";
    s.sections["store"] = "lease_ms = 1000\n";
    s.sections["supervisor"] = "watchdog_ms = 60000\n";
    Env env(s);
    Fleet host_a(env);
    CHECK(has(host_a.start_result.err, "[store] lease_ms = 1000 ms is shorter"));

    // A query that computes (SQLite's progress handler keeps its heartbeats and its lease going),
    // not one stuck in native code: host B's run must not fall silent in turn, or the broker and
    // the lease would hand the task back to A, and so on.
    int64_t id = submit(env, slow_query(4000));
    pid_t wedged = 0;
    REQUIRE(eventually([&] { return (wedged = host_a.worker_of(id)) != 0; }, kReady));
    REQUIRE(::kill(wedged, SIGSTOP) == 0);
    OtherHost host_b(env);
    auto started = host_b.start();
    INFO(started.out << started.err);
    REQUIRE(started.code == 0);

    // Host B's worker gets the delivery once the broker dropped A's silent connection, and takes
    // the task over: its owner is alive, but on another host, so its lease decides.
    REQUIRE(eventually([&] { return show(env, id)["attempts"].get<int>() >= 2; }, 30000));
    CHECK(::kill(wedged, 0) == 0);  // the wedged worker is still there: across hosts, two runners
    CHECK(show(env, id)["owner"].get<std::string>().rfind("hostb:", 0) == 0);

    // It wakes up and finishes its run: the store refuses its outcome (fenced by the attempt).
    REQUIRE(::kill(wedged, SIGCONT) == 0);
    CHECK(eventually([&] {
        const auto log = supervisor_log(env);
        return has(log, "task " + std::to_string(id) + ": outcome succeeded of attempt 1 not recorded") ||
               has(log, "task " + std::to_string(id) + ": attempt 1 lost its claim");
    }, 20000));
    const int waited = cli(env, {"wait", std::to_string(id), "--timeout", "60"}).code;
    auto t = show(env, id);
    INFO(t.dump() << "\nhost A:\n" << supervisor_log(env) << "\nhost B:\n" << host_b.log());
    REQUIRE(waited == 0);
    CHECK(t["outcomes"] == 1);
    CHECK(t["attempts"] == 2);
    CHECK(t["executions"] == 2);
    CHECK(t["owner"].get<std::string>().rfind("hostb:", 0) == 0);  // recorded by the attempt that took over
    CHECK(has(host_b.log(), "task " + std::to_string(id) + ": succeeded"));
    auto a = audit(env);
    INFO(a.dump());
    CHECK(a["lost"] == 0);
    CHECK(a["duplicate_outcomes"] == 0);
    CHECK(a["queue_left"] == 0);
}

TEST_CASE("start warns when a task store shared by hosts has a lease shorter than the watchdog can enforce",
          "[postgres][store][hosts][supervisor]") {
    ScratchDatabase db;
    Setup s;
    s.workers = 0;
    s.store_url = db.url;
    s.sections["store"] = "lease_ms = 3000\n";
    Env env(s);
    {
        Fleet fleet(env);
        INFO(fleet.start_result.err);
        // The defaults: watchdog_ms = 30000, so the floor is 1.5 * (30000 + 2000).
        CHECK(has(fleet.start_result.err, "[store] lease_ms = 3000 ms is shorter than what this host's supervisor "
                                          "enforces on a store shared by hosts ([supervisor] watchdog_ms = 30000 ms)"));
        CHECK(has(fleet.start_result.err, "for up to about 29000 ms; lease_ms >= 48000 closes that window"));
    }
    SECTION("a lease that outlasts the watchdog: no warning") {
        s.sections["store"] = "lease_ms = 48000\n";
        env.rewrite(s);
        Fleet quiet(env);
        CHECK_FALSE(has(quiet.start_result.err, "lease_ms"));
    }
    SECTION("the floor follows the watchdog") {
        s.sections["store"] = "lease_ms = 9000\n";
        s.sections["supervisor"] = "watchdog_ms = 4000\n";
        env.rewrite(s);
        Fleet quiet(env);
        CHECK_FALSE(has(quiet.start_result.err, "lease_ms"));
    }
    SECTION("a SQLite store (one host): no warning, whatever the lease") {
        Setup one_host = s;
        one_host.store_url.clear();
        one_host.store_path = "own.db";
        Env local(one_host);
        Fleet quiet(local);
        CHECK_FALSE(has(quiet.start_result.err, "lease_ms"));
    }
}

TEST_CASE("a running task's elapsed time is counted on the store's clock, not on a client host's clock 10 minutes "
          "off",
          "[postgres][store][clock]") {
    ScratchDatabase db;
    Setup s;
    s.store_url = db.url;
    Env env(s);
    PgAdmin admin(db.url);
    auto store = open_store(env.cfg().store);
    const int64_t id = store->insert("SELECT 1", "alice");
    REQUIRE(store->claim(id, Owner::self(), 3).kind == TaskStore::ClaimKind::claimed);
    // Started 5 s ago by the database's clock (the clock the store records every time on).
    REQUIRE(admin.query("UPDATE sqlq_tasks SET started_at = sqlq_now_ms() - 5000 WHERE id = " + std::to_string(id) +
                        " RETURNING id")
                .size() == 1);
    for (const int64_t offset_s : {600, -600}) {
        std::string asan = std::getenv("ASAN_OPTIONS") ? std::getenv("ASAN_OPTIONS") : "";
        const std::map<std::string, std::string> off = {
            {"LD_PRELOAD", SQLQ_CLOCK_OFFSET_LIB},
            {"SQLQ_TEST_CLOCK_OFFSET_S", std::to_string(offset_s)},
            {"ASAN_OPTIONS", asan + (asan.empty() ? "" : ":") + "verify_asan_link_order=0"}};
        auto sqlq = [&](std::vector<std::string> args) {
            args.insert(args.begin(), {bin("sqlq"), "-c", env.config()});
            return run(args, "", 60000, off);
        };
        auto in_range = [](const nlohmann::json& t) {
            INFO(t.dump());
            return t["elapsed_ms"].is_number() && t["elapsed_ms"].get<int64_t>() >= 5000 &&
                   t["elapsed_ms"].get<int64_t>() < 65000;
        };
        INFO("clock " << offset_s << " s off");
        auto date = run({"/bin/date", "+%s"}, "", 10000, off);  // the shim works
        CHECK(std::llabs(std::stoll(date.out) - now_ms() / 1000 - offset_s) < 30);
        auto shown = sqlq({"show", "--json", std::to_string(id)});
        INFO(shown.out << shown.err);
        CHECK(in_range(nlohmann::json::parse(shown.out, nullptr, false)));
        auto listed = nlohmann::json::parse(sqlq({"list", "--json"}).out, nullptr, false);
        REQUIRE(listed.is_array());
        REQUIRE(listed.size() == 1);
        CHECK(in_range(listed[0]));
        auto waited = sqlq({"wait", "--json", "--timeout", "0.1", std::to_string(id)});
        INFO(waited.out << waited.err);
        CHECK(in_range(nlohmann::json::parse(waited.out, nullptr, false)));
        // The table: "5s"-ish, not "10m" (or nothing).
        auto text = sqlq({"show", std::to_string(id)});
        CHECK(text.out.find("(running)") != std::string::npos);
        CHECK(text.out.find("10m") == std::string::npos);
    }
}
