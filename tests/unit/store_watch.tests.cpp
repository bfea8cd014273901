// The store's watch (TaskStore::watch) on SQLite, and the task service's wait on top of it: a
// waiter hears of a commit by another connection without polling, across the log being deleted
// and made again, and still returns by its fallback look when no notification comes.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <thread>
#include <unistd.h>

#include "service/task_service.h"
#include "task/sqlite_store.h"
#include "task/sqlite_watch.h"
#include "util/clock.h"

using namespace sqlq;

namespace {
struct TempStore {
    std::string dir;
    StoreConfig cfg;
    TempStore() {
        char tmpl[] = "/tmp/sqlq-watch-XXXXXX";
        dir = mkdtemp(tmpl);
        cfg.path = dir + "/tasks.db";
        cfg.durability = "normal";
    }
    ~TempStore() { std::filesystem::remove_all(dir); }
    std::unique_ptr<TaskStore> open() const { return open_store(cfg); }
};

// Runs task `id` to success through a store connection of its own (as a worker would). No
// Catch2 assertion inside: it runs on a thread of its own.
bool finish_task(const StoreConfig& cfg, int64_t id) {
    auto store = open_store(cfg);
    auto c = store->claim(id, Owner::self(), 3);
    if (c.kind != TaskStore::ClaimKind::claimed) return false;
    Outcome o;
    o.row_count = 1;
    o.result = ResultData{"[\"1\"]", "[[1]]"};
    return store->finish(id, c.token, o);
}
}  // namespace

TEST_CASE("a watch reports a commit made by another connection", "[store][watch]") {
    TempStore ts;
    auto waiter = ts.open();
    auto w = waiter->watch();
    REQUIRE(w->live());
    REQUIRE(w->fd() >= 0);
    CHECK_FALSE(w->wait(0));  // nothing yet

    auto writer = ts.open();
    writer->insert("SELECT 1", "alice");
    CHECK(w->wait(10000));
    // After a report, one more look comes soon even without a change (the settle look), then
    // nothing until the next commit.
    CHECK_FALSE(w->wait(10000));
    CHECK_FALSE(w->wait(0));
    writer->insert("SELECT 2", "alice");
    CHECK(w->wait(10000));
}

TEST_CASE("a watch slows its reports while the store stays busy, not past it nor into the next wait",
          "[store][watch]") {
    TempStore ts;
    auto waiter = ts.open();
    auto w = waiter->watch();
    auto* sw = dynamic_cast<SqliteWatch*>(w.get());
    REQUIRE(sw);
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        auto s = ts.open();
        while (!stop) s->insert("SELECT 1", "alice");
    });
    auto until_busy = [&] {
        for (int i = 0; i < 20 * SqliteWatch::kBusyReports && !sw->busy(); ++i) w->wait(10000);
        return sw->busy();
    };
    // A store committing all the time: after kBusyReports reports in a row, the busy pace.
    CHECK(until_busy());
    // A new wait (the next task of a client that keeps its watch) starts at the quick pace.
    w->new_wait();
    CHECK_FALSE(sw->busy());
    REQUIRE(until_busy());
    stop = true;
    writer.join();
    // The store falls quiet: the next report, whose pause sees no commit, ends the busy pace.
    auto last = ts.open();
    last->insert("SELECT 2", "alice");
    CHECK(w->wait(10000));
    CHECK_FALSE(sw->busy());
}

TEST_CASE("a watch follows the log when it is deleted and made again", "[store][watch]") {
    TempStore ts;
    auto first = ts.open();
    first->insert("SELECT 1", "alice");
    auto w = first->watch();
    REQUIRE(std::filesystem::exists(ts.cfg.path + "-wal"));
    first.reset();  // the last connection closes: SQLite checkpoints and deletes the log
    REQUIRE_FALSE(std::filesystem::exists(ts.cfg.path + "-wal"));
    while (w->wait(0)) {}  // whatever the closing reported

    auto second = ts.open();  // a new log, a new file
    REQUIRE(std::filesystem::exists(ts.cfg.path + "-wal"));
    while (w->wait(20)) {}
    second->insert("SELECT 2", "bob");
    CHECK(w->wait(10000));
}

TEST_CASE("a watch of a store nobody writes times out", "[store][watch]") {
    TempStore ts;
    auto store = ts.open();
    auto w = store->watch();
    const int64_t t0 = mono_ms();
    CHECK_FALSE(w->wait(50));
    CHECK(mono_ms() - t0 >= 45);
}

TEST_CASE("wait hears of the outcome from the watch, not from a poll", "[service][watch]") {
    TempStore ts;
    Config cfg;
    cfg.store = ts.cfg;
    // A fallback look once a minute: a wait that returns within seconds was told.
    cfg.store.wait_poll_ms = 60000;
    TaskService svc(cfg, ts.open());
    REQUIRE(svc.watch()->live());  // else the wait would poll, and this would prove nothing
    const int64_t id = svc.store().insert("SELECT 1", "alice");
    // The task ends while the wait is under way: at its first look, from another connection.
    bool finished = false;
    const int64_t t0 = mono_ms();
    auto w = svc.wait(id, 30000, [&](const Task&) {
        if (!finished) finished = finish_task(ts.cfg, id);
    });
    REQUIRE(finished);
    CHECK_FALSE(w.timed_out);
    CHECK(w.task.status == Status::succeeded);
    CHECK(mono_ms() - t0 < 20000);
}

TEST_CASE("wait for a task that ended before it began returns at once", "[service][watch]") {
    TempStore ts;
    Config cfg;
    cfg.store = ts.cfg;
    cfg.store.wait_poll_ms = 60000;
    TaskService svc(cfg, ts.open());
    const int64_t id = svc.store().insert("SELECT 1", "alice");
    REQUIRE(finish_task(ts.cfg, id));
    auto w = svc.wait(id, 30000);
    CHECK_FALSE(w.timed_out);
    CHECK(w.task.status == Status::succeeded);
}

TEST_CASE("without a notification, wait still returns by its fallback look", "[service][watch]") {
    TempStore ts;
    Config cfg;
    cfg.store = ts.cfg;
    cfg.store.notify = "off";  // every notification lost
    cfg.store.wait_poll_ms = 50;
    TaskService svc(cfg, ts.open());
    const int64_t id = svc.store().insert("SELECT 1", "alice");
    bool finished = false;
    int looks = 0;
    auto w = svc.wait(id, 30000, [&](const Task&) {
        if (++looks == 3) finished = finish_task(ts.cfg, id);  // after two looks that found it queued
    });
    REQUIRE(finished);
    CHECK_FALSE(w.timed_out);
    CHECK(w.task.status == Status::succeeded);
    SECTION("and a wait that asks to stop stops") {
        const int64_t other = svc.store().insert("SELECT 2", "alice");
        int asked = 0;
        auto s = svc.wait(other, 30000, {}, [&] { return ++asked == 3; });
        CHECK(s.interrupted);
        CHECK(s.task.status == Status::queued);
    }
}
