// The query target through its interface only (open_target), on SQLite files made here.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <thread>

#include "sqlite/db.h"
#include "target/target.h"

using namespace sqlq;

namespace {
struct TargetDb {
    std::string dir;
    QueryConfig cfg;
    TargetDb() {
        char tmpl[] = "/tmp/sqlq-target-XXXXXX";
        dir = mkdtemp(tmpl);
        cfg.database = dir + "/t.db";
        sqlite::Db db(cfg.database, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("CREATE TABLE t(a INTEGER, b TEXT, c BLOB, d REAL);"
                "INSERT INTO t VALUES (1, 'one', x'00ff', 1.5), (2, NULL, NULL, NULL), (3, 'th\"ree', NULL, -2);");
    }
    ~TargetDb() { std::filesystem::remove_all(dir); }
};
const PollFn never = [] { return false; };
const std::string endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
}  // namespace

TEST_CASE("a read query returns its columns and rows as JSON", "[target]") {
    TargetDb t;
    auto target = open_target(t.cfg);
    auto r = target->run("SELECT a, b, c, d FROM t ORDER BY a", never);
    REQUIRE(r.kind == QueryOutcome::Kind::ok);
    CHECK(r.rows == 3);
    CHECK(r.result.columns_json == R"(["a","b","c","d"])");
    CHECK(r.result.rows_json == R"([[1,"one",{"blob_hex":"00ff"},1.5],[2,null,null,null],[3,"th\"ree",null,-2.0]])");
}

TEST_CASE("writes and state changes are refused", "[target][readonly]") {
    TargetDb t;
    auto target = open_target(t.cfg);
    auto refused = [&](const std::string& sql) {
        auto r = target->run(sql, never);
        INFO(sql << " → " << r.error);
        CHECK(r.kind == QueryOutcome::Kind::error);
        return r.error;
    };
    CHECK(refused("INSERT INTO t VALUES (4, 'x', NULL, NULL)") == "INSERT is not allowed: queries are read-only");
    CHECK(refused("UPDATE t SET a = 5") == "UPDATE is not allowed: queries are read-only");
    CHECK(refused("DELETE FROM t") == "DELETE is not allowed: queries are read-only");
    CHECK(refused("DROP TABLE t").find("not allowed") != std::string::npos);
    CHECK(refused("CREATE TABLE u(x)").find("not allowed") != std::string::npos);
    CHECK(refused("ATTACH DATABASE '/tmp/x.db' AS x") == "ATTACH is not allowed: queries are read-only");
    CHECK(refused("PRAGMA writable_schema=1").find("PRAGMA writable_schema with a value is not allowed") == 0);
    CHECK(refused("PRAGMA journal_mode=DELETE").find("not allowed") != std::string::npos);
    CHECK(refused("PRAGMA query_only=0").find("not allowed") != std::string::npos);
    CHECK(refused("SELECT load_extension('x')").find("not allowed") != std::string::npos);
    CHECK(refused("BEGIN").find("not allowed") != std::string::npos);
    CHECK(refused("SELECT 1; DELETE FROM t") == "only one SQL statement per task");
    CHECK(refused("   -- nothing\n") == "empty query: no SQL statement");
    CHECK(refused("SELEC 1").find("syntax error") != std::string::npos);
    // and the data is untouched
    auto r = target->run("SELECT count(*) FROM t", never);
    CHECK(r.result.rows_json == "[[3]]");
    // a read-only pragma is fine
    CHECK(target->run("PRAGMA table_info(t)", never).kind == QueryOutcome::Kind::ok);
    CHECK(target->run("SELECT 1; -- trailing comment", never).kind == QueryOutcome::Kind::ok);
}

TEST_CASE("the timeout and the caps hold", "[target][limits]") {
    TargetDb t;
    SECTION("timeout") {
        t.cfg.timeout_ms = 200;
        auto target = open_target(t.cfg);
        auto r = target->run(endless, never);
        CHECK(r.kind == QueryOutcome::Kind::timeout);
        CHECK(r.error == "the query ran longer than 200 ms (query.timeout_ms)");
    }
    SECTION("rows") {
        t.cfg.max_rows = 10;
        auto target = open_target(t.cfg);
        auto r = target->run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c", never);
        CHECK(r.kind == QueryOutcome::Kind::error);
        CHECK(r.error == "the result has more than 10 rows (query.max_rows)");
    }
    SECTION("bytes") {
        t.cfg.max_bytes = 10000;
        auto target = open_target(t.cfg);
        auto r = target->run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000) "
                             "SELECT printf('%.100c', 'x') FROM c", never);
        CHECK(r.kind == QueryOutcome::Kind::error);
        CHECK(r.error == "the result is larger than 10000 bytes (query.max_bytes)");
        auto big = target->run("SELECT length(zeroblob(1000000))", never);
        CHECK(big.kind == QueryOutcome::Kind::error);
        CHECK(big.error.find("query.max_bytes") != std::string::npos);
    }
    SECTION("memory") {
        t.cfg.memory_limit_mb = 8;
        auto target = open_target(t.cfg);
        auto r = target->run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 2000000) "
                             "SELECT length(group_concat(printf('%020d', x))) FROM c", never);
        CHECK(r.kind == QueryOutcome::Kind::error);
        CHECK(r.error == "the query needs more memory than 8 MB (query.memory_limit_mb)");
        sqlite3_hard_heap_limit64(0);
    }
    SECTION("stop from the poll callback") {
        auto target = open_target(t.cfg);
        int calls = 0;
        auto r = target->run(endless, [&] { return ++calls == 3; });
        CHECK(r.kind == QueryOutcome::Kind::stopped);
        CHECK(calls == 3);
    }
}

TEST_CASE("cancel stops the running query from another thread, and only that one", "[target][cancel]") {
    TargetDb t;
    auto target = open_target(t.cfg);
    SECTION("during a query") {
        std::atomic<bool> running{false};
        std::thread canceller([&] {
            while (!running) std::this_thread::yield();
            target->cancel();
        });
        auto r = target->run(endless, [&] {
            running = true;
            return false;
        });
        canceller.join();
        CHECK(r.kind == QueryOutcome::Kind::stopped);
        CHECK(r.error.empty());
    }
    SECTION("a cancel made before the query starts is dropped") {
        target->cancel();
        auto r = target->run("SELECT count(*) FROM t", never);
        CHECK(r.kind == QueryOutcome::Kind::ok);
        CHECK(r.result.rows_json == "[[3]]");
    }
}

TEST_CASE("the target is chosen by [query] database, and a bad one is a clear error", "[target][open]") {
    QueryConfig cfg;
    SECTION("a postgresql:// URL: not built yet, a config error that shows no password") {
        for (std::string url : {"postgresql://app:s3cret@db.example/prod", "postgres://app:s3cret@db.example/prod"}) {
            cfg.database = url;
            try {
                open_target(cfg);
                FAIL("opened " << url);
            } catch (const TargetError& e) {
                INFO(e.what());
                CHECK(e.exit_code() == kExitUsage);
                CHECK(std::string(e.what()).find("not built yet") != std::string::npos);
                CHECK(std::string(e.what()).find("s3cret") == std::string::npos);
            }
        }
    }
    SECTION("another URL scheme") {
        cfg.database = "mysql://h/db";
        CHECK_THROWS_MATCHES(open_target(cfg), TargetError,
                             Catch::Predicate<TargetError>([](const TargetError& e) { return e.exit_code() == kExitUsage; }));
    }
    SECTION("a SQLite file that does not exist: the file and SQLite's reason") {
        cfg.database = "/nonexistent/sqlq/t.db";
        try {
            open_target(cfg);
            FAIL("opened a missing file");
        } catch (const TargetError& e) {
            CHECK(e.exit_code() == kExitError);
            CHECK(std::string(e.what()).find("/nonexistent/sqlq/t.db: cannot open") == 0);
        }
    }
}

TEST_CASE("production targets know no fault-injection functions", "[target][hooks]") {
    // They live only in tests/support/test_worker.cpp (sqlq-test-worker).
    TargetDb t;
    auto target = open_target(t.cfg);
    for (const char* sql : {"SELECT sqlq_test_hang(1)", "SELECT sqlq_test_crash()"}) {
        auto r = target->run(sql, never);
        CHECK(r.kind == QueryOutcome::Kind::error);
        CHECK(r.error.find("no such function") != std::string::npos);
    }
}
