// The PostgreSQL task store beyond the contract every store passes (unit/store.tests.cpp, built
// into this suite too): owners on other hosts, the database's clock, LISTEN/NOTIFY, a server
// that restarts, bad URLs; and a fleet on it, end to end.
#include <catch2/catch.hpp>

#include <csignal>
#include <thread>

#include <nlohmann/json.hpp>

#include "service/task_service.h"
#include "support/harness.h"
#include "support/postgres.h"
#include "task/store.h"
#include "util/clock.h"

using namespace sqlq;
using namespace sqlq::test;
using nlohmann::json;
using Kind = TaskStore::ClaimKind;

namespace {
constexpr int kReady = 20000;

StoreConfig store_config(const std::string& url) {
    StoreConfig c;
    c.url = url;
    c.lease_ms = 60000;  // nobody's lease runs out during a test unless it says so
    c.durability = "normal";
    return c;
}

Outcome ok_outcome() {
    Outcome o;
    o.row_count = 1;
    o.result = ResultData{"[\"1\"]", "[[1]]"};
    return o;
}

int64_t server_now(const std::string& url) {
    return PgAdmin(url).count("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint");
}

// A PostgreSQL server of the test's own (the fixture's is shared: it must not restart).
struct OwnServer {
    TempDir dir;
    std::string port = run({source_dir() + "/scripts/free-port.sh"}).out.substr(0, 5);
    std::string url = "postgresql://sqlq_store:store-pw-1@127.0.0.1:" + port + "/sqlq_store";
    Result pg(const std::vector<std::string>& args) {
        std::vector<std::string> argv{source_dir() + "/scripts/postgres.sh"};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv, "", 120000, {{"SQLQ_PG_FSYNC", "off"}});
    }
    OwnServer() {
        REQUIRE(pg({"start", dir.path, port}).code == 0);
        REQUIRE(pg({"psql", dir.path, "-d", "postgres", "-c", "CREATE ROLE sqlq_store LOGIN PASSWORD 'store-pw-1'"}).code == 0);
        REQUIRE(pg({"psql", dir.path, "-d", "postgres", "-c", "CREATE DATABASE sqlq_store OWNER sqlq_store"}).code == 0);
    }
    ~OwnServer() { pg({"stop", dir.path}); }
};
}  // namespace

TEST_CASE("a task on another host whose supervisor recorded its worker lost is taken over at once",
          "[postgres][store][hosts]") {
    ScratchDatabase db;
    auto store = open_store(store_config(db.url));
    int64_t id = store->insert("SELECT 1", "alice");
    const Owner there{"host-b.example", 4242, 99};  // not this host: its process cannot be looked at
    REQUIRE(store->claim(id, there, 3).kind == Kind::claimed);
    const Owner me = Owner::self();
    // Its lease has a minute to run: held.
    CHECK(store->claim(id, me, 3).kind == Kind::held);
    // Its supervisor saw it die and says so in the store: any host takes the task over now.
    store->owner_lost(id, there, "its worker died: signal 9 (KILL)");
    auto c = store->claim(id, me, 3);
    REQUIRE(c.kind == Kind::claimed);
    CHECK(c.token == 2);
    auto t = store->get(id);
    CHECK(t->owner == me.name());
    REQUIRE(t->recovery_ms);
    CHECK(*t->recovery_ms >= 0);
    CHECK(*t->recovery_ms < 60000);
    // The old owner is fenced out; a record of another owner's loss changes nothing.
    CHECK_FALSE(store->finish(id, 1, ok_outcome()));
    store->owner_lost(id, there, "late news");
    CHECK(store->claim(id, Owner{"host-c", 1, 1}, 3).kind == Kind::held);
    CHECK(store->finish(id, c.token, ok_outcome()));
}

TEST_CASE("the store's times are the database's clock, not the host's", "[postgres][store][clock]") {
    ScratchDatabase db;
    auto store = open_store(store_config(db.url));  // no clock injected: the server's
    const int64_t before = server_now(db.url);
    int64_t id = store->insert("SELECT 1", "alice");
    auto c = store->claim(id, Owner::self(), 3);
    const int64_t after = server_now(db.url);
    REQUIRE(c.kind == Kind::claimed);
    auto t = store->get(id);
    CHECK(t->created_at >= before);
    CHECK(t->created_at <= after);
    CHECK(*t->started_at >= t->created_at);
    CHECK(*t->started_at <= after);
    CHECK(*t->lease_until == *t->started_at + 60000);
    CHECK(c.claimed_at == *t->started_at);
}

TEST_CASE("a watch hears a task end in another connection through LISTEN/NOTIFY, and nothing else",
          "[postgres][store][watch]") {
    ScratchDatabase db;
    auto store = open_store(store_config(db.url));
    auto other = open_store(store_config(db.url));
    int64_t id = store->insert("SELECT 1", "alice");
    auto w = store->watch();
    REQUIRE(w->live());
    REQUIRE(w->fd() >= 0);
    while (w->wait(0)) {
    }
    // Nobody writes: it times out.
    CHECK_FALSE(w->wait(200));
    // A submit, a claim, a lease renewal, a publish flag or a cancel request is no news for a
    // waiter (each would cost every claim a lock of the whole database through its commit).
    int64_t other_id = other->insert("SELECT 2", "bob");
    auto c = other->claim(id, Owner::self(), 3);
    REQUIRE(c.kind == Kind::claimed);
    other->tick(id, c.token, TaskStore::Renew::yes);
    other->mark_published(id);
    REQUIRE(other->request_cancel(id, "carol").kind == TaskStore::CancelKind::requested);
    CHECK_FALSE(w->wait(300));
    // The outcome is, within milliseconds of its commit.
    REQUIRE(other->finish(id, c.token, ok_outcome()));
    const int64_t t0 = mono_ms();
    CHECK(w->wait(10000));
    CHECK(mono_ms() - t0 < 5000);
    while (w->wait(50)) {
    }
    // So is a queued task cancelled, which ends at once.
    REQUIRE(other->request_cancel(other_id, "carol").kind == TaskStore::CancelKind::cancelled);
    CHECK(w->wait(10000));
}

TEST_CASE("a version 3 store migrates to 4: each user's turn is kept, and only endings notify",
          "[postgres][store][migrate]") {
    ScratchDatabase db;
    std::vector<int64_t> a, b;
    {
        auto store = open_store(store_config(db.url));
        a = store->insert_batch({"SELECT 'a1'", "SELECT 'a2'"}, "alice");
        b = store->insert_batch({"SELECT 'b1'", "SELECT 'b2'"}, "bob");
    }
    // Back to version 3 as it was made: the users' turns in a table of their own (bob served
    // before alice), a notification on every status change.
    PgAdmin admin(db.url);
    admin.query("DROP TRIGGER sqlq_tasks_ended ON sqlq_tasks; DROP INDEX sqlq_tasks_served; "
                "ALTER TABLE sqlq_tasks DROP COLUMN served; "
                "CREATE TABLE sqlq_users (name text PRIMARY KEY, served bigint NOT NULL); "
                "INSERT INTO sqlq_users VALUES ('alice', 2), ('bob', 1); "
                "CREATE TRIGGER sqlq_tasks_notify AFTER INSERT OR UPDATE OF status, cancel_requested_at ON sqlq_tasks "
                "FOR EACH STATEMENT EXECUTE FUNCTION sqlq_tasks_notify(); "
                "DELETE FROM sqlq_schema WHERE version = 4");
    auto store = open_store(store_config(db.url));
    CHECK(admin.count("SELECT max(version) FROM sqlq_schema") == 4);
    CHECK(admin.count("SELECT count(*) FROM pg_tables WHERE tablename = 'sqlq_users'") == 0);
    CHECK(admin.count("SELECT count(*) FROM pg_trigger WHERE tgname = 'sqlq_tasks_notify'") == 0);
    // bob was served longer ago: his oldest goes first although alice's tasks are older; then alice.
    auto first = store->claim_next(a[0], Owner::self(), TaskStore::ClaimRules{});
    REQUIRE(first.kind == Kind::claimed);
    CHECK(first.id == b[0]);
    auto second = store->claim_next(a[1], Owner::self(), TaskStore::ClaimRules{});
    REQUIRE(second.kind == Kind::claimed);
    CHECK(second.id == a[0]);
    // The new trigger: a claim is no news, an ending is.
    auto w = store->watch();
    REQUIRE(w->live());
    while (w->wait(0)) {
    }
    REQUIRE(store->claim_next(b[0], Owner::self(), TaskStore::ClaimRules{}).kind == Kind::claimed);
    CHECK_FALSE(w->wait(300));
    REQUIRE(store->finish(first.id, first.token, ok_outcome()));
    CHECK(w->wait(10000));
}

TEST_CASE("wait on a PostgreSQL store returns on the notification, not on a poll", "[postgres][store][watch]") {
    ScratchDatabase db;
    StoreConfig cfg = store_config(db.url);
    cfg.wait_poll_ms = 60000;  // a poll would come far too late
    auto store = open_store(cfg);
    int64_t id = store->insert("SELECT 1", "alice");
    Config config;
    config.store = cfg;
    TaskService service(config, open_store(cfg));
    std::thread finisher([&] {
        auto s = open_store(cfg);
        auto c = s->claim(id, Owner::self(), 3);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the load the waiter waits out
        s->finish(id, c.token, ok_outcome());
    });
    const int64_t t0 = mono_ms();
    auto waited = service.wait(id, 30000);
    const int64_t took = mono_ms() - t0;
    finisher.join();
    CHECK_FALSE(waited.timed_out);
    CHECK(waited.task.status == Status::succeeded);
    CHECK(took < 10000);
}

TEST_CASE("a store server that restarts: calls in between fail as transient, the next ones connect again",
          "[postgres][store][restart]") {
    OwnServer server;
    auto store = open_store(store_config(server.url));
    int64_t id = store->insert("SELECT 1", "alice");
    auto w = store->watch();
    REQUIRE(w->live());

    REQUIRE(server.pg({"stop", server.dir.path}).code == 0);
    try {
        store->get(id);
        FAIL("a call with the server down must throw");
    } catch (const StoreError& e) {
        CHECK(e.transient());
        CHECK_THAT(e.what(), Catch::Contains("127.0.0.1:" + server.port));
    }
    REQUIRE(server.pg({"start", server.dir.path, server.port}).code == 0);
    // The connection is made again by the next call; the store has kept its tasks.
    REQUIRE(store->get(id));
    CHECK(store->insert("SELECT 2", "alice") == id + 1);
    // The watch connects again too, and reports a change (what it missed is unknown).
    CHECK(eventually([&] { return w->wait(100) && w->live(); }, 10000));
}

TEST_CASE("a [store] url that cannot be used is one clear error, never showing the password",
          "[postgres][store][errors]") {
    SECTION("not a URL libpq can read") {
        StoreConfig c = store_config("postgresql://sqlq:s3cret-pw@db.example/sqlq?no_such_option=1");
        try {
            open_store(c);
            FAIL("no error");
        } catch (const StoreError& e) {
            FAIL(e.what());
        } catch (const Error& e) {
            CHECK(e.exit_code() == kExitUsage);
            CHECK_THAT(e.what(), Catch::Contains("[store] url"));
            CHECK_THAT(e.what(), !Catch::Contains("s3cret-pw"));
        }
    }
    SECTION("a server that does not answer") {
        const std::string port = run({source_dir() + "/scripts/free-port.sh"}).out.substr(0, 5);
        StoreConfig c = store_config("postgresql://sqlq:s3cret-pw@127.0.0.1:" + port + "/sqlq?connect_timeout=2");
        try {
            open_store(c);
            FAIL("no error");
        } catch (const StoreError& e) {
            CHECK(e.transient());
            CHECK_THAT(e.what(), Catch::Contains("cannot connect to the task store postgresql://sqlq:***@127.0.0.1"));
            CHECK_THAT(e.what(), !Catch::Contains("s3cret-pw"));
        }
    }
}

TEST_CASE("a fleet on a PostgreSQL task store: results, wait, cancel, a killed worker, a clean audit",
          "[postgres][store][pipeline]") {
    ScratchDatabase db;
    Setup s;
    s.workers = 2;
    s.store_url = db.url;
    Env env(s);
    Fleet fleet(env);
    auto ids = submit_batch(env, {"SELECT 1 AS one", "SELECT count(*) FROM orders", "SELECT 1/0 + x"});
    CHECK(cli(env, {"wait", std::to_string(ids[0]), "--timeout", "60"}).code == 0);
    CHECK(cli(env, {"wait", std::to_string(ids[1]), "--timeout", "60"}).code == 0);
    CHECK(cli(env, {"wait", std::to_string(ids[2]), "--timeout", "60"}).code == 10);
    CHECK(cli(env, {"result", std::to_string(ids[0]), "--format", "csv"}).out == "one\r\n1\r\n");
    CHECK(show(env, ids[1])["rows"] == 1);
    CHECK(show(env, ids[2])["status"] == "failed");

    // A stop ends a running task, recorded cancelled.
    int64_t slow = submit(env, "SELECT sqlq_test_hang(20000)");
    REQUIRE(eventually([&] { return show(env, slow)["status"] == "running"; }, kReady));
    auto c = cli(env, {"cancel", std::to_string(slow)});
    INFO(c.out << c.err);
    CHECK(c.code == 0);
    CHECK(show(env, slow)["status"] == "cancelled");

    // A worker killed mid-task: its task runs again (its supervisor recorded the loss), once.
    int64_t victim = submit(env, "SELECT sqlq_test_hang(1500)");
    pid_t w = 0;
    REQUIRE(eventually([&] { return (w = fleet.worker_of(victim)) != 0; }, kReady));
    ::kill(w, SIGKILL);
    CHECK(cli(env, {"wait", std::to_string(victim), "--timeout", "60"}).code == 0);
    auto t = show(env, victim);
    CHECK(t["attempts"] == 2);
    CHECK(t["outcomes"] == 1);

    auto a = audit(env);
    INFO(a.dump());
    CHECK(a["lost"] == 0);
    CHECK(a["queue_left"] == 0);
    CHECK(a["exit_code"] == 0);
    fleet.stop();
}

TEST_CASE("the PostgreSQL task store restarts under load: nothing lost, nothing twice, a clean audit",
          "[postgres][store][restart][pipeline]") {
    OwnServer server;
    Setup s;
    s.workers = 3;
    s.store_url = server.url;
    Env env(s);
    Fleet fleet(env);
    std::vector<std::string> sqls;
    for (int i = 0; i < 150; ++i) sqls.push_back("SELECT " + std::to_string(i) + ", sqlq_test_hang(20)");
    auto ids = submit_batch(env, sqls);
    REQUIRE(eventually([&] { return show(env, ids[20])["status"] == "succeeded"; }, 60000));
    REQUIRE(server.pg({"restart", server.dir.path}).code == 0);
    for (int64_t id : ids) {
        auto r = cli(env, {"wait", std::to_string(id), "--timeout", "120"});
        INFO("task " << id << ": " << r.out << r.err);
        CHECK(r.code == 0);
    }
    auto a = audit(env);
    INFO(a.dump());
    CHECK(a["lost"] == 0);
    CHECK(a["duplicate_outcomes"] == 0);
    CHECK(a["queue_left"] == 0);
    CHECK(a["exit_code"] == 0);
    CHECK(fleet.status()["alive"] == 3);
    fleet.stop();
}
