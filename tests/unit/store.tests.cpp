// The task store's contract: what every store engine must do, tested through the TaskStore
// interface only (task/store.h). Each test case runs once per engine in store_engines(); an
// engine's own internals (files, locks, fsyncs) are tested beside it (sqlite_store.tests.cpp).
#include <catch2/catch.hpp>

#include <filesystem>
#include <functional>
#include <map>
#include <sys/wait.h>
#include <unistd.h>

#include "task/store.h"
#include "util/process.h"
#ifdef SQLQ_STORE_TESTS_POSTGRES
#include "support/postgres.h"
#endif

using namespace sqlq;
using Liveness = StoreDeps::Liveness;

namespace {

// The engines under test. A new engine adds its name here and its set-up in StoreUnderTest. The
// unit tests run SQLite; the same file, built into the postgres suite (which has a private
// server, the CTest fixture "postgres"), runs PostgreSQL.
#ifdef SQLQ_STORE_TESTS_POSTGRES
std::vector<std::string> store_engines() { return {"postgres"}; }
#else
std::vector<std::string> store_engines() { return {"sqlite"}; }
#endif

// One fresh, empty store of an engine, with the world it sees under the test's control: a
// clock that moves only when told, and owners declared alive or dead (any other owner is
// looked up as a process on this host, as in production).
struct StoreUnderTest {
    std::string engine;
    std::string dir;
    StoreConfig cfg;
    int64_t now = 1'800'000'000'000;
    std::map<std::string, Liveness> owners;  // by Owner::name()

    explicit StoreUnderTest(std::string e) : engine(std::move(e)) {
        char tmpl[] = "/tmp/sqlq-store-XXXXXX";
        dir = mkdtemp(tmpl);
        cfg.path = dir + "/tasks.db";
        cfg.lease_ms = 1000;
        cfg.durability = "normal";
#ifdef SQLQ_STORE_TESTS_POSTGRES
        if (engine == "postgres") {
            database = std::make_unique<test::ScratchDatabase>();
            cfg.url = database->url;
        }
#endif
    }
    ~StoreUnderTest() { std::filesystem::remove_all(dir); }
#ifdef SQLQ_STORE_TESTS_POSTGRES
    std::unique_ptr<test::ScratchDatabase> database;  // PostgreSQL: the test's own database
#endif

    StoreDeps deps() {
        StoreDeps d;
        d.clock = [this] { return now; };
        d.owner_alive = [this](const Owner& o) {
            auto it = owners.find(o.name());
            return it == owners.end() ? StoreDeps::local_process(o) : it->second;
        };
        return d;
    }
    std::unique_ptr<TaskStore> open() { return open_store(cfg, deps()); }

    // An owner on another host whose process this host cannot see.
    Owner remote(int64_t pid = 1) {
        Owner o{"elsewhere", pid, 1};
        owners[o.name()] = Liveness::unknown;
        return o;
    }
    // An owner known to be gone (the supervisor saw it die, or pid + start time say so).
    Owner dead(int64_t pid) {
        Owner o{"host-a", pid, 7};
        owners[o.name()] = Liveness::dead;
        return o;
    }
    Owner alive(int64_t pid) {
        Owner o{"host-a", pid, 7};
        owners[o.name()] = Liveness::alive;
        return o;
    }
};

Outcome ok_outcome() {
    Outcome o;
    o.status = Status::succeeded;
    o.row_count = 1;
    o.result = ResultData{"[\"1\"]", "[[1]]"};
    return o;
}

using Kind = TaskStore::ClaimKind;
using Renew = TaskStore::Renew;

}  // namespace

TEST_CASE("a queued task is claimed once, runs, and its outcome is stored once", "[store][claim]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    Owner me = w.alive(100);

    auto c = store->claim(id, me, 3);
    REQUIRE(c.kind == Kind::claimed);
    CHECK(c.token == 1);
    CHECK(c.sql == "SELECT 1");
    auto t = store->get(id);
    CHECK(t->status == Status::running);
    CHECK(t->attempts == 1);
    CHECK(t->executions == 1);
    CHECK(t->owner == me.name());
    CHECK(t->started_at == w.now);
    CHECK(t->lease_until == w.now + w.cfg.lease_ms);

    SECTION("a second claim while the owner lives is held off") {
        CHECK(store->claim(id, w.alive(101), 3).kind == Kind::held);
    }
    SECTION("the outcome is written once, then redeliveries are skipped") {
        w.now += 250;
        REQUIRE(store->finish(id, c.token, ok_outcome()));
        CHECK_FALSE(store->finish(id, c.token, ok_outcome()));
        auto done = store->get(id);
        CHECK(done->status == Status::succeeded);
        CHECK(done->outcomes == 1);
        CHECK(done->finished_at == w.now);
        CHECK(done->result_ref == "results/" + std::to_string(id));
        CHECK(store->result(id)->rows_json == "[[1]]");
        CHECK(store->result(id)->columns_json == "[\"1\"]");
        auto again = store->claim(id, me, 3);
        CHECK(again.kind == Kind::finished);
        CHECK(again.status == Status::succeeded);
        CHECK(store->get(id)->executions == 1);
    }
}

TEST_CASE("a task whose owner died is taken over, and the old owner is fenced out", "[store][claim][fencing]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    Owner ghost = w.dead(200);
    auto first = store->claim(id, ghost, 3);
    REQUIRE(first.kind == Kind::claimed);

    // Its lease still runs: a dead owner is taken over at once, without waiting for it.
    auto second = store->claim(id, w.alive(201), 3);
    REQUIRE(second.kind == Kind::claimed);
    CHECK(second.token == 2);
    CHECK(store->get(id)->executions == 2);

    // The first attempt wakes up: it can neither renew nor record.
    CHECK_FALSE(store->tick(id, first.token, Renew::yes).still_owner);
    CHECK_FALSE(store->tick(id, first.token, Renew::no).still_owner);
    CHECK_FALSE(store->finish(id, first.token, ok_outcome()));
    CHECK(store->tick(id, second.token, Renew::yes).still_owner);
    CHECK(store->finish(id, second.token, ok_outcome()));
    CHECK(store->get(id)->outcomes == 1);
}

TEST_CASE("a task on another host is taken over only when its lease expires", "[store][claim][lease]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    REQUIRE(store->claim(id, w.remote(), 3).kind == Kind::claimed);
    auto held = store->claim(id, w.alive(300), 3);
    CHECK(held.kind == Kind::held);
    CHECK(held.lease_until == w.now + w.cfg.lease_ms);
    w.now += w.cfg.lease_ms;  // the lease's last moment
    CHECK(store->claim(id, w.alive(300), 3).kind == Kind::held);
    w.now += 1;
    CHECK(store->claim(id, w.alive(300), 3).kind == Kind::claimed);
}

TEST_CASE("renewing the lease keeps a task on another host from being taken over", "[store][lease]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    auto c = store->claim(id, w.remote(), 3);
    REQUIRE(c.kind == Kind::claimed);
    for (int i = 0; i < 5; ++i) {
        w.now += w.cfg.lease_ms / 2;
        REQUIRE(store->tick(id, c.token, Renew::yes).still_owner);
    }
    CHECK(store->claim(id, w.alive(301), 3).kind == Kind::held);
    w.now += w.cfg.lease_ms / 2;
    CHECK(store->tick(id, c.token, Renew::no).still_owner);  // a check alone does not renew
    w.now += w.cfg.lease_ms;
    CHECK(store->claim(id, w.alive(301), 3).kind == Kind::claimed);
}

TEST_CASE("a task whose worker dies every time fails after max attempts", "[store][claim][poison]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    for (int i = 1; i <= 3; ++i) REQUIRE(store->claim(id, w.dead(400 + i), 3).kind == Kind::claimed);
    CHECK(store->claim(id, w.alive(410), 3).kind == Kind::gave_up);
    auto t = store->get(id);
    CHECK(t->status == Status::failed);
    CHECK(t->executions == 3);
    CHECK(t->outcomes == 1);
    CHECK(t->error->find("gave up after 3 attempts") != std::string::npos);
}

TEST_CASE("cancel: queued at once, running on request, finished refused", "[store][cancel]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    using CK = TaskStore::CancelKind;
    SECTION("queued") {
        int64_t id = store->insert("SELECT 1", "alice");
        CHECK(store->request_cancel(id, "bob").kind == CK::cancelled);
        CHECK(store->claim(id, w.alive(500), 3).kind == Kind::finished);
        CHECK(store->get(id)->cancelled_by == "bob");
        CHECK(store->get(id)->status == Status::cancelled);
        CHECK(store->get(id)->executions == 0);
    }
    SECTION("running: the worker sees the request and records the cancel") {
        int64_t id = store->insert("SELECT 1", "alice");
        auto c = store->claim(id, w.alive(501), 3);
        CHECK_FALSE(store->tick(id, c.token, Renew::no).cancel_requested);
        CHECK(store->request_cancel(id, "bob").kind == CK::requested);
        CHECK(store->tick(id, c.token, Renew::no).cancel_requested);
        CHECK(store->tick(id, c.token, Renew::yes).cancel_requested);
        Outcome o;
        o.status = Status::cancelled;
        w.now += 40;
        CHECK(store->finish(id, c.token, o));
        auto t = store->get(id);
        CHECK(t->status == Status::cancelled);
        CHECK(*t->finished_at - *t->cancel_requested_at == 40);
    }
    SECTION("running with its worker gone: the next claim records the cancel without running") {
        int64_t id = store->insert("SELECT 1", "alice");
        store->claim(id, w.dead(502), 3);
        store->request_cancel(id, "bob");
        CHECK(store->claim(id, w.alive(503), 3).kind == Kind::cancelled_now);
        CHECK(store->get(id)->executions == 1);
        CHECK(store->get(id)->status == Status::cancelled);
    }
    SECTION("finished") {
        int64_t id = store->insert("SELECT 1", "alice");
        auto c = store->claim(id, w.alive(504), 3);
        store->finish(id, c.token, ok_outcome());
        auto r = store->request_cancel(id, "bob");
        CHECK(r.kind == CK::already_finished);
        CHECK(r.status == Status::succeeded);
        CHECK(store->result(id));
    }
    SECTION("unknown") { CHECK(store->request_cancel(999, "bob").kind == CK::unknown); }
}

namespace {
// `procs` processes, each with a store of its own, claim at once: each opens its store, then all
// are released together to run `claims(store, p)`, whose count (of claims won, at most 127) is
// summed. Every claimant stays alive until all have claimed: a claimant that exited would be a
// dead owner, whose tasks are rightly taken over. Each one sees the real world (clock, processes).
int racing_claimants(const StoreConfig& cfg, int procs, const std::function<int(TaskStore&, int)>& claims) {
    int wins_pipe[2], go_pipe[2], release_pipe[2];
    REQUIRE(pipe(wins_pipe) == 0);
    REQUIRE(pipe(go_pipe) == 0);
    REQUIRE(pipe(release_pipe) == 0);
    std::vector<pid_t> pids;
    for (int p = 0; p < procs; ++p) {
        pid_t pid = fork();
        if (pid == 0) {
            close(go_pipe[1]);
            close(release_pipe[1]);
            signed char wins = 0;
            try {
                auto store = open_store(cfg);
                char c;
                (void)!read(go_pipe[0], &c, 1);  // returns when the parent closes it
                wins = static_cast<signed char>(claims(*store, p));
            } catch (...) {
                wins = -100;  // counted as a failure by the parent
            }
            (void)!write(wins_pipe[1], &wins, 1);
            char c;
            (void)!read(release_pipe[0], &c, 1);
            _exit(0);
        }
        pids.push_back(pid);
    }
    close(wins_pipe[1]);
    close(go_pipe[0]);
    close(release_pipe[0]);
    close(go_pipe[1]);  // go
    int total = 0;
    for (int p = 0; p < procs; ++p) {
        signed char wins = 0;
        REQUIRE(read(wins_pipe[0], &wins, 1) == 1);
        total += wins;
    }
    close(release_pipe[1]);
    for (pid_t pid : pids) {
        int st = 0;
        waitpid(pid, &st, 0);
    }
    close(wins_pipe[0]);
    return total;
}
}  // namespace

TEST_CASE("processes racing to claim one task: exactly one wins", "[store][claim][race]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    std::vector<int64_t> ids;
    {
        auto store = open_store(w.cfg);
        for (int i = 0; i < 20; ++i) ids.push_back(store->insert("SELECT 1", "alice"));
    }
    const int total = racing_claimants(w.cfg, 8, [&](TaskStore& store, int) {
        int wins = 0;
        for (int64_t id : ids)
            if (store.claim(id, Owner::self(), 3).kind == Kind::claimed) ++wins;
        return wins;
    });
    CHECK(total == 20);
    auto store = open_store(w.cfg);
    for (int64_t id : ids) CHECK(store->get(id)->attempts == 1);
}

TEST_CASE("processes taking the next task at once: each takes its own, none twice, none left", "[store][claim][race]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    constexpr int kProcs = 8, kEach = 5;
    std::vector<int64_t> ids;
    {
        auto store = open_store(w.cfg);
        ids = store->insert_batch(std::vector<std::string>(kProcs * kEach, "SELECT 1"), "alice");
    }
    // Each process delivers messages of its own (a message is one delivery's unit of work).
    const int total = racing_claimants(w.cfg, kProcs, [&](TaskStore& store, int p) {
        int wins = 0;
        for (int i = 0; i < kEach; ++i) {
            auto c = store.claim_next(ids[size_t(p * kEach + i)], Owner::self(), TaskStore::ClaimRules{});
            if (c.kind == Kind::claimed && store.get(c.id)->owner_pid == ::getpid()) ++wins;
        }
        return wins;
    });
    CHECK(total == kProcs * kEach);
    auto store = open_store(w.cfg);
    for (int64_t id : ids) {
        auto t = store->get(id);
        CHECK(t->status == Status::running);
        CHECK(t->attempts == 1);
    }
}

TEST_CASE("processes taking the next task at once: a user's running limit holds", "[store][claim][race][fair]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    std::vector<int64_t> ids;
    {
        auto store = open_store(w.cfg);
        ids = store->insert_batch(std::vector<std::string>(20, "SELECT 1"), "alice");
    }
    TaskStore::ClaimRules rules;
    rules.max_running_per_user = 3;
    const int total = racing_claimants(w.cfg, 8, [&](TaskStore& store, int p) {
        return store.claim_next(ids[size_t(p)], Owner::self(), rules).kind == Kind::claimed ? 1 : 0;
    });
    CHECK(total == 3);
    CHECK(open_store(w.cfg)->running_per_user() == std::map<std::string, int64_t>{{"alice", 3}});
}

TEST_CASE("results expire after their retention", "[store][retention]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    auto c = store->claim(id, w.alive(600), 3);
    store->finish(id, c.token, ok_outcome());
    w.now += 3600 * 1000;
    CHECK(store->expire_results(3600) == 0);  // exactly as old as the retention: kept
    CHECK(store->result(id));
    w.now += 1;
    CHECK(store->expire_results(3600) == 1);
    CHECK_FALSE(store->result(id));
    CHECK_FALSE(store->get(id)->result_ref);
    CHECK(store->get(id)->status == Status::succeeded);
}

TEST_CASE("a task marked published after it already ran still says so", "[store][publish]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    CHECK_FALSE(store->get(id)->published);
    auto c = store->claim(id, w.alive(700), 3);
    REQUIRE(store->finish(id, c.token, ok_outcome()));
    store->mark_published(id);  // the confirm arrives after the worker was done
    CHECK(store->get(id)->published);
}

TEST_CASE("a batch is stored in order, and list and counts see it", "[store][insert]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    auto ids = store->insert_batch({"SELECT 1", "SELECT 2", "SELECT 3"}, "carol");
    REQUIRE(ids.size() == 3);
    CHECK(ids[0] < ids[1]);
    CHECK(ids[1] < ids[2]);
    CHECK(store->get(ids[1])->sql == "SELECT 2");
    CHECK(store->get(ids[1])->submitter == "carol");
    CHECK(store->get(ids[1])->created_at == w.now);
    store->request_cancel(ids[0], "carol");
    auto all = store->list(std::nullopt, 10);
    REQUIRE(all.size() == 3);
    CHECK(all.front().id == ids[2]);  // newest first
    auto queued = store->list(Status::queued, 10);
    CHECK(queued.size() == 2);
    CHECK(store->list(std::nullopt, 1).size() == 1);
    auto n = store->counts();
    CHECK(n["queued"] == 2);
    CHECK(n["cancelled"] == 1);
    CHECK(n["running"] == 0);
    CHECK_FALSE(store->get(ids[2] + 100));
}

TEST_CASE("list filters by submitter, alone or with a status, newest first", "[store][list]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t a1 = store->insert("SELECT 1", "alice");
    int64_t b1 = store->insert("SELECT 2", "bob");
    int64_t a2 = store->insert("SELECT 3", "alice");
    store->insert("SELECT 4", "alice bob");  // a name is matched whole, not as a part
    store->request_cancel(a1, "alice");
    using F = TaskStore::ListFilter;
    auto ids = [](const std::vector<Task>& ts) {
        std::vector<int64_t> v;
        for (const auto& t : ts) v.push_back(t.id);
        return v;
    };
    CHECK(ids(store->list(F{std::nullopt, "alice", 10})) == std::vector<int64_t>{a2, a1});
    CHECK(ids(store->list(F{std::nullopt, "bob", 10})) == std::vector<int64_t>{b1});
    CHECK(ids(store->list(F{Status::queued, "alice", 10})) == std::vector<int64_t>{a2});
    CHECK(ids(store->list(F{std::nullopt, "alice", 1})) == std::vector<int64_t>{a2});
    CHECK(store->list(F{std::nullopt, "nobody", 10}).empty());
    CHECK(store->list(F{std::nullopt, std::nullopt, 10}).size() == 4);
}

TEST_CASE("the sweeper's queries: unpublished, stale queued and orphaned running tasks", "[store][sweeper]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    using Idle = TaskStore::QueueIdle;
    int64_t unpublished = store->insert("SELECT 1", "a");
    int64_t published = store->insert("SELECT 2", "a");
    store->mark_published(published);
    int64_t orphan = store->insert("SELECT 3", "a");
    store->mark_published(orphan);
    REQUIRE(store->claim(orphan, w.remote(), 3).kind == Kind::claimed);
    CHECK(store->to_republish(1000, 5000, Idle::yes, 3).empty());  // all too young
    w.now += 1001;
    CHECK(store->to_republish(1000, 5000, Idle::yes, 3) == std::vector<int64_t>{unpublished});
    w.now += 5000;
    CHECK(store->to_republish(1000, 5000, Idle::no, 3) == std::vector<int64_t>{unpublished, orphan});
    CHECK(store->to_republish(1000, 5000, Idle::yes, 3) == std::vector<int64_t>{unpublished, published, orphan});
    // Claimed max_attempts times: never republished (the orphan has had 1 claim).
    CHECK(store->to_republish(1000, 5000, Idle::yes, 1) == std::vector<int64_t>{unpublished, published});
}

TEST_CASE("the sweeper gives up a stale running task past max_attempts instead of republishing it",
          "[store][sweeper][attempts]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t worn = store->insert("SELECT 1", "a");
    int64_t fresh = store->insert("SELECT 2", "a");
    int64_t paused = store->insert("SELECT 3", "a");
    store->mark_published({worn, fresh, paused});
    for (int64_t pid = 900; pid < 903; ++pid) {
        w.now += 2000;  // each owner's lease runs out before the next takes over
        REQUIRE(store->claim(worn, w.dead(pid), 3).kind == Kind::claimed);
    }
    REQUIRE(store->claim(fresh, w.dead(910), 3).kind == Kind::claimed);
    for (int64_t pid = 920; pid < 922; ++pid) REQUIRE(store->claim(paused, w.dead(pid), 3).kind == Kind::claimed);
    w.now += 2000;
    REQUIRE(store->claim(paused, w.alive(922), 3).kind == Kind::claimed);  // alive, lease out: paused
    w.now += 10000;
    CHECK(store->to_republish(1000, 5000, TaskStore::QueueIdle::yes, 3) == std::vector<int64_t>{fresh});
    CHECK(store->give_up_stale(5000, 3) == std::vector<int64_t>{worn});
    auto t = store->get(worn);
    CHECK(t->status == Status::failed);
    CHECK(t->error == "gave up after 3 attempts: the worker running it was lost each time (it died, or stopped renewing its lease)");
    CHECK(t->outcomes == 1);
    CHECK(store->get(paused)->status == Status::running);
    CHECK(store->give_up_stale(5000, 3).empty());
}

TEST_CASE("a task nobody works on can be failed with a reason, a live owner's task cannot",
          "[store][fail]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    using FK = TaskStore::FailKind;
    int64_t queued = store->insert("SELECT 1", "a");
    int64_t orphan = store->insert("SELECT 2", "a");
    int64_t held = store->insert("SELECT 3", "a");
    int64_t mine = store->insert("SELECT 4", "a");
    int64_t to_cancel = store->insert("SELECT 5", "a");
    REQUIRE(store->claim(orphan, w.dead(700), 3).kind == Kind::claimed);
    REQUIRE(store->claim(held, w.alive(701), 3).kind == Kind::claimed);
    REQUIRE(store->claim(mine, w.alive(702), 3).kind == Kind::claimed);
    REQUIRE(store->claim(to_cancel, w.dead(703), 3).kind == Kind::claimed);
    store->request_cancel(to_cancel, "a");

    CHECK(store->fail_unowned(queued, "dead-lettered by the broker: delivery_limit", Owner{}) == FK::failed);
    CHECK(store->get(queued)->status == Status::failed);
    CHECK(store->get(queued)->error == "dead-lettered by the broker: delivery_limit");
    CHECK(store->fail_unowned(orphan, "x", Owner{}) == FK::failed);
    CHECK(store->fail_unowned(held, "x", Owner{}) == FK::held);
    CHECK(store->get(held)->status == Status::running);
    CHECK(store->fail_unowned(mine, "out of memory", w.alive(702)) == FK::failed);
    CHECK(store->fail_unowned(to_cancel, "x", Owner{}) == FK::cancelled);
    CHECK(store->get(to_cancel)->status == Status::cancelled);
    CHECK(store->fail_unowned(queued, "again", Owner{}) == FK::finished);
    CHECK(store->get(queued)->outcomes == 1);
    CHECK(store->fail_unowned(queued + 1000, "x", Owner{}) == FK::unknown);
    // A fenced-out owner cannot record over it.
    CHECK_FALSE(store->finish(orphan, 1, ok_outcome()));
}

TEST_CASE("the audit counts outcomes, re-runs, unpublished and stuck tasks", "[store][audit]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t done = store->insert("SELECT 1", "a");
    int64_t rerun = store->insert("SELECT 2", "a");
    int64_t stuck = store->insert("SELECT 3", "a");
    store->mark_published({done, rerun, stuck});
    int64_t queued = store->insert("SELECT 4", "a");
    auto c = store->claim(done, w.alive(800), 3);
    store->finish(done, c.token, ok_outcome());
    Owner lost = w.dead(801);
    store->claim(rerun, lost, 3);
    store->owner_lost(rerun, lost, "its worker died: signal 9 (KILL)");
    w.now += 30;
    auto c2 = store->claim(rerun, w.alive(802), 3);
    REQUIRE(c2.token == 2);
    store->claim(stuck, w.dead(803), 3);
    auto f = store->audit();
    CHECK(f.by_status["succeeded"] == 1);
    CHECK(f.by_status["running"] == 2);
    CHECK(f.by_status["queued"] == 1);
    CHECK(f.unpublished == 1);
    CHECK(f.duplicate_outcomes == 0);
    CHECK(f.reexecuted == 1);
    CHECK(f.recovery_ms == std::vector<int64_t>{30});
    CHECK(f.stuck_ids == std::vector<int64_t>{stuck});
    CHECK(f.stuck == 1);
    CHECK(f.queued_stale == 0);
    w.now += 5001;
    CHECK(store->audit().queued_stale == 1);
    (void)queued;
}

TEST_CASE("a recovery is never negative, even when the clock steps back", "[store][audit][recovery]") {
    // The worker's death is stamped by the supervisor and the re-claim by another worker: two
    // readings of a wall clock, which NTP may step back between them.
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "a");
    Owner lost = w.dead(900);
    REQUIRE(store->claim(id, lost, 3).kind == Kind::claimed);
    w.now += 100;
    store->owner_lost(id, lost, "its worker died: signal 9 (KILL)");
    w.now -= 5;  // the re-claim reads an earlier time than the death was stamped with
    REQUIRE(store->claim(id, w.alive(901), 3).kind == Kind::claimed);
    CHECK(store->get(id)->recovery_ms == 0);
    CHECK(store->audit().recovery_ms == std::vector<int64_t>{0});
}

TEST_CASE("an owner on this host is alive while its process is", "[store][liveness]") {
    CHECK(StoreDeps::local_process(Owner::self()) == Liveness::alive);
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    Owner o{host_name(), pid, int64_t(process_start_time(pid))};
    int st;
    waitpid(pid, &st, 0);
    CHECK(StoreDeps::local_process(o) == Liveness::dead);
    Owner reused = Owner::self();
    reused.start += 1;  // same pid, another process
    CHECK(StoreDeps::local_process(reused) == Liveness::dead);
    CHECK(StoreDeps::local_process(Owner{"elsewhere", 1, 1}) == Liveness::unknown);
}

TEST_CASE("a task whose SQL is longer than max_sql_bytes is failed at its claim, never loaded", "[store][claim][size]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    const std::string big = "SELECT '" + std::string(5000, 'x') + "'";
    TaskStore::ClaimRules rules{3, 1000};
    SECTION("queued") {
        int64_t id = store->insert(big, "alice");
        auto c = store->claim(id, w.alive(900), rules);
        CHECK(c.kind == Kind::refused);
        CHECK(c.sql.empty());
        auto t = store->get(id);
        CHECK(t->status == Status::failed);
        CHECK(t->executions == 0);
        CHECK(t->outcomes == 1);
        CHECK_THAT(*t->error, Catch::Contains(std::to_string(big.size()) + " bytes") &&
                                  Catch::Contains("max_sql_bytes"));
        CHECK(store->claim(id, w.alive(901), rules).kind == Kind::finished);
    }
    SECTION("running, its owner gone (the limit was lowered meanwhile)") {
        int64_t id = store->insert(big, "alice");
        REQUIRE(store->claim(id, w.dead(902), 3).kind == Kind::claimed);
        CHECK(store->claim(id, w.alive(903), rules).kind == Kind::refused);
        CHECK(store->get(id)->status == Status::failed);
        CHECK(store->get(id)->executions == 1);
    }
    SECTION("a text within the limit is claimed with its SQL") {
        int64_t id = store->insert("SELECT 1", "alice");
        auto c = store->claim(id, w.alive(904), rules);
        CHECK(c.kind == Kind::claimed);
        CHECK(c.sql == "SELECT 1");
    }
}

TEST_CASE("results beyond a user's cap or the global cap go, oldest first", "[store][retention][caps]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    auto finish_one = [&](const std::string& user, int64_t bytes) {
        int64_t id = store->insert("SELECT 1", user);
        auto c = store->claim(id, w.alive(1000 + id), 3);
        Outcome o = ok_outcome();
        o.result_bytes = bytes;
        REQUIRE(store->finish(id, c.token, o));
        w.now += 10;
        return id;
    };
    int64_t a1 = finish_one("ann", 400), a2 = finish_one("ann", 400), a3 = finish_one("ann", 400);
    int64_t b1 = finish_one("bob", 300);
    SECTION("per user") {
        CHECK(store->expire_results({3600, 1000, 0}) == 1);  // ann: 1,200 bytes, her oldest goes
        CHECK_FALSE(store->result(a1));
        CHECK_FALSE(store->get(a1)->result_ref);
        CHECK(store->result(a2));
        CHECK(store->result(a3));
        CHECK(store->result(b1));
        CHECK(store->expire_results({3600, 1000, 0}) == 0);
    }
    SECTION("in all") {
        CHECK(store->expire_results({3600, 0, 800}) == 2);  // newest first: bob 300 + ann 400 fit
        CHECK(store->result(b1));
        CHECK(store->result(a3));
        CHECK_FALSE(store->result(a2));
        CHECK_FALSE(store->result(a1));
    }
    SECTION("no caps") { CHECK(store->expire_results({3600, 0, 0}) == 0); }
}

TEST_CASE("a listed task carries a preview of its SQL and the whole text's length", "[store][list]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    const std::string sql = "SELECT '" + std::string(3000, 'y') + "'";
    int64_t id = store->insert(sql, "alice");
    auto listed = store->list(std::nullopt, 10);
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].sql == sql.substr(0, 1000));
    CHECK(listed[0].sql_bytes == int64_t(sql.size()));
    CHECK(listed[0].sql_truncated);
    auto t = store->get(id);
    CHECK(t->sql == sql);
    CHECK_FALSE(t->sql_truncated);
    CHECK(t->sql_bytes == int64_t(sql.size()));
}

TEST_CASE("a task given up names how its last worker was lost", "[store][claim][poison]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    for (int i = 1; i <= 3; ++i) {
        Owner o = w.dead(1100 + i);
        REQUIRE(store->claim(id, o, 3).kind == Kind::claimed);
        store->owner_lost(id, o, "its worker died: signal " + std::to_string(10 + i) + " (X)");
    }
    // A loss recorded for an owner that no longer holds the task changes nothing.
    store->owner_lost(id, w.dead(1101), "not this one");
    CHECK(store->claim(id, w.alive(1110), 3).kind == Kind::gave_up);
    CHECK(*store->get(id)->error ==
          "gave up after 3 attempts: the worker running it was lost each time (it died, or stopped renewing its lease) "
          "(last: its worker died: signal 13 (X))");
}

TEST_CASE("a loss recorded after the claim that gave the task up completes its error, once", "[store][claim][poison]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    Owner last;
    for (int i = 1; i <= 2; ++i) {
        last = w.dead(1200 + i);
        REQUIRE(store->claim(id, last, 2).kind == Kind::claimed);
    }
    // The next delivery's claim comes before the supervisor's record of the last loss.
    CHECK(store->claim(id, w.alive(1210), 2).kind == Kind::gave_up);
    const std::string gave_up =
        "gave up after 2 attempts: the worker running it was lost each time (it died, or stopped renewing its lease)";
    CHECK(*store->get(id)->error == gave_up);
    store->owner_lost(id, w.dead(1201), "not the last one");  // not the owner that held it last
    CHECK(*store->get(id)->error == gave_up);
    store->owner_lost(id, last, "killed by its supervisor: no sign of life for 1000 ms");
    store->owner_lost(id, last, "killed by its supervisor: no sign of life for 1000 ms");
    CHECK(*store->get(id)->error == gave_up + " (last: killed by its supervisor: no sign of life for 1000 ms)");
    CHECK(store->get(id)->status == Status::failed);
}

TEST_CASE("a task abandoned past its hard deadline is failed, once, only for the worker that held it",
          "[store][deadline]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    Owner stuck = w.dead(1200);
    auto c = store->claim(id, stuck, 3);
    REQUIRE(c.kind == Kind::claimed);
    CHECK_FALSE(store->fail_abandoned(id, w.dead(1201), "someone else"));
    CHECK(store->get(id)->status == Status::running);
    w.now += 70000;
    CHECK(store->fail_abandoned(id, stuck, "ran past query.timeout_ms: its worker was killed"));
    auto t = store->get(id);
    CHECK(t->status == Status::failed);
    CHECK(t->error == "ran past query.timeout_ms: its worker was killed");
    CHECK(t->finished_at == w.now);
    CHECK(t->outcomes == 1);
    CHECK(t->executions == 1);
    CHECK_FALSE(store->fail_abandoned(id, stuck, "again"));
    CHECK_FALSE(store->finish(id, c.token, ok_outcome()));  // the old attempt can record nothing
    CHECK(store->claim(id, w.alive(1202), 3).kind == Kind::finished);  // its redelivery is skipped
}

TEST_CASE("a live owner on this host keeps its task however late its lease: no second runner", "[store][claim][lease]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT 1", "alice");
    Owner stuck = w.alive(1300);  // stuck in native code: alive, but renewing nothing
    REQUIRE(store->claim(id, stuck, 3).kind == Kind::claimed);
    w.now += 10 * w.cfg.lease_ms;
    CHECK(store->claim(id, w.alive(1301), 3).kind == Kind::held);
    w.owners[stuck.name()] = Liveness::dead;  // its supervisor killed it
    CHECK(store->claim(id, w.alive(1301), 3).kind == Kind::claimed);
}

TEST_CASE("a task whose gone owner held it past the hard deadline is failed at the next claim, not rerun",
          "[store][claim][deadline]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    TaskStore::ClaimRules rules{3, INT64_MAX, 1000, 500};
    int64_t id = store->insert("SELECT 1", "alice");
    Owner stuck = w.alive(1400);
    REQUIRE(store->claim(id, stuck, rules).kind == Kind::claimed);
    w.now += 1499;
    w.owners[stuck.name()] = Liveness::dead;
    SECTION("died within the deadline: run again") { CHECK(store->claim(id, w.alive(1401), rules).kind == Kind::claimed); }
    SECTION("held past it: failed with the deadline's words") {
        w.now += 1;
        CHECK(store->claim(id, w.alive(1401), rules).kind == Kind::past_deadline);
        auto t = store->get(id);
        CHECK(t->status == Status::failed);
        CHECK(t->error == hard_deadline_error(1000, 500));
        CHECK(t->executions == 1);
    }
}

TEST_CASE("a result is read a page at a time, with the total beside it", "[store][result][page]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    int64_t id = store->insert("SELECT x", "alice");
    auto c = store->claim(id, w.alive(800), 3);
    Outcome o;
    o.row_count = 5;
    o.result = ResultData{R"(["n","s"])", R"([[1,"a"],[2,null],[3,"<b>"],[4,[1]],[5,"e"]])"};
    REQUIRE(store->finish(id, c.token, o));

    auto p = store->result_page(id, 1, 2);
    REQUIRE(p);
    CHECK(p->columns_json == R"(["n","s"])");
    CHECK(p->rows_json == R"([[2,null],[3,"<b>"]])");
    CHECK(p->total == 5);
    CHECK(store->result_page(id, 3, 100)->rows_json == R"([[4,[1]],[5,"e"]])");
    CHECK(store->result_page(id, 5, 10)->rows_json == "[]");
    CHECK(store->result_page(id, 0, 0)->rows_json == "[]");
    CHECK_FALSE(store->result_page(id + 1, 0, 10));
    w.now += 3601 * 1000;
    store->expire_results(3600);
    CHECK_FALSE(store->result_page(id, 0, 10));
}

TEST_CASE("a result read a block at a time is its stored text, from one snapshot", "[store][result]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    auto id = store->insert("SELECT n, s FROM t", "alice");
    auto c = store->claim(id, w.alive(900), 3);
    Outcome o;
    o.row_count = 3;
    const std::string rows = R"([[1,"a,b"],[2,null],[3,"\"]\u00e9"]])";
    o.result = ResultData{R"(["n","s"])", rows};
    REQUIRE(store->finish(id, c.token, o));

    CHECK_FALSE(store->read_result(id + 1));
    auto r = store->read_result(id);
    REQUIRE(r);
    CHECK(r->columns_json() == R"(["n","s"])");
    std::string got;
    char buf[3];
    for (size_t n; (n = r->read(buf, sizeof buf)) > 0;) got.append(buf, n);
    CHECK(got == rows);
    CHECK(r->read(buf, sizeof buf) == 0);

    // Expired while a reader is open: the open reader still reads it whole; a new one finds none.
    auto again = store->read_result(id);
    REQUIRE(again);
    {
        auto other = w.open();  // another connection, as the supervisor's sweeper is
        w.now += 3601 * 1000;
        CHECK(other->expire_results(3600) == 1);
    }
    got.clear();
    for (size_t n; (n = again->read(buf, sizeof buf)) > 0;) got.append(buf, n);
    CHECK(got == rows);
    r.reset();  // an open reader keeps its connection's snapshot: close both
    again.reset();
    CHECK_FALSE(store->read_result(id));
}

TEST_CASE("watch: unended tasks, new ones and those named, nothing else", "[store][watch]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    auto ids = store->insert_batch({"SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4"}, "alice");
    auto c = store->claim(ids[0], w.alive(900), 3);
    REQUIRE(store->finish(ids[0], c.token, ok_outcome()));
    store->request_cancel(ids[1], "alice");
    auto seen = [](const std::vector<Task>& ts) {
        std::vector<int64_t> v;
        for (const auto& t : ts) v.push_back(t.id);
        return v;
    };
    // ids[0] and ids[1] ended: only the two queued ones.
    CHECK(seen(store->changes(ids[3], {})) == std::vector<int64_t>{ids[2], ids[3]});
    // Named ended tasks come too (their end is news), and so does everything past after_id.
    CHECK(seen(store->changes(ids[3], {ids[1]})) == std::vector<int64_t>{ids[1], ids[2], ids[3]});
    CHECK(seen(store->changes(ids[0] - 1, {})) == std::vector<int64_t>{ids[0], ids[1], ids[2], ids[3]});
    auto t = store->changes(ids[3], {ids[1]});
    CHECK(t[0].status == Status::cancelled);
    CHECK(t[0].submitter == "alice");
}

// --- fairness: a message is a unit of work (claim_next) ---

namespace {
TaskStore::ClaimRules fair_rules(int64_t max_running_per_user = 0) {
    TaskStore::ClaimRules r;
    r.max_running_per_user = max_running_per_user;
    return r;
}
}  // namespace

TEST_CASE("claim_next: the waiting user who runs fewest goes first, then the one served least recently",
          "[store][fair]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    // alice queued 4 before bob's 1 and carol's 1: FIFO would run all of alice's first.
    auto a = store->insert_batch({"SELECT 'a1'", "SELECT 'a2'", "SELECT 'a3'", "SELECT 'a4'"}, "alice");
    const int64_t b = store->insert("SELECT 'b1'", "bob");
    const int64_t c = store->insert("SELECT 'c1'", "carol");
    Owner me = w.alive(500);

    // Nobody runs anything: alice's oldest first (no one served yet: oldest task), and the
    // delivery of bob's message runs it: a message is a unit of work, not a ticket.
    auto first = store->claim_next(b, me, fair_rules());
    REQUIRE(first.kind == Kind::claimed);
    CHECK(first.id == a[0]);
    CHECK(first.sql == "SELECT 'a1'");
    // alice runs 1; bob and carol none: bob (his oldest task is older than carol's).
    auto second = store->claim_next(a[1], me, fair_rules());
    REQUIRE(second.kind == Kind::claimed);
    CHECK(second.id == b);
    // carol is the only one running none.
    auto third = store->claim_next(a[2], me, fair_rules());
    REQUIRE(third.kind == Kind::claimed);
    CHECK(third.id == c);
    // Only alice waits now.
    auto fourth = store->claim_next(c, me, fair_rules());
    REQUIRE(fourth.kind == Kind::claimed);
    CHECK(fourth.id == a[1]);

}

TEST_CASE("claim_next: between users running as many, the one served least recently goes first", "[store][fair]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    Owner me = w.alive(501);
    const int64_t y1 = store->insert("SELECT 'y1'", "yves");
    const int64_t x1 = store->insert("SELECT 'x1'", "xena");
    const int64_t y2 = store->insert("SELECT 'y2'", "yves");
    const int64_t y3 = store->insert("SELECT 'y3'", "yves");
    const int64_t x2 = store->insert("SELECT 'x2'", "xena");
    auto run_next = [&](int64_t unit) {
        auto c = store->claim_next(unit, me, fair_rules());
        REQUIRE(c.kind == Kind::claimed);
        REQUIRE(store->finish(c.id, c.token, ok_outcome()));
        return c.id;
    };
    CHECK(run_next(y1) == y1);  // nobody served yet: the oldest task
    CHECK(run_next(x1) == x1);
    CHECK(run_next(y2) == y2);  // yves served before xena
    // yves's y3 is older than xena's x2, but xena was served longer ago: her turn.
    CHECK(run_next(y3) == x2);
    CHECK(run_next(x2) == y3);
    CHECK(store->claim_next(x2, me, fair_rules()).kind == Kind::none);
}

TEST_CASE("claim_next: max_running_per_user holds a user's further tasks back", "[store][fair][limit]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    Owner me = w.alive(502);
    auto a = store->insert_batch({"SELECT 'a1'", "SELECT 'a2'", "SELECT 'a3'"}, "alice");
    auto first = store->claim_next(a[0], me, fair_rules(2));
    auto second = store->claim_next(a[1], me, fair_rules(2));
    REQUIRE(first.kind == Kind::claimed);
    REQUIRE(second.kind == Kind::claimed);
    // alice runs 2 of 2: her third waits, and the message that would run it is told so.
    auto third = store->claim_next(a[2], me, fair_rules(2));
    CHECK(third.kind == Kind::limited);
    CHECK(store->get(a[2])->status == Status::queued);
    CHECK(store->running_per_user() == std::map<std::string, int64_t>{{"alice", 2}});
    // Another user's task runs meanwhile, under alice's message.
    const int64_t b = store->insert("SELECT 'b1'", "bob");
    auto other = store->claim_next(a[2], me, fair_rules(2));
    REQUIRE(other.kind == Kind::claimed);
    CHECK(other.id == b);
    // One of alice's ends: her third may run.
    REQUIRE(store->finish(first.id, first.token, ok_outcome()));
    auto now_hers = store->claim_next(b, me, fair_rules(2));
    REQUIRE(now_hers.kind == Kind::claimed);
    CHECK(now_hers.id == a[2]);
    // Nothing waits: the message's work was done under another one.
    CHECK(store->claim_next(a[0], me, fair_rules(2)).kind == Kind::none);
}

TEST_CASE("claim_next: tasks whose owner's lease ran out do not count toward the user's limit", "[store][fair][limit]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    auto a = store->insert_batch({"SELECT 'a1'", "SELECT 'a2'", "SELECT 'a3'"}, "alice");
    Owner far = w.remote(900);  // on another host: only its lease tells
    REQUIRE(store->claim_next(a[0], far, fair_rules(2)).kind == Kind::claimed);
    REQUIRE(store->claim_next(a[1], far, fair_rules(2)).kind == Kind::claimed);
    CHECK(store->claim_next(a[2], w.alive(901), fair_rules(2)).kind == Kind::limited);
    CHECK(store->running_per_user() == std::map<std::string, int64_t>{{"alice", 2}});
    // That host went silent: its tasks wait for their messages' redeliveries, and alice's third
    // need not wait for them.
    w.now += w.cfg.lease_ms + 1;
    CHECK(store->running_per_user().empty());
    auto third = store->claim_next(a[2], w.alive(901), fair_rules(2));
    REQUIRE(third.kind == Kind::claimed);
    CHECK(third.id == a[2]);
}

TEST_CASE("claim_next: a redelivered message takes over the task its dead delivery ran, with attempts counted",
          "[store][fair][claim]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    const int64_t mine = store->insert("SELECT 'mine'", "alice");
    const int64_t other = store->insert("SELECT 'other'", "bob");
    // Message `other` ran task `mine` (the fair choice), in a worker that then died.
    Owner ghost = w.dead(600);
    auto first = store->claim_next(other, ghost, fair_rules());
    REQUIRE(first.kind == Kind::claimed);
    REQUIRE(first.id == mine);
    CHECK(store->task_of_unit(other) == mine);
    CHECK(store->task_of_unit(mine) == mine);  // no delivery of its own message runs anything

    SECTION("its redelivery resumes that task: the second attempt, fencing the first") {
        auto again = store->claim_next(other, w.alive(601), fair_rules());
        REQUIRE(again.kind == Kind::claimed);
        CHECK(again.id == mine);
        CHECK(again.token == 2);
        CHECK_FALSE(store->finish(mine, first.token, ok_outcome()));
        CHECK(store->finish(mine, again.token, ok_outcome()));
        CHECK(store->get(mine)->outcomes == 1);
        // A letter of that message names the task its deliveries ran, ended or not.
        CHECK(store->task_of_unit(other) == mine);
        CHECK(store->get(other)->status == Status::queued);
    }
    SECTION("while the worker running it lives, its redelivery waits") {
        Owner live = w.alive(602);
        auto busy = store->claim_next(other, live, fair_rules());  // taken over by a live worker
        REQUIRE(busy.kind == Kind::claimed);
        auto held = store->claim_next(other, w.alive(603), fair_rules());
        CHECK(held.kind == Kind::held);
        CHECK(held.id == mine);
        // Once it ended, the redelivery is free to run the next task.
        REQUIRE(store->finish(mine, busy.token, ok_outcome()));
        auto next = store->claim_next(other, w.alive(603), fair_rules());
        REQUIRE(next.kind == Kind::claimed);
        CHECK(next.id == other);
    }
    SECTION("the task's own message, republished by the sweeper, takes it over too") {
        auto again = store->claim_next(mine, w.alive(604), fair_rules());
        REQUIRE(again.kind == Kind::claimed);
        CHECK(again.id == mine);
        CHECK(again.token == 2);
        // ... and the first message's redelivery, finding its task run by another, runs the next.
        auto next = store->claim_next(other, w.alive(605), fair_rules());
        REQUIRE(next.kind == Kind::claimed);
        CHECK(next.id == other);
    }
    SECTION("a message whose task runs in a live worker elsewhere runs another one") {
        auto live = store->claim_next(other, w.alive(606), fair_rules());
        REQUIRE(live.id == mine);
        auto next = store->claim_next(mine, w.alive(607), fair_rules());
        REQUIRE(next.kind == Kind::claimed);
        CHECK(next.id == other);
    }
}

TEST_CASE("claim_next: a message for no task of this store is unknown, and poison is still given up",
          "[store][fair][poison]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    CHECK(store->claim_next(9999, w.alive(700), fair_rules()).kind == Kind::unknown);
    const int64_t id = store->insert("SELECT 'poison'", "alice");
    TaskStore::ClaimRules rules = fair_rules();
    rules.max_attempts = 2;
    for (int64_t pid : {701, 702}) {
        auto c = store->claim_next(id, w.dead(pid), rules);
        REQUIRE(c.kind == Kind::claimed);
        CHECK(c.id == id);
    }
    auto last = store->claim_next(id, w.alive(703), rules);
    CHECK(last.kind == Kind::gave_up);
    CHECK(last.id == id);
    CHECK(store->get(id)->status == Status::failed);
}

TEST_CASE("max_queued_per_user refuses a whole submit beyond it, storing nothing", "[store][fair][limit][insert]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    TaskStore::InsertRules rules{3};
    REQUIRE(store->insert_batch({"SELECT 1", "SELECT 2"}, "alice", rules).size() == 2);
    try {
        store->insert_batch({"SELECT 3", "SELECT 4"}, "alice", rules);
        FAIL("a batch past the limit was stored");
    } catch (const Error& e) {
        CHECK(e.exit_code() == kExitQueueFull);
        CHECK(std::string(e.what()).find("max_queued_per_user = 3") != std::string::npos);
    }
    CHECK(store->counts()["queued"] == 2);
    // Another user has a queue of their own; a running task does not count.
    CHECK(store->insert_batch({"SELECT 1", "SELECT 2", "SELECT 3"}, "bob", rules).size() == 3);
    const int64_t alices_first = store->list(TaskStore::ListFilter{std::nullopt, std::string("alice"), 2}).back().id;
    auto c = store->claim_next(alices_first, w.alive(800), fair_rules());
    REQUIRE(c.kind == Kind::claimed);
    REQUIRE(c.id == alices_first);  // the oldest task, nobody served yet
    CHECK(store->insert_batch({"SELECT 3", "SELECT 4"}, "alice", rules).size() == 2);
    CHECK(store->counts()["queued"] == 3 + 3);
}

TEST_CASE("fleet records: written with the store's clock, read back with their age, forgotten", "[store][fleetview]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    CHECK(store->fleets().empty());
    store->record_fleet({"host-a", "/run/a", 100, 2000, R"([{"slot":0,"state":"ready"}])"});
    w.now += 500;
    store->record_fleet({"host-b", "/run/b", 200, 2000, "[]"});
    w.now += 1500;
    auto fleets = store->fleets();
    REQUIRE(fleets.size() == 2);
    CHECK(fleets[0].host == "host-a");
    CHECK(fleets[0].pid == 100);
    CHECK(fleets[0].interval_ms == 2000);
    CHECK(fleets[0].workers_json == R"([{"slot":0,"state":"ready"}])");
    CHECK(fleets[0].age_ms == 2000);
    CHECK(fleets[1].age_ms == 1500);
    // A heartbeat replaces the record; a stop forgets it.
    store->record_fleet({"host-a", "/run/a", 101, 1000, "[]"});
    fleets = store->fleets();
    CHECK(fleets[0].pid == 101);
    CHECK(fleets[0].age_ms == 0);
    store->forget_fleet("host-a", "/run/a");
    fleets = store->fleets();
    REQUIRE(fleets.size() == 1);
    CHECK(fleets[0].host == "host-b");
}

TEST_CASE("finish_then_claim: the outcome is stored, and the next delivery's claim is claim_next's or left to it",
          "[store][fair][one-txn]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    Owner me = w.alive(503);
    auto a = store->insert_batch({"SELECT 'a1'", "SELECT 'a2'"}, "alice");
    const int64_t b = store->insert("SELECT 'b1'", "bob");
    auto first = store->claim_next(a[0], me, fair_rules());
    REQUIRE(first.kind == Kind::claimed);
    REQUIRE(first.id == a[0]);
    std::optional<TaskStore::Claim> next;
    // Fenced out: neither written nor claimed.
    CHECK_FALSE(store->finish_then_claim(first.id, first.token + 1, ok_outcome(), a[1], me, fair_rules(), next));
    CHECK_FALSE(next);
    CHECK(store->get(first.id)->status == Status::running);
    CHECK(store->get(b)->status == Status::queued);
    // Written; the next claim, made in the same transaction (both stores do, without a per-user
    // limit), is bob's task: alice ran last.
    REQUIRE(store->finish_then_claim(first.id, first.token, ok_outcome(), a[1], me, fair_rules(), next));
    CHECK(store->get(first.id)->status == Status::succeeded);
    CHECK(store->get(first.id)->outcomes == 1);
    REQUIRE(next);
    const TaskStore::Claim second = *next;
    REQUIRE(second.kind == Kind::claimed);
    CHECK(second.id == b);
    CHECK(store->get(b)->status == Status::running);
    CHECK(store->get(a[1])->status == Status::queued);
}

TEST_CASE("a claim of its own that a worker lost track of is taken over by its next claim, not waited on",
          "[store][claim][fencing]") {
    StoreUnderTest w(GENERATE(from_range(store_engines())));
    auto store = w.open();
    Owner me = w.alive(504);
    Owner other = w.alive(505);
    const int64_t t = store->insert("SELECT 't'", "alice");
    // The claim commits, but its answer never reaches the worker (a server store's connection
    // lost with the COMMIT in flight): the worker asks again for the same delivery.
    REQUIRE(store->claim_next(t, me, fair_rules()).kind == Kind::claimed);
    auto again = store->claim_next(t, me, fair_rules());
    REQUIRE(again.kind == Kind::claimed);  // not held by its own "live" process: nobody runs it
    CHECK(again.id == t);
    CHECK(again.token == 2);
    CHECK(again.sql == "SELECT 't'");
    // Another live worker's task is still held.
    CHECK(store->claim_next(t, other, fair_rules()).kind == Kind::held);
    CHECK(store->finish(t, again.token, ok_outcome()));
}
