// The query target through its interface only (open_target), on SQLite files made here.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "sqlite/db.h"
#include "target/sqlite/readonly.h"
#include "target/sqlite/statement_cache.h"
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
    void exec(const char* sql) const {
        sqlite::Db db(cfg.database, SQLITE_OPEN_READWRITE);
        db.exec(sql);
    }
};
std::string ok_rows(Target& target, const std::string& sql) {
    auto r = target.run(sql, [] { return false; });
    INFO(sql << " → " << r.error);
    CHECK(r.kind == QueryOutcome::Kind::ok);
    return r.result.rows_json;
}
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
    SECTION("bytes are counted as stored: escapes, blobs as hex, column names") {
        t.cfg.max_bytes = 10000;
        auto target = open_target(t.cfg);
        // 2,000 raw bytes of char(1): 12,002 as JSON ("\u0001" each). Counted raw, it passed.
        auto ctl = target->run("SELECT printf('%.*c', 2000, char(1))", never);
        CHECK(ctl.kind == QueryOutcome::Kind::error);
        CHECK(ctl.error == "the result is larger than 10000 bytes (query.max_bytes)");
        // 5,000 blob bytes are 10,000 hex digits and the marker; 4,000 fit.
        CHECK(target->run("SELECT randomblob(5000)", never).kind == QueryOutcome::Kind::error);
        CHECK(target->run("SELECT randomblob(4000)", never).kind == QueryOutcome::Kind::ok);
        // A long column name alone.
        CHECK(target->run("SELECT 1 AS \"" + std::string(10000, 'n') + "\"", never).kind == QueryOutcome::Kind::error);
        // And what passes is no larger than the cap once stored.
        auto ok = target->run("SELECT printf('%.*c', 1000, char(1)), x'00ff', NULL, 1.5, -42 AS \"a\"\"b\"", never);
        REQUIRE(ok.kind == QueryOutcome::Kind::ok);
        CHECK(ok.bytes == int64_t(ok.result.rows_json.size() + ok.result.columns_json.size()));
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
    SECTION("a postgresql:// URL: a PostgreSQL target, shown without its password, waiting for its server") {
        for (std::string url : {"postgresql://app:s3cret@127.0.0.1:1/prod", "postgres://app:s3cret@127.0.0.1:1/prod"}) {
            cfg.database = url;
            auto t = open_target(cfg);  // nothing listens there: not an error yet
            CHECK(t->describe().find("app:***@127.0.0.1:1/prod") != std::string::npos);
            const std::string why = t->ready([] { return false; });
            CHECK(why.find("cannot connect to") != std::string::npos);
            CHECK(why.find("s3cret") == std::string::npos);
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

TEST_CASE("SQL functions outside the allowlist are refused by name", "[target][functions]") {
    TargetDb t;
    t.exec("CREATE VIRTUAL TABLE f4 USING fts4(body); INSERT INTO f4 VALUES ('running fast');");
    auto target = open_target(t.cfg);
    auto refused = [&](const std::string& sql) {
        auto r = target->run(sql, never);
        INFO(sql << " → " << r.error);
        CHECK(r.kind == QueryOutcome::Kind::error);
        return r.error;
    };
    // The issue's address leak, and its poison of the tokenizer table (a SIGSEGV in the next
    // query on an FTS table, on a connection that lives on).
    CHECK(refused("SELECT hex(fts3_tokenizer('simple'))") == "the function fts3_tokenizer is not allowed");
    CHECK(refused("SELECT fts3_tokenizer('simple', x'4141414141414141')") == "the function fts3_tokenizer is not allowed");
    CHECK(ok_rows(*target, "SELECT count(*) FROM f4 WHERE f4 MATCH 'running'") == "[[1]]");
    CHECK(refused("SELECT load_extension('x')") == "the function load_extension is not allowed");
    CHECK(refused("SELECT sqlite_log(1, 'x')") == "the function sqlite_log is not allowed");
    CHECK(refused("SELECT optimize(f4) FROM f4") == "the function optimize is not allowed");  // an FTS merge: a write
    CHECK(refused("SELECT Fts3_Tokenizer('simple')") == "the function fts3_tokenizer is not allowed");
    // The shell's file functions are not in the library at all.
    CHECK(refused("SELECT readfile('/etc/passwd')").find("no such function: readfile") != std::string::npos);
}

TEST_CASE("what a read-only console needs works: JSON, window, math, date, table-valued and FTS",
          "[target][functions]") {
    TargetDb t;
    t.exec("CREATE VIRTUAL TABLE f4 USING fts4(body); INSERT INTO f4 VALUES ('running fast');"
           "CREATE VIRTUAL TABLE f5 USING fts5(body); INSERT INTO f5 VALUES ('hello world');"
           "CREATE VIRTUAL TABLE r USING rtree(id, x0, x1);");
    auto target = open_target(t.cfg);
    CHECK(ok_rows(*target, "SELECT key, value FROM json_each('[10,20]')") == "[[0,10],[1,20]]");
    CHECK(ok_rows(*target, "SELECT count(*) FROM json_tree('{\"a\":[1,2]}')") == "[[4]]");
    CHECK(ok_rows(*target, "SELECT name FROM pragma_table_info('t') ORDER BY cid") == R"([["a"],["b"],["c"],["d"]])");
    CHECK(ok_rows(*target, "SELECT count(*) > 100 FROM pragma_function_list") == "[[1]]");
    CHECK(ok_rows(*target, "SELECT a, row_number() OVER (ORDER BY a DESC), lag(a) OVER (ORDER BY a) FROM t ORDER BY a")
          == "[[1,3,null],[2,2,1],[3,1,2]]");
    CHECK(ok_rows(*target, "SELECT sqrt(16), pow(2, 10), date('2020-01-31', '+1 day'), json_extract('{\"x\":5}', '$.x'),"
                           " '{\"x\":5}' ->> 'x', group_concat(a), printf('%05d', 42) FROM t")
          == R"([[4.0,1024.0,"2020-02-01",5,5,"1,2,3","00042"]])");
    CHECK(ok_rows(*target, "SELECT snippet(f4), offsets(f4) IS NOT NULL FROM f4 WHERE f4 MATCH 'running'")
          == R"([["<b>running</b> fast",1]])");
    CHECK(ok_rows(*target, "SELECT highlight(f5, 0, '[', ']'), bm25(f5) < 0 FROM f5 WHERE f5 MATCH 'hello'")
          == R"([["[hello] world",1]])");
    // A write-capable PRAGMA through its table-valued form is still refused, and says so.
    auto r = target->run("SELECT * FROM pragma_optimize", never);
    CHECK(r.kind == QueryOutcome::Kind::error);
    CHECK(r.error.find("PRAGMA optimize is not allowed") == 0);
    // An R-tree stays out of reach: its module prepares writes to its shadow tables as it
    // connects. The message says so, rather than "INSERT" or "changing the schema".
    auto rtree = target->run("SELECT * FROM r", never);
    CHECK(rtree.kind == QueryOutcome::Kind::error);
    CHECK(rtree.error == "the virtual table that stores its data in r_node cannot be read: its module writes to "
                         "that table as it opens, and queries are read-only");
}

TEST_CASE("a query cannot leave state behind for the next task", "[target][isolation]") {
    // The allowlist refuses fts3_tokenizer (above). Allowed here, as if the allowlist had missed
    // a function that changes the connection, it swaps the 'simple' tokenizer for 'porter'. The
    // FTS4 table was indexed with 'simple', so a connection that keeps the swap finds no
    // 'running' any more (porter looks for 'run').
    TargetDb t;
    t.exec("CREATE VIRTUAL TABLE f4 USING fts4(body); INSERT INTO f4 VALUES ('running fast');");
    sqlite::AllowedFunction missed("fts3_tokenizer");
    auto target = open_target(t.cfg);
    const std::string poison = "SELECT fts3_tokenizer('simple', fts3_tokenizer('porter'))";
    const std::string probe = "SELECT count(*) FROM f4 WHERE f4 MATCH 'running'";
    SECTION("a query that poisons and then fails: its connection is not used again") {
        auto r = target->run(poison + ", abs(-9223372036854775807 - 1)", never);
        CHECK(r.kind == QueryOutcome::Kind::error);
        CHECK(ok_rows(*target, probe) == "[[1]]");
    }
    SECTION("the first task after the worker was idle gets a new connection") {
        CHECK(target->run(poison, never).kind == QueryOutcome::Kind::ok);
        target->release_memory();
        CHECK(ok_rows(*target, probe) == "[[1]]");
    }
    SECTION("control: the poison is real on a connection that is kept") {
        CHECK(target->run(poison, never).kind == QueryOutcome::Kind::ok);
        CHECK(ok_rows(*target, probe) == "[[0]]");
    }
}

TEST_CASE("a query run again gives its rows again, and sees the schema as it is now", "[target][kept]") {
    TargetDb t;
    auto target = open_target(t.cfg);
    const std::string all = "SELECT * FROM t WHERE a < 3 ORDER BY a";
    const std::string first = R"([[1,"one",{"blob_hex":"00ff"},1.5],[2,null,null,null]])";
    CHECK(ok_rows(*target, all) == first);
    CHECK(ok_rows(*target, "SELECT count(*) FROM t") == "[[3]]");
    CHECK(ok_rows(*target, all) == first);
    // Another process changes the file: rows and schema.
    t.exec("INSERT INTO t VALUES (0, 'zero', NULL, 0); ALTER TABLE t ADD COLUMN e TEXT DEFAULT 'new'");
    auto r = target->run(all, never);
    REQUIRE(r.kind == QueryOutcome::Kind::ok);
    CHECK(r.result.columns_json == R"(["a","b","c","d","e"])");
    CHECK(r.result.rows_json ==
          R"([[0,"zero",null,0.0,"new"],[1,"one",{"blob_hex":"00ff"},1.5,"new"],[2,null,null,null,"new"]])");
    CHECK(ok_rows(*target, "SELECT count(*) FROM t") == "[[4]]");
    // A table it reads dropped: the error is SQLite's, and the next query runs.
    t.exec("CREATE TABLE u(x); INSERT INTO u VALUES (7)");
    CHECK(ok_rows(*target, "SELECT x FROM u") == "[[7]]");
    t.exec("DROP TABLE u");
    auto gone = target->run("SELECT x FROM u", never);
    CHECK(gone.kind == QueryOutcome::Kind::error);
    CHECK(gone.error.find("no such table: u") != std::string::npos);
    CHECK(ok_rows(*target, "SELECT count(*) FROM t") == "[[4]]");
}

TEST_CASE("the kept statements: the last few, by SQL text, short texts only", "[target][kept]") {
    sqlite::Db db(":memory:", SQLITE_OPEN_READWRITE);
    auto prepared = [&](const std::string& sql) {
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
        return sqlite::StatementCache::Stmt(s);
    };
    sqlite::StatementCache kept;
    CHECK(kept.take("SELECT 1") == nullptr);
    for (size_t i = 0; i <= sqlite::StatementCache::kMaxStatements; ++i) {
        const std::string sql = "SELECT " + std::to_string(i);
        kept.put(sql, prepared(sql));
    }
    CHECK(kept.size() == sqlite::StatementCache::kMaxStatements);
    CHECK(kept.take("SELECT 0") == nullptr);  // the least recently kept went
    auto one = kept.take("SELECT 1");
    REQUIRE(one != nullptr);
    CHECK(kept.take("SELECT 1") == nullptr);  // taken out while it runs
    REQUIRE(sqlite3_step(one.get()) == SQLITE_ROW);  // put back mid-run: reset, runs from the start
    kept.put("SELECT 1", std::move(one));
    auto again = kept.take("SELECT 1");
    REQUIRE(again != nullptr);
    REQUIRE(sqlite3_step(again.get()) == SQLITE_ROW);
    CHECK(sqlite3_column_int(again.get(), 0) == 1);
    const std::string longer = "SELECT '" + std::string(sqlite::StatementCache::kMaxSqlBytes, 'x') + "'";
    kept.put(longer, prepared(longer));
    CHECK(kept.take(longer) == nullptr);
}

TEST_CASE("a sort that spills past [query] temp_limit_mb fails quickly, naming the key", "[target][limits][temp]") {
    TargetDb t;
    t.cfg.temp_limit_mb = 8;
    t.cfg.timeout_ms = 10000;
    auto target = open_target(t.cfg);
    SECTION("the issue's endless sort") {
        auto t0 = std::chrono::steady_clock::now();
        auto r = target->run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                             "SELECT x FROM c ORDER BY randomblob(2000)", never);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
        INFO(r.error << " after " << ms << " ms");
        CHECK(r.kind == QueryOutcome::Kind::error);
        CHECK(r.error == "the query needs more than 8 MB of temporary space (temporary space limit: query.temp_limit_mb)");
        CHECK(ms < 3000);
    }
    SECTION("DISTINCT over more than fits in memory") {
        auto r = target->run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                             "SELECT count(*) FROM (SELECT DISTINCT x, randomblob(1000) FROM c)", never);
        INFO(r.error);
        CHECK(r.kind == QueryOutcome::Kind::error);
        CHECK(r.error.find("query.temp_limit_mb") != std::string::npos);
    }
    SECTION("a sort that spills but fits, and the next one too (the budget is per task)") {
        for (int i = 0; i < 2; ++i)
            CHECK(ok_rows(*target, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 3000) "
                                   "SELECT count(*) FROM (SELECT x FROM c ORDER BY randomblob(1000))") == "[[3000]]");
    }
}

TEST_CASE("an idle target gives its page cache back", "[target][memory]") {
    TargetDb t;
    t.exec("CREATE TABLE big(x TEXT);"
           "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < 20000) "
           "INSERT INTO big SELECT printf('%.200c', 'x') FROM c;");
    const int64_t before = sqlite3_memory_used();
    auto target = open_target(t.cfg);
    CHECK(ok_rows(*target, "SELECT count(*), sum(length(x)) FROM big") == "[[20000,4000000]]");
    target->release_memory();
    const int64_t kept = sqlite3_memory_used() - before;
    INFO("SQLite memory kept by an idle target: " << kept << " bytes");
    CHECK(kept < 256 * 1024);
}

// Not a test: what one task costs the target, for docs/performance.md ("The query target"):
// the connection kept from task to task (what the target does while busy) against a new
// connection per task (open, lock down, parse the schema).
//   SQLQ_BENCH_DB=var/demo.db build/tests/sqlq_unit_tests "[.bench]"
TEST_CASE("per-task cost of the target", "[.bench]") {
    TargetDb t;
    if (const char* db = std::getenv("SQLQ_BENCH_DB")) t.cfg.database = db;
    constexpr int kRuns = 1000;
    auto per_task = [&](auto&& task) {
        task();  // warm
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < kRuns; ++i) task();
        return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kRuns;
    };
    auto target = open_target(t.cfg);
    for (const char* sql : {"SELECT 1", "SELECT count(*) FROM sqlite_schema"}) {
        double kept = per_task([&] { target->run(sql, never); });
        double reopened = per_task([&] {
            target->release_memory();  // closes the connection (and trims the heap)
            target->run(sql, never);
        });
        double fresh = per_task([&] {
            sqlite::Db db(t.cfg.database, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
            sqlite::ReadOnlyPolicy policy(db);
            auto p = policy.prepare(sql);
            while (sqlite3_step(p.stmt.get()) == SQLITE_ROW) {
            }
        });
        WARN(t.cfg.database << ": " << sql << ": kept connection " << kept << " us per task; new connection "
                            << reopened << " us (with malloc_trim), " << fresh << " us (open, lock down, prepare, step)");
    }
}
