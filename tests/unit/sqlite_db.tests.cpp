// SQLite's errors as the rest of sqlq sees them (common/sqlite/db.h): a StoreError whose
// transient() says whether the same write may succeed later, and whose resource() says it was too
// big or out of memory. The worker branches on these (keep the message unacked and retry, or
// record a smaller outcome), so the mapping is checked code by code and on real failures.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <unistd.h>

#include "sqlite/db.h"

using namespace sqlq;
using sqlq::sqlite::Db;
using sqlq::sqlite::SqliteError;

namespace {
struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/sqlq-db-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

constexpr int kOpen = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;

// Runs f, which must throw a SqliteError, and returns it as the StoreError callers catch.
template <class F>
SqliteError thrown_by(F f) {
    try {
        f();
    } catch (const SqliteError& e) {
        return e;
    }
    FAIL("no SqliteError was thrown");
    throw;  // not reached
}
}  // namespace

TEST_CASE("SQLite's result codes map to a StoreError as db.h documents", "[sqlite][errors]") {
    struct Case {
        int code;
        bool transient, resource;
    };
    const Case cases[] = {
        {SQLITE_BUSY, true, false},           {SQLITE_BUSY_SNAPSHOT, true, false},
        {SQLITE_BUSY_TIMEOUT, true, false},   {SQLITE_LOCKED, true, false},
        {SQLITE_LOCKED_SHAREDCACHE, true, false}, {SQLITE_FULL, true, false},
        {SQLITE_IOERR, true, false},          {SQLITE_IOERR_WRITE, true, false},
        {SQLITE_IOERR_FSYNC, true, false},    {SQLITE_CANTOPEN, true, false},
        {SQLITE_CONSTRAINT, false, false},    {SQLITE_CONSTRAINT_UNIQUE, false, false},
        {SQLITE_CONSTRAINT_CHECK, false, false}, {SQLITE_NOMEM, false, true},
        {SQLITE_TOOBIG, false, true},         {SQLITE_CORRUPT, false, false},
        {SQLITE_READONLY, false, false},      {SQLITE_ERROR, false, false},
        {SQLITE_MISMATCH, false, false},
    };
    for (const auto& c : cases) {
        SqliteError e("x", c.code);
        const StoreError& s = e;
        INFO(sqlite3_errstr(c.code) << " (extended code " << c.code << ")");
        CHECK(s.transient() == c.transient);
        CHECK(s.resource() == c.resource);
        CHECK(e.code() == c.code);
        CHECK(e.primary() == (c.code & 0xff));
        CHECK(e.busy() == (e.primary() == SQLITE_BUSY || e.primary() == SQLITE_LOCKED));
    }
}

TEST_CASE("real SQLite failures come out as the StoreError they are", "[sqlite][errors]") {
    TempDir dir;
    const std::string path = dir.path + "/t.db";
    Db db(path, kOpen);
    db.exec("PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT UNIQUE)");
    db.exec("INSERT INTO t(v) VALUES ('a')");

    SECTION("a constraint violation is not transient: the same write fails the same way") {
        auto e = thrown_by([&] { db.prepare("INSERT INTO t(v) VALUES ('a')").run(); });
        CHECK(e.primary() == SQLITE_CONSTRAINT);
        CHECK(e.code() == SQLITE_CONSTRAINT_UNIQUE);
        CHECK_FALSE(e.transient());
        CHECK_FALSE(e.resource());
        CHECK_THAT(e.what(), Catch::Contains(path) && Catch::Contains("UNIQUE"));
    }
    SECTION("a write while another connection holds the write lock is busy, and transient") {
        Db other(path, kOpen);
        other.exec("BEGIN IMMEDIATE");
        auto e = thrown_by([&] { db.exec("BEGIN IMMEDIATE"); });
        CHECK(e.primary() == SQLITE_BUSY);
        CHECK(e.busy());
        CHECK(e.transient());
        CHECK_FALSE(e.resource());
        other.exec("ROLLBACK");
    }
    SECTION("a full database is transient: space may be freed") {
        db.exec("PRAGMA max_page_count = 8");
        auto e = thrown_by([&] {
            auto ins = db.prepare("INSERT INTO t(v) VALUES (?)");
            for (int i = 0; i < 10000; ++i) ins.bind(1, std::string(200, 'x') + std::to_string(i)).run();
        });
        CHECK(e.primary() == SQLITE_FULL);
        CHECK(e.transient());
        CHECK_FALSE(e.resource());
    }
    SECTION("a value bigger than the connection takes is a resource failure, not transient") {
        sqlite3_limit(db.get(), SQLITE_LIMIT_LENGTH, 1000);
        auto e = thrown_by([&] {
            auto s = db.prepare("SELECT zeroblob(5000)");
            s.step();
        });
        CHECK(e.primary() == SQLITE_TOOBIG);
        CHECK(e.resource());
        CHECK_FALSE(e.transient());
    }
    SECTION("a database that cannot be opened is transient: the directory may come back") {
        auto e = thrown_by([&] { Db(dir.path + "/missing/t.db", kOpen); });
        CHECK(e.primary() == SQLITE_CANTOPEN);
        CHECK(e.transient());
        CHECK_THAT(e.what(), Catch::Contains(dir.path + "/missing/t.db"));
    }
}
