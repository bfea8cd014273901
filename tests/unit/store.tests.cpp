#include <catch2/catch.hpp>

#include <filesystem>
#include <functional>
#include <sys/wait.h>
#include <unistd.h>

#include "gate_holder.h"
#include "task/store.h"
#include "util/process.h"

using namespace sqlq;

namespace {
struct TempStore {
    std::string dir;
    StoreConfig cfg;
    TempStore() {
        char tmpl[] = "/tmp/sqlq-store-XXXXXX";
        dir = mkdtemp(tmpl);
        cfg.lease_ms = 1000;
        cfg.durability = "normal";
    }
    ~TempStore() { std::filesystem::remove_all(dir); }
    std::string path() const { return dir + "/tasks.db"; }
};

// An owner on this host whose process no longer exists.
Owner dead_owner() {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    Owner o{host_name(), pid, 12345};
    int st;
    waitpid(pid, &st, 0);
    return o;
}

Outcome ok_outcome() {
    Outcome o;
    o.status = Status::succeeded;
    o.row_count = 1;
    o.result = ResultData{"[\"1\"]", "[[1]]"};
    return o;
}
}  // namespace

TEST_CASE("a queued task is claimed once, runs, and its outcome is stored once", "[store][claim]") {
    TempStore ts;
    TaskStore store(ts.path(), ts.cfg);
    int64_t id = store.insert("SELECT 1", "alice");
    Owner me = Owner::self();

    auto c = store.claim(id, me, 3);
    REQUIRE(c.kind == TaskStore::ClaimKind::claimed);
    CHECK(c.token == 1);
    CHECK(c.sql == "SELECT 1");
    auto t = store.get(id);
    CHECK(t->status == Status::running);
    CHECK(t->attempts == 1);
    CHECK(t->executions == 1);
    CHECK(t->owner == me.name());

    SECTION("a second claim while the owner lives is held off") {
        CHECK(store.claim(id, me, 3).kind == TaskStore::ClaimKind::held);
    }
    SECTION("the outcome is written once, then redeliveries are skipped") {
        REQUIRE(store.finish(id, c.token, ok_outcome()));
        CHECK_FALSE(store.finish(id, c.token, ok_outcome()));
        auto done = store.get(id);
        CHECK(done->status == Status::succeeded);
        CHECK(done->outcomes == 1);
        CHECK(done->result_ref == "results/" + std::to_string(id));
        CHECK(store.result(id)->rows_json == "[[1]]");
        auto again = store.claim(id, me, 3);
        CHECK(again.kind == TaskStore::ClaimKind::finished);
        CHECK(again.status == Status::succeeded);
        CHECK(store.get(id)->executions == 1);
    }
}

TEST_CASE("a task whose owner died is taken over, and the old owner is fenced out", "[store][claim][fencing]") {
    TempStore ts;
    TaskStore store(ts.path(), ts.cfg);
    int64_t id = store.insert("SELECT 1", "alice");
    Owner ghost = dead_owner();
    auto first = store.claim(id, ghost, 3);
    REQUIRE(first.kind == TaskStore::ClaimKind::claimed);

    auto second = store.claim(id, Owner::self(), 3);
    REQUIRE(second.kind == TaskStore::ClaimKind::claimed);
    CHECK(second.token == 2);
    CHECK(store.get(id)->executions == 2);

    // The first attempt wakes up: it can neither renew nor record.
    CHECK_FALSE(store.tick(id, first.token, true).still_owner);
    CHECK_FALSE(store.finish(id, first.token, ok_outcome()));
    CHECK(store.tick(id, second.token, true).still_owner);
    CHECK(store.finish(id, second.token, ok_outcome()));
    CHECK(store.get(id)->outcomes == 1);
}

TEST_CASE("a task on another host is taken over only when its lease expires", "[store][claim][lease]") {
    TempStore ts;
    TaskStore store(ts.path(), ts.cfg);
    int64_t id = store.insert("SELECT 1", "alice");
    Owner remote{"elsewhere", 1, 1};
    REQUIRE(store.claim(id, remote, 3).kind == TaskStore::ClaimKind::claimed);
    auto held = store.claim(id, Owner::self(), 3);
    CHECK(held.kind == TaskStore::ClaimKind::held);
    store.db().prepare("UPDATE tasks SET lease_until = 0 WHERE id = ?").bind(1, id).run();
    CHECK(store.claim(id, Owner::self(), 3).kind == TaskStore::ClaimKind::claimed);
}

TEST_CASE("a task whose worker dies every time fails after max attempts", "[store][claim][poison]") {
    TempStore ts;
    TaskStore store(ts.path(), ts.cfg);
    int64_t id = store.insert("SELECT 1", "alice");
    for (int i = 1; i <= 3; ++i) REQUIRE(store.claim(id, dead_owner(), 3).kind == TaskStore::ClaimKind::claimed);
    CHECK(store.claim(id, Owner::self(), 3).kind == TaskStore::ClaimKind::gave_up);
    auto t = store.get(id);
    CHECK(t->status == Status::failed);
    CHECK(t->executions == 3);
    CHECK(t->error->find("gave up after 3 attempts") != std::string::npos);
}

TEST_CASE("cancel: queued at once, running on request, finished refused", "[store][cancel]") {
    TempStore ts;
    TaskStore store(ts.path(), ts.cfg);
    SECTION("queued") {
        int64_t id = store.insert("SELECT 1", "alice");
        CHECK(store.request_cancel(id, "bob").kind == TaskStore::CancelKind::cancelled);
        CHECK(store.claim(id, Owner::self(), 3).kind == TaskStore::ClaimKind::finished);
        CHECK(store.get(id)->cancelled_by == "bob");
        CHECK(store.get(id)->executions == 0);
    }
    SECTION("running: the worker sees the request and records the cancel") {
        int64_t id = store.insert("SELECT 1", "alice");
        auto c = store.claim(id, Owner::self(), 3);
        CHECK(store.request_cancel(id, "bob").kind == TaskStore::CancelKind::requested);
        CHECK(store.tick(id, c.token, false).cancel_requested);
        Outcome o;
        o.status = Status::cancelled;
        CHECK(store.finish(id, c.token, o));
        CHECK(store.get(id)->status == Status::cancelled);
    }
    SECTION("running with its worker gone: the next claim records the cancel without running") {
        int64_t id = store.insert("SELECT 1", "alice");
        store.claim(id, dead_owner(), 3);
        store.request_cancel(id, "bob");
        CHECK(store.claim(id, Owner::self(), 3).kind == TaskStore::ClaimKind::cancelled_now);
        CHECK(store.get(id)->executions == 1);
    }
    SECTION("finished") {
        int64_t id = store.insert("SELECT 1", "alice");
        auto c = store.claim(id, Owner::self(), 3);
        store.finish(id, c.token, ok_outcome());
        auto r = store.request_cancel(id, "bob");
        CHECK(r.kind == TaskStore::CancelKind::already_finished);
        CHECK(r.status == Status::succeeded);
        CHECK(store.result(id));
    }
    SECTION("unknown") { CHECK(store.request_cancel(999, "bob").kind == TaskStore::CancelKind::unknown); }
}

TEST_CASE("processes racing to claim one task: exactly one wins", "[store][claim][race]") {
    TempStore ts;
    std::vector<int64_t> ids;
    {
        TaskStore store(ts.path(), ts.cfg);
        for (int i = 0; i < 20; ++i) ids.push_back(store.insert("SELECT 1", "alice"));
    }
    // Every claimant stays alive until all have claimed: a claimant that exited would be a dead
    // owner, whose tasks are rightly taken over.
    constexpr int kProcs = 8;
    int wins_pipe[2], release_pipe[2];
    REQUIRE(pipe(wins_pipe) == 0);
    REQUIRE(pipe(release_pipe) == 0);
    std::vector<pid_t> pids;
    for (int p = 0; p < kProcs; ++p) {
        pid_t pid = fork();
        if (pid == 0) {
            close(release_pipe[1]);
            char wins = 0;
            {
                TaskStore store(ts.path(), ts.cfg);
                for (int64_t id : ids)
                    if (store.claim(id, Owner::self(), 3).kind == TaskStore::ClaimKind::claimed) ++wins;
            }
            (void)!write(wins_pipe[1], &wins, 1);
            char c;
            (void)!read(release_pipe[0], &c, 1);  // returns when the parent closes it
            _exit(0);
        }
        pids.push_back(pid);
    }
    close(wins_pipe[1]);
    close(release_pipe[0]);
    int total = 0;
    for (int p = 0; p < kProcs; ++p) {
        char w = 0;
        REQUIRE(read(wins_pipe[0], &w, 1) == 1);
        total += w;
    }
    CHECK(total == 20);
    {
        TaskStore store(ts.path(), ts.cfg);
        for (int64_t id : ids) CHECK(store.get(id)->attempts == 1);
    }
    close(release_pipe[1]);
    for (pid_t pid : pids) {
        int st = 0;
        waitpid(pid, &st, 0);
    }
    close(wins_pipe[0]);
}

TEST_CASE("results expire after their retention", "[store][retention]") {
    TempStore ts;
    TaskStore store(ts.path(), ts.cfg);
    int64_t id = store.insert("SELECT 1", "alice");
    auto c = store.claim(id, Owner::self(), 3);
    store.finish(id, c.token, ok_outcome());
    CHECK(store.expire_results(3600) == 0);
    store.db().prepare("UPDATE results SET created_at = 0").run();
    store.db().prepare("UPDATE tasks SET finished_at = 0").run();
    CHECK(store.expire_results(3600) == 1);
    CHECK_FALSE(store.result(id));
    CHECK_FALSE(store.get(id)->result_ref);
}

TEST_CASE("the schema carries its version", "[store][schema]") {
    TempStore ts;
    { TaskStore store(ts.path(), ts.cfg); }
    TaskStore store(ts.path(), ts.cfg);  // opening again migrates nothing
    auto s = store.db().prepare("PRAGMA user_version");
    s.step();
    CHECK(s.i64(0) == TaskStore::kSchemaVersion);
    store.db().exec("PRAGMA user_version=99");
    REQUIRE_THROWS_WITH(TaskStore(ts.path(), ts.cfg), Catch::Contains("is newer than this sqlq"));
}

// A VFS over SQLite's default one that counts the syncs of write-ahead logs: the default VFS
// while alive, so that a TaskStore opened meanwhile goes through it.
class CountingVfs {
public:
    CountingVfs() {
        real_ = sqlite3_vfs_find(nullptr);
        vfs_ = *real_;
        vfs_.zName = "sqlq-test-counting";
        vfs_.pAppData = real_;
        vfs_.xOpen = &open;
        REQUIRE(sqlite3_vfs_register(&vfs_, /*makeDflt=*/1) == SQLITE_OK);
        wal_syncs_ = 0;
        fail_ = false;
    }
    ~CountingVfs() {
        sqlite3_vfs_unregister(&vfs_);
        sqlite3_vfs_register(real_, 1);
    }
    static int wal_syncs() { return wal_syncs_; }
    // The WAL's size when it was last synced: a sync that came before the commit's frames were
    // written would leave it short of the file's size.
    static int64_t synced_size() { return synced_size_; }
    static void fail_syncs(bool on) { fail_ = on; }

private:
    static int open(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags, int* out) {
        auto* real = static_cast<sqlite3_vfs*>(vfs->pAppData);
        int rc = real->xOpen(real, name, f, flags, out);
        if (rc == SQLITE_OK && f->pMethods && (flags & SQLITE_OPEN_WAL)) {
            // The file stays the real VFS's; only its method table is swapped for one whose
            // xSync counts, then calls the real one.
            real_methods_ = f->pMethods;
            methods_ = *f->pMethods;
            methods_.xSync = [](sqlite3_file* file, int sync_flags) {
                if (fail_) return SQLITE_IOERR_FSYNC;
                ++wal_syncs_;
                sqlite3_int64 size = 0;
                real_methods_->xFileSize(file, &size);
                synced_size_ = size;
                return real_methods_->xSync(file, sync_flags);
            };
            f->pMethods = &methods_;
        }
        return rc;
    }
    sqlite3_vfs* real_ = nullptr;
    sqlite3_vfs vfs_{};
    static inline int wal_syncs_ = 0;
    static inline int64_t synced_size_ = 0;
    static inline bool fail_ = false;
    static inline const sqlite3_io_methods* real_methods_ = nullptr;
    static inline sqlite3_io_methods methods_{};
};

TEST_CASE("the store syncs the write-ahead log as its durability setting says", "[store][durability]") {
    TempStore t;
    CountingVfs vfs;
    auto level = [](TaskStore& s) {
        auto st = s.db().prepare("PRAGMA synchronous");
        st.step();
        return st.i64(0);  // 0 OFF, 1 NORMAL, 2 FULL
    };
    SECTION("off never syncs, not even for an outcome") {
        t.cfg.durability = "off";
        TaskStore s(t.path(), t.cfg);
        CHECK(level(s) == 0);
        int64_t id = s.insert("SELECT 1", "test");
        auto c = s.claim(id, Owner::self(), 3);
        REQUIRE(s.finish(id, c.token, ok_outcome()));
        CHECK(s.request_cancel(s.insert("SELECT 2", "test"), "test").kind == TaskStore::CancelKind::cancelled);
        CHECK(level(s) == 0);
        CHECK(CountingVfs::wal_syncs() == 0);
    }
    SECTION("normal never syncs a commit (only checkpoints, and a new log's header)") {
        t.cfg.durability = "normal";
        TaskStore s(t.path(), t.cfg);
        int syncs = CountingVfs::wal_syncs();
        int64_t id = s.insert("SELECT 1", "test");
        auto c = s.claim(id, Owner::self(), 3);
        REQUIRE(s.finish(id, c.token, ok_outcome()));
        CHECK(level(s) == 1);
        CHECK(CountingVfs::wal_syncs() == syncs);
    }
    SECTION("full syncs a submit, an outcome and a cancel request, not a claim or a lease renewal") {
        t.cfg.durability = "full";
        TaskStore s(t.path(), t.cfg);
        // Commits run at NORMAL, so the write lock is never held across a sync; the store syncs
        // the log itself once the commit is done.
        CHECK(level(s) == 1);
        int syncs = CountingVfs::wal_syncs();
        int64_t id = s.insert("SELECT 1", "test");
        CHECK(CountingVfs::wal_syncs() == syncs + 1);
        auto c = s.claim(id, Owner::self(), 3);
        REQUIRE(c.kind == TaskStore::ClaimKind::claimed);
        CHECK(s.tick(id, c.token, /*renew=*/true).still_owner);
        CHECK(CountingVfs::wal_syncs() == syncs + 1);
        REQUIRE(s.finish(id, c.token, ok_outcome()));
        CHECK(CountingVfs::wal_syncs() == syncs + 2);
        CHECK(CountingVfs::synced_size() == int64_t(std::filesystem::file_size(t.path() + "-wal")));  // after the commit
        int64_t other = s.insert("SELECT 2", "test");
        CHECK(s.request_cancel(other, "test").kind == TaskStore::CancelKind::cancelled);
        CHECK(CountingVfs::wal_syncs() == syncs + 4);
        CHECK(CountingVfs::synced_size() == int64_t(std::filesystem::file_size(t.path() + "-wal")));
        // A redelivery that finds the task finished syncs before its message is acked: the
        // outcome it saw may be another worker's, committed but not yet synced.
        CHECK(s.claim(id, Owner::self(), 3).kind == TaskStore::ClaimKind::finished);
        CHECK(CountingVfs::wal_syncs() == syncs + 5);
        CHECK(level(s) == 1);
    }
}

TEST_CASE("a failed sync of an outcome is not a retryable store error", "[store][durability]") {
    TempStore t;
    CountingVfs vfs;
    t.cfg.durability = "full";
    TaskStore s(t.path(), t.cfg);
    int64_t id = s.insert("SELECT 1", "test");
    auto c = s.claim(id, Owner::self(), 3);
    CountingVfs::fail_syncs(true);
    // The commit is done and visible, only its place on disk is in doubt: the worker must not
    // take this for "not written, try again" (then ack); it stops instead.
    try {
        s.finish(id, c.token, ok_outcome());
        FAIL("finish() returned although the sync failed");
    } catch (const sqlite::SqliteError&) {
        FAIL("a failed sync came as a SqliteError, which callers retry");
    } catch (const Error& e) {
        CHECK_THAT(e.what(), Catch::Contains("cannot sync the write-ahead log") &&
                                 Catch::Contains("may not survive a power loss") && Catch::Contains("tasks.db"));
    }
    CountingVfs::fail_syncs(false);
}

TEST_CASE("every write to the store waits at the writer gate", "[store][gate]") {
    TempStore t;
    t.cfg.busy_timeout_ms = 100;
    TaskStore s(t.path(), t.cfg);
    REQUIRE(s.gate_error().empty());
    int64_t queued = s.insert("SELECT 1", "test");
    int64_t running = s.insert("SELECT 2", "test");
    auto c = s.claim(running, Owner::self(), 3);
    REQUIRE(c.kind == TaskStore::ClaimKind::claimed);

    test::Holder holder(t.path() + "-gate");  // another process holds the gate, as a writer would
    auto waits = [](const std::function<void()>& write) {
        try {
            write();
            return false;
        } catch (const sqlite::SqliteError& e) {
            return e.busy() && std::string(e.what()).find("writer gate") != std::string::npos;
        }
    };
    CHECK(waits([&] { s.insert("SELECT 3", "test"); }));
    CHECK(waits([&] { s.mark_published(queued); }));
    CHECK(waits([&] { s.claim(queued, Owner::self(), 3); }));
    CHECK(waits([&] { s.tick(running, c.token, /*renew=*/true); }));
    CHECK(waits([&] { s.finish(running, c.token, ok_outcome()); }));
    CHECK(waits([&] { s.request_cancel(queued, "test"); }));
    CHECK(waits([&] { s.owner_lost(running, Owner::self()); }));
    CHECK(waits([&] { s.expire_results(0); }));
    CHECK_NOTHROW(s.tick(running, c.token, /*renew=*/false));  // a read passes
    holder.release();
    CHECK(holder.reap() == 0);
    CHECK(s.finish(running, c.token, ok_outcome()));  // and the writes go on once it is free
}

TEST_CASE("a task read through the store leaves no statement holding a read transaction", "[store]") {
    TempStore t;
    TaskStore s(t.path(), t.cfg);
    int64_t id = s.insert("SELECT 1", "test");
    REQUIRE(s.get(id));
    // With a statement still active, the connection would stay inside a read transaction and
    // keep the WAL from being checkpointed past it.
    CHECK(sqlite3_get_autocommit(s.db().get()) != 0);
    bool busy = false;
    for (sqlite3_stmt* st = sqlite3_next_stmt(s.db().get(), nullptr); st; st = sqlite3_next_stmt(s.db().get(), st))
        busy = busy || sqlite3_stmt_busy(st);
    CHECK_FALSE(busy);
}

TEST_CASE("a task marked published after it already ran still says so", "[store][publish]") {
    TempStore ts;
    TaskStore store(ts.path(), ts.cfg);
    int64_t id = store.insert("SELECT 1", "alice");
    auto c = store.claim(id, Owner::self(), 3);
    REQUIRE(store.finish(id, c.token, ok_outcome()));
    store.mark_published(id);  // the confirm arrives after the worker was done
    CHECK(store.get(id)->published);
}
