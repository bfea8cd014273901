// The SQLite task store's own internals: its schema version, its fsyncs, its writer gate and
// its statements. What every store must do is in store.tests.cpp (the contract suite).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <functional>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gate_holder.h"
#include "task/sqlite_store.h"
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
    SqliteStore open() {
        StoreConfig c = cfg;
        c.path = path();
        return SqliteStore(c, {});
    }
};

// A store of this version back to before schema 8 (results in their own table only).
constexpr const char* kBeforeV8 = "ALTER TABLE tasks DROP COLUMN result_columns; ALTER TABLE tasks DROP COLUMN result_rows";

Outcome ok_outcome() {
    Outcome o;
    o.status = Status::succeeded;
    o.row_count = 1;
    o.result = ResultData{"[\"1\"]", "[[1]]"};
    return o;
}
}  // namespace

TEST_CASE("the schema carries its version", "[store][schema]") {
    TempStore ts;
    { auto store = ts.open(); }
    auto store = ts.open();  // opening again migrates nothing
    auto s = store.db().prepare("PRAGMA user_version");
    s.step();
    CHECK(s.i64(0) == SqliteStore::kSchemaVersion);
    store.db().exec("PRAGMA user_version=99");
    REQUIRE_THROWS_WITH(ts.open(), Catch::Contains("is newer than this sqlq"));
}

TEST_CASE("schema version 6: a claim by a task's own message leaves its unit unwritten, a store of version 5 keeps "
          "what its claims wrote",
          "[store][schema][fair]") {
    TempStore ts;
    int64_t a = 0, b = 0, c = 0;
    auto unit_of = [](SqliteStore& s, int64_t id) {
        auto q = s.db().prepare("SELECT unit FROM tasks WHERE id=?");
        q.bind(1, id).step();
        return q.opt_i64(0);
    };
    {
        auto s = ts.open();
        auto ids = s.insert_batch({"SELECT 'a'", "SELECT 'b'", "SELECT 'c'"}, "alice");
        a = ids[0], b = ids[1], c = ids[2];
        // Message a runs task a: nothing to write. Message c runs task b, the older one.
        REQUIRE(s.claim_next(a, Owner::self(), {}).id == a);
        REQUIRE(s.claim_next(c, Owner::self(), {}).id == b);
        CHECK_FALSE(unit_of(s, a).has_value());
        CHECK(unit_of(s, b) == c);
        // Back to version 5, whose claims wrote every unit and indexed the column as is.
        s.db().exec(("UPDATE tasks SET unit=id WHERE id=" + std::to_string(a)).c_str());
        s.db().exec(kBeforeV8);
        s.db().exec("DROP INDEX tasks_unit; CREATE INDEX tasks_unit ON tasks(unit); PRAGMA user_version=5");
    }
    auto s = ts.open();
    auto v = s.db().prepare(
        "SELECT (SELECT sql FROM sqlite_schema WHERE name='tasks_unit'), (SELECT user_version FROM pragma_user_version)");
    REQUIRE(v.step());
    CHECK(v.text(0).find("coalesce(unit, id)") != std::string::npos);
    CHECK(v.i64(1) == SqliteStore::kSchemaVersion);
    v.reset();
    // The deliveries are found as before: each running task's message, and a task's own. Seen
    // by a worker on another host, whose lease holds (this process would take its own over).
    CHECK(s.task_of_unit(a) == a);
    CHECK(s.task_of_unit(c) == b);
    const Owner other{"host-b", 1, 1};
    CHECK(s.claim_next(a, other, {}).kind == TaskStore::ClaimKind::held);
    auto again = s.claim_next(c, other, {});
    CHECK(again.kind == TaskStore::ClaimKind::held);
    CHECK(again.id == b);
}

TEST_CASE("schema version 7: a claim by the user served last leaves the users' order unwritten, a store of "
          "version 6 is migrated",
          "[store][schema][fair]") {
    TempStore ts;
    auto served = [](SqliteStore& s, const char* user) {
        auto q = s.db().prepare("SELECT served FROM users WHERE name=?");
        return q.bind(1, user).step() ? q.i64(0) : -1;
    };
    // The task message `unit` runs, finished at once: nobody's running count grows.
    auto run = [](SqliteStore& s, int64_t unit) {
        auto c = s.claim_next(unit, Owner::self(), {});
        REQUIRE(c.kind == TaskStore::ClaimKind::claimed);
        REQUIRE(s.finish(c.id, c.token, ok_outcome()));
        return c.id;
    };
    {
        auto s = ts.open();
        // Back to version 6, whose trigger wrote the user's turn at every claim.
        s.db().exec(kBeforeV8);
        s.db().exec("DROP TRIGGER tasks_served; "
                    "CREATE TRIGGER tasks_served AFTER UPDATE OF status ON tasks "
                    "    WHEN old.status = 'queued' AND new.status = 'running' "
                    "BEGIN "
                    "    INSERT INTO users(name, served) VALUES (new.submitter, "
                    "        (SELECT coalesce(max(served), 0) + 1 FROM users)) "
                    "        ON CONFLICT(name) DO UPDATE SET served = excluded.served; "
                    "END; PRAGMA user_version=6");
        auto ids = s.insert_batch({"SELECT 1", "SELECT 2"}, "alice");
        REQUIRE(s.claim_next(ids[0], Owner::self(), {}).id == ids[0]);
        REQUIRE(s.claim_next(ids[1], Owner::self(), {}).id == ids[1]);
        REQUIRE(served(s, "alice") == 2);  // version 6: written at each claim
        s.db().exec("UPDATE tasks SET status='succeeded', outcomes=1");  // (this sqlq's outcome needs schema 8)
    }
    auto s = ts.open();
    auto v = s.db().prepare("SELECT user_version FROM pragma_user_version");
    REQUIRE(v.step());
    CHECK(v.i64(0) == SqliteStore::kSchemaVersion);
    v.reset();
    auto a = s.insert_batch({"SELECT 3", "SELECT 4", "SELECT 5"}, "alice");
    auto b = s.insert_batch({"SELECT 6", "SELECT 7"}, "bob");
    // The order between users is as before: a user's turn moves past everyone else's.
    CHECK(run(s, a[0]) == b[0]);  // bob, never served, goes first
    CHECK(served(s, "bob") == 3);
    CHECK(run(s, a[1]) == a[0]);  // alice, served longer ago than bob
    CHECK(served(s, "alice") == 4);
    CHECK(run(s, a[2]) == b[1]);
    CHECK(served(s, "bob") == 5);
    CHECK(run(s, b[0]) == a[1]);
    CHECK(served(s, "alice") == 6);
    // Only alice waits and she was served last: her claim leaves her turn as it is.
    CHECK(run(s, b[1]) == a[2]);
    CHECK(served(s, "alice") == 6);
    CHECK(served(s, "bob") == 5);
}

TEST_CASE("schema version 8: a small result is kept in its task's row, a larger one in results, both read "
          "alike, a store of version 7 keeps its results",
          "[store][schema][result]") {
    TempStore ts;
    int64_t old = 0;
    {
        auto s = ts.open();
        old = s.insert("SELECT 7 AS n", "alice");
        REQUIRE(s.claim(old, Owner::self(), 3).kind == TaskStore::ClaimKind::claimed);
        // Back to version 7, and the task's small result where that version kept it.
        s.db().exec(kBeforeV8);
        s.db().exec(("INSERT INTO results(task_id, columns, rows, created_at) VALUES(" + std::to_string(old) +
                     ", '[\"n\"]', '[[7]]', 0); UPDATE tasks SET status='succeeded', outcomes=1, result_bytes=5, "
                     "result_ref='results/" + std::to_string(old) + "' WHERE id=" + std::to_string(old) +
                     "; PRAGMA user_version=7")
                        .c_str());
    }
    auto s = ts.open();
    auto one = [&](const std::string& sql) {
        auto q = s.db().prepare(sql);
        REQUIRE(q.step());
        return q.is_null(0) ? std::string("NULL") : q.text(0);
    };
    auto finished = [&](const Outcome& o) {
        const int64_t id = s.insert("SELECT 1", "alice");
        auto c = s.claim(id, Owner::self(), 3);
        REQUIRE(s.finish(id, c.token, o));
        return id;
    };
    auto streamed = [&](int64_t id) {
        auto r = s.read_result(id);
        REQUIRE(r);
        std::string rows, buf(7, '\0');  // small blocks: several reads
        for (size_t n; (n = r->read(buf.data(), buf.size())) > 0;) rows.append(buf.data(), n);
        return r->columns_json() + rows;
    };
    Outcome small = ok_outcome(), big = ok_outcome();
    small.result_bytes = 10;
    big.result = ResultData{"[\"x\"]", "[[\"" + std::string(1000, 'z') + "\"],[2]]"};
    big.result_bytes = 1014;
    const int64_t small_id = finished(small), big_id = finished(big);
    const std::string id_of = " WHERE id=";
    CHECK(one("SELECT result_rows FROM tasks" + id_of + std::to_string(small_id)) == "[[1]]");
    CHECK(one("SELECT result_rows FROM tasks" + id_of + std::to_string(big_id)) == "NULL");
    CHECK(one("SELECT group_concat(task_id) FROM results") == std::to_string(old) + "," + std::to_string(big_id));
    // Read alike, wherever kept: whole, by page, streamed; and each shown with its result.
    CHECK(s.result(old)->rows_json == "[[7]]");
    CHECK(s.result(small_id)->rows_json == "[[1]]");
    CHECK(s.result(small_id)->columns_json == "[\"1\"]");
    CHECK(s.result(big_id)->rows_json == big.result->rows_json);
    CHECK(s.result_page(small_id, 0, 10)->rows_json == "[[1]]");
    CHECK(s.result_page(small_id, 0, 10)->total == 1);
    CHECK(s.result_page(old, 0, 10)->rows_json == "[[7]]");
    CHECK(s.result_page(big_id, 1, 10)->rows_json == "[[2]]");
    CHECK(s.result_page(big_id, 1, 10)->total == 2);
    CHECK(streamed(small_id) == "[\"1\"][[1]]");
    CHECK(streamed(old) == "[\"n\"][[7]]");
    CHECK(streamed(big_id) == big.result->columns_json + big.result->rows_json);
    for (int64_t id : {old, small_id, big_id}) CHECK(s.get(id)->result_ref == "results/" + std::to_string(id));
    // Expired alike: all three are over a 1-byte cap.
    CHECK(s.expire_results({3600, 0, 1}) == 3);
    for (int64_t id : {old, small_id, big_id}) {
        CHECK_FALSE(s.result(id));
        CHECK_FALSE(s.result_page(id, 0, 10));
        CHECK_FALSE(s.read_result(id));
        CHECK_FALSE(s.get(id)->result_ref);
    }
    CHECK(one("SELECT count(*) FROM tasks WHERE result_rows IS NOT NULL OR result_columns IS NOT NULL") == "0");
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
    auto level = [](SqliteStore& s) {
        auto st = s.db().prepare("PRAGMA synchronous");
        st.step();
        return st.i64(0);  // 0 OFF, 1 NORMAL, 2 FULL
    };
    SECTION("off never syncs, not even for an outcome") {
        t.cfg.durability = "off";
        auto s = t.open();
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
        auto s = t.open();
        int syncs = CountingVfs::wal_syncs();
        int64_t id = s.insert("SELECT 1", "test");
        auto c = s.claim(id, Owner::self(), 3);
        REQUIRE(s.finish(id, c.token, ok_outcome()));
        CHECK(level(s) == 1);
        CHECK(CountingVfs::wal_syncs() == syncs);
    }
    SECTION("full syncs a submit, an outcome and a cancel request, not a claim or a lease renewal") {
        t.cfg.durability = "full";
        auto s = t.open();
        // Commits run at NORMAL, so the write lock is never held across a sync; the store syncs
        // the log itself once the commit is done.
        CHECK(level(s) == 1);
        int syncs = CountingVfs::wal_syncs();
        int64_t id = s.insert("SELECT 1", "test");
        CHECK(CountingVfs::wal_syncs() == syncs + 1);
        auto c = s.claim(id, Owner::self(), 3);
        REQUIRE(c.kind == TaskStore::ClaimKind::claimed);
        CHECK(s.tick(id, c.token, TaskStore::Renew::yes).still_owner);
        CHECK(CountingVfs::wal_syncs() == syncs + 1);
        REQUIRE(s.finish(id, c.token, ok_outcome()));
        CHECK(CountingVfs::wal_syncs() == syncs + 2);
        CHECK(CountingVfs::synced_size() == int64_t(std::filesystem::file_size(t.path() + "-wal")));  // after the commit
        int64_t other = s.insert("SELECT 2", "test");
        CHECK(s.request_cancel(other, "test").kind == TaskStore::CancelKind::cancelled);
        CHECK(CountingVfs::wal_syncs() == syncs + 4);
        CHECK(CountingVfs::synced_size() == int64_t(std::filesystem::file_size(t.path() + "-wal")));
        // A redelivery that finds the task finished syncs before its message is acked: the
        // outcome it saw may be another worker's, committed but not yet synced (here a worker
        // of the same store at "normal", which never syncs it) ...
        const int64_t third = s.insert("SELECT 3", "test");
        {
            StoreConfig peer_cfg = t.cfg;
            peer_cfg.path = t.path();
            peer_cfg.durability = "normal";
            SqliteStore peer(peer_cfg, {});
            auto pc = peer.claim(third, Owner::self(), 3);
            REQUIRE(peer.finish(third, pc.token, ok_outcome()));
        }
        const int before = CountingVfs::wal_syncs();
        CHECK(s.claim(third, Owner::self(), 3).kind == TaskStore::ClaimKind::finished);
        CHECK(CountingVfs::wal_syncs() == before + 1);
        CHECK(CountingVfs::synced_size() == int64_t(std::filesystem::file_size(t.path() + "-wal")));
        // Its own writes are synced once a sync begun after them has ended (syncs are grouped:
        // write_gate.h), but an outcome found with no write of its own always: the gate's count
        // misses a commit whose worker died before releasing the gate.
        CHECK(s.claim(third, Owner::self(), 3).kind == TaskStore::ClaimKind::finished);
        CHECK(CountingVfs::wal_syncs() == before + 2);
        CHECK(level(s) == 1);
    }
}

TEST_CASE("a failed sync of an outcome is not a retryable store error", "[store][durability]") {
    TempStore t;
    CountingVfs vfs;
    t.cfg.durability = "full";
    auto s = t.open();
    int64_t id = s.insert("SELECT 1", "test");
    auto c = s.claim(id, Owner::self(), 3);
    CountingVfs::fail_syncs(true);
    // The commit is done and visible, only its place on disk is in doubt: the worker must not
    // take this for "not written, try again" (then ack); it stops instead.
    try {
        s.finish(id, c.token, ok_outcome());
        FAIL("finish() returned although the sync failed");
    } catch (const StoreError& e) {
        FAIL("a failed sync came as a StoreError (transient: " << e.transient() << "), which callers may retry");
    } catch (const Error& e) {
        CHECK_THAT(e.what(), Catch::Contains("cannot sync the write-ahead log") &&
                                 Catch::Contains("may not survive a power loss") && Catch::Contains("tasks.db"));
    }
    CountingVfs::fail_syncs(false);
}

TEST_CASE("every write to the store waits at the writer gate", "[store][gate]") {
    TempStore t;
    t.cfg.busy_timeout_ms = 100;
    auto s = t.open();
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
    CHECK(waits([&] { s.tick(running, c.token, TaskStore::Renew::yes); }));
    CHECK(waits([&] { s.finish(running, c.token, ok_outcome()); }));
    CHECK(waits([&] { s.request_cancel(queued, "test"); }));
    CHECK(waits([&] { s.owner_lost(running, Owner::self(), "gone"); }));
    CHECK(waits([&] { s.fail_abandoned(running, Owner::self(), "gone"); }));
    CHECK(waits([&] { s.expire_results(0); }));
    CHECK_NOTHROW(s.tick(running, c.token, TaskStore::Renew::no));  // a read passes
    holder.release();
    CHECK(holder.reap() == 0);
    CHECK(s.finish(running, c.token, ok_outcome()));  // and the writes go on once it is free
}

TEST_CASE("a task read through the store leaves no statement holding a read transaction", "[store]") {
    TempStore t;
    auto s = t.open();
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


TEST_CASE("a new store, its log, shared memory and gate are private to their owner, whatever the umask",
          "[store][files]") {
    TempStore t;
    mode_t old = ::umask(0);
    StoreConfig c = t.cfg;
    c.path = t.dir + "/new/deeper/tasks.db";
    c.durability = "full";
    {
        SqliteStore s(c, {});
        s.insert("SELECT 1", "test");  // the WAL and the shared memory exist once written
        auto mode = [](const std::string& p) {
            struct stat st {};
            REQUIRE(::stat(p.c_str(), &st) == 0);
            return st.st_mode & 07777;
        };
        CHECK(mode(c.path) == 0600);
        CHECK(mode(c.path + "-wal") == 0600);
        CHECK(mode(c.path + "-shm") == 0600);
        CHECK(mode(c.path + "-gate") == 0600);
        CHECK(mode(t.dir + "/new") == 0700);
        CHECK(mode(t.dir + "/new/deeper") == 0700);
    }
    ::umask(old);
}

TEST_CASE("expired results give their pages back to the file system", "[store][files][retention]") {
    TempStore t;
    auto s = t.open();
    auto pages = [&](const char* pragma) {
        auto st = s.db().prepare(pragma);
        st.step();
        return st.i64(0);
    };
    CHECK(pages("PRAGMA auto_vacuum") == 2);  // incremental
    Outcome big = ok_outcome();
    big.result = ResultData{"[\"x\"]", "[[\"" + std::string(4 << 20, 'z') + "\"]]"};
    int64_t id = s.insert("SELECT 1", "test");
    auto c = s.claim(id, Owner::self(), 3);
    REQUIRE(s.finish(id, c.token, big));
    const int64_t full = pages("PRAGMA page_count");
    CHECK(s.expire_results({0, 0, 1}) == 1);  // over a 1-byte cap
    CHECK(pages("PRAGMA freelist_count") == 0);
    CHECK(pages("PRAGMA page_count") < full / 4);
}

namespace {
// What SQLite allocated at most (sqlite3_memory_highwater) since this was made, above what it
// held then: what reading a task cost in memory, whatever the page cache kept before.
struct SqliteMemoryPeak {
    int64_t base = sqlite3_memory_used();
    SqliteMemoryPeak() { sqlite3_memory_highwater(/*reset=*/1); }
    int64_t grown() const { return sqlite3_memory_highwater(0) - base; }
};

// This process's peak resident set (VmHWM), in bytes; reset_peak_rss() starts it again from the
// current RSS (Linux's clear_refs), false when it cannot.
int64_t peak_rss() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
    return -1;
}
bool reset_peak_rss() { return bool(std::ofstream("/proc/self/clear_refs") << "5"); }

// Makes task `id`'s SQL `bytes` of 'x', written in place (a zeroblob, then 1 MiB writes), so
// that the test never holds the text in memory: in its own table (`task_sql`, where a task
// stored now keeps it) or in the task's row (`tasks`, as before schema version 3). It is stored
// as a BLOB: reading it whole or through substr() loads all of it, as for a TEXT.
void make_huge_sql(SqliteStore& s, int64_t id, int64_t bytes, const std::string& table) {
    // Never an UPDATE of the task's row once it holds the text: that would load it all.
    s.db().prepare("UPDATE tasks SET sql_bytes=? WHERE id=?").bind(1, bytes).bind(2, id).run();
    const std::string where = table == "tasks" ? "id" : "task_id";
    s.db().prepare("UPDATE " + table + " SET sql=zeroblob(?) WHERE " + where + "=?").bind(1, bytes).bind(2, id).run();
    sqlite3_blob* raw = nullptr;
    REQUIRE(sqlite3_blob_open(s.db().get(), "main", table.c_str(), "sql", id, /*write=*/1, &raw) == SQLITE_OK);
    std::unique_ptr<sqlite3_blob, sqlite::CloseBlob> blob(raw);
    const std::string chunk(1 << 20, 'x');
    for (int64_t at = 0; at < bytes; at += int64_t(chunk.size()))
        REQUIRE(sqlite3_blob_write(blob.get(), chunk.data(), int(std::min<int64_t>(chunk.size(), bytes - at)), int(at)) ==
                SQLITE_OK);
}
}  // namespace

TEST_CASE("a worker waiting for a task's live owner does not load its SQL at every look", "[store][claim][size]") {
    TempStore t;
    StoreConfig c = t.cfg;
    c.path = t.path();
    std::map<int64_t, bool> alive{{101, true}, {102, true}};  // by pid
    StoreDeps deps;
    deps.owner_alive = [&](const Owner& o) { return alive[o.pid] ? StoreDeps::Liveness::alive : StoreDeps::Liveness::dead; };
    SqliteStore s(c, deps);
    REQUIRE(sqlite3_memory_used() > 0);  // SQLite counts its memory (SQLITE_DEFAULT_MEMSTATUS)
    const int64_t bytes = 32 << 20;
    int64_t id = s.insert("SELECT 1", "alice");
    make_huge_sql(s, id, bytes, "task_sql");
    const Owner first{"host-a", 101, 1}, second{"host-a", 102, 1};
    REQUIRE(s.claim(id, first, 3).kind == TaskStore::ClaimKind::claimed);
    {
        SqliteMemoryPeak peak;
        for (int i = 0; i < 3; ++i) CHECK(s.claim(id, second, 3).kind == TaskStore::ClaimKind::held);
        CHECK(peak.grown() < (8 << 20));  // the page cache at most, not the 32 MB text
    }
    alive[101] = false;  // its owner is gone: the takeover gets the whole text
    auto taken = s.claim(id, second, 3);
    REQUIRE(taken.kind == TaskStore::ClaimKind::claimed);
    CHECK(int64_t(taken.sql.size()) == bytes);
    CHECK(taken.sql.find_first_not_of('x') == std::string::npos);
}

TEST_CASE("list and show of a task with a 200 MB SQL text stay small in memory, in a migrated store too",
          "[store][list][size]") {
    TempStore t;
    const int64_t bytes = 200'000'000;
    int64_t id = 0;
    {
        auto s = t.open();
        const int64_t first = s.insert("SELECT 'a first task'", "bob");
        id = s.insert("SELECT 1", "alice");
        SECTION("a store made before schema version 3: texts in the task rows, no previews") {
            s.db().exec(kBeforeV8);
            s.db().exec("DROP TABLE fleets");  // v5
            s.db().exec("DROP TRIGGER tasks_served; DROP TABLE users; DROP INDEX tasks_queue; DROP INDEX tasks_unit; "
                        "ALTER TABLE tasks DROP COLUMN unit; CREATE INDEX tasks_status ON tasks(status)");  // v4
            s.db().exec("DROP TABLE task_sql");
            s.db().exec("ALTER TABLE tasks DROP COLUMN sql_preview");
            s.db().exec("PRAGMA user_version=2");
            s.db().prepare("UPDATE tasks SET sql=? WHERE id=?").bind(1, "SELECT 'a first task'").bind(2, first).run();
            make_huge_sql(s, id, bytes, "tasks");
        }
        SECTION("a store of this version") {
            // The text is replaced in place: give the task the preview an insert writes.
            s.db().prepare("UPDATE tasks SET sql_preview=? WHERE id=?").bind(1, std::string(1000, 'x')).bind(2, id).run();
            make_huge_sql(s, id, bytes, "task_sql");
        }
    }
    const bool rss = reset_peak_rss();
    const int64_t rss_before = peak_rss();
    SqliteMemoryPeak peak;
    auto s = t.open();
    auto listed = s.list(std::nullopt, 10);
    REQUIRE(listed.size() == 2);
    CHECK(listed[0].id == id);
    CHECK(listed[0].sql == std::string(1000, 'x'));
    CHECK(listed[0].sql_bytes == bytes);
    CHECK(listed[0].sql_truncated);
    CHECK(listed[1].sql == "SELECT 'a first task'");
    CHECK_FALSE(listed[1].sql_truncated);
    auto shown = s.get(id);
    REQUIRE(shown);
    CHECK(shown->sql == std::string(1 << 20, 'x'));
    CHECK(shown->sql_bytes == bytes);
    CHECK(shown->sql_truncated);
    auto changed = s.changes(0, {});
    REQUIRE(changed.size() == 2);
    CHECK(changed[1].sql.size() == 1000);
    // Generous bounds: the 1 MiB read and its copies, the page cache; never the 200 MB.
    CHECK(peak.grown() < (24 << 20));
    if (rss) CHECK(peak_rss() - rss_before < (48 << 20));
    else WARN("cannot reset the peak RSS here (/proc/self/clear_refs): only SQLite's own count is checked");
}

TEST_CASE("the write-ahead log is cut back to 64 MiB once a checkpoint has emptied it", "[store][files]") {
    TempStore t;
    auto s = t.open();
    const std::string wal = t.path() + "-wal";
    // One transaction of 80 MB: the log grows past the limit while it is written.
    Outcome big = ok_outcome();
    big.result = ResultData{"[\"x\"]", "[[\"" + std::string(80 << 20, 'z') + "\"]]"};
    int64_t id = s.insert("SELECT 1", "test");
    auto c = s.claim(id, Owner::self(), 3);
    REQUIRE(s.finish(id, c.token, big));
    big.result.reset();
    REQUIRE(std::filesystem::file_size(wal) > (80u << 20));
    s.db().exec("PRAGMA wal_checkpoint(PASSIVE)");
    s.insert("SELECT 2", "test");  // the first write after the checkpoint starts the log again, and cuts it
    CHECK(std::filesystem::file_size(wal) <= (64u << 20));
}

namespace {
// Counts the commits of one connection (sqlite3_commit_hook); unhooks on destruction.
struct CommitCounter {
    sqlite3* db;
    int commits = 0;
    explicit CommitCounter(sqlite3* d) : db(d) {
        sqlite3_commit_hook(db, [](void* p) { return ++static_cast<CommitCounter*>(p)->commits, 0; }, this);
    }
    ~CommitCounter() { sqlite3_commit_hook(db, nullptr, nullptr); }
};
}  // namespace

TEST_CASE("an outcome and the next delivery's claim are one transaction (finish_then_claim)", "[store][claim][one-txn]") {
    TempStore t;
    CountingVfs vfs;
    t.cfg.durability = "full";
    auto s = t.open();
    const Owner me = Owner::self();
    const int64_t a = s.insert("SELECT 'a'", "alice");
    const int64_t b = s.insert("SELECT 'b'", "bob");
    auto c = s.claim_next(a, me, {});
    REQUIRE(c.kind == TaskStore::ClaimKind::claimed);
    REQUIRE(c.id == a);
    std::optional<TaskStore::Claim> next;

    SECTION("written: one commit and one sync for both; the claim is claim_next's") {
        CommitCounter counter(s.db().get());
        const int syncs = CountingVfs::wal_syncs();
        REQUIRE(s.finish_then_claim(a, c.token, ok_outcome(), b, me, {}, next));
        CHECK(counter.commits == 1);
        CHECK(CountingVfs::wal_syncs() == syncs + 1);
        CHECK(CountingVfs::synced_size() == int64_t(std::filesystem::file_size(t.path() + "-wal")));
        REQUIRE(next);
        CHECK(next->kind == TaskStore::ClaimKind::claimed);
        CHECK(next->id == b);
        CHECK(next->sql == "SELECT 'b'");
        CHECK(next->token == 1);
        CHECK(s.get(a)->status == Status::succeeded);
        CHECK(s.get(b)->status == Status::running);
        CHECK(s.get(b)->owner == me.name());
        // Nothing queued any more: the next delivery's claim says so, in the same one commit.
        auto c2 = *next;
        REQUIRE(s.finish_then_claim(b, c2.token, ok_outcome(), a, me, {}, next));
        REQUIRE(next);
        CHECK(next->kind == TaskStore::ClaimKind::none);
        CHECK(counter.commits == 2);
    }
    SECTION("fenced out: nothing written, nothing claimed") {
        CommitCounter counter(s.db().get());
        CHECK_FALSE(s.finish_then_claim(a, c.token + 1, ok_outcome(), b, me, {}, next));
        CHECK_FALSE(next);
        CHECK(counter.commits == 0);
        CHECK(s.get(a)->status == Status::running);
        CHECK(s.get(b)->status == Status::queued);
    }
    SECTION("with max_running_per_user the outcome goes alone: the claim is the worker's own, chosen first") {
        TaskStore::ClaimRules limited;
        limited.max_running_per_user = 1;
        REQUIRE(s.finish_then_claim(a, c.token, ok_outcome(), b, me, limited, next));
        CHECK_FALSE(next);
        CHECK(s.get(a)->status == Status::succeeded);
        CHECK(s.get(b)->status == Status::queued);
    }
    SECTION("a claim that must wait is left to the worker, the outcome written") {
        // b is held by a live worker (this process, as another owner would be).
        Owner other = me;
        other.host = "host-b";  // unknown liveness: its lease holds
        auto held = s.claim(b, other, 3);
        REQUIRE(held.kind == TaskStore::ClaimKind::claimed);
        REQUIRE(s.finish_then_claim(a, c.token, ok_outcome(), b, me, {}, next));
        CHECK_FALSE(next);
        CHECK(s.get(a)->status == Status::succeeded);
    }
    SECTION("a claim that fails takes the outcome with it only when its transaction is lost") {
        // A unit whose task is another store's: the claim says unknown, the outcome stands.
        REQUIRE(s.finish_then_claim(a, c.token, ok_outcome(), 999999, me, {}, next));
        REQUIRE(next);
        CHECK(next->kind == TaskStore::ClaimKind::unknown);
        CHECK(s.get(a)->status == Status::succeeded);
        CHECK(s.get(b)->status == Status::queued);
    }
}
