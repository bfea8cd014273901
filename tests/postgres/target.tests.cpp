// The PostgreSQL query target against the fixture's real server (no broker, no worker): what it
// refuses, what it returns, and that every stop leaves no statement running on the server.
#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <thread>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "support/postgres.h"
#include "target/target.h"
#include "util/clock.h"

using namespace sqlq;
using namespace sqlq::test;
using nlohmann::json;

namespace {

QueryConfig pg_config(const std::string& url = postgres_url()) {
    QueryConfig q;
    q.database = url;
    q.timeout_ms = 20000;
    return q;
}

const PollFn no_poll = [] { return false; };

// This process's connection, as the server shows it.
std::string my_app() { return "sqlq-worker " + std::to_string(::getpid()); }

json rows_of(const QueryOutcome& q) { return json::parse(q.result.rows_json); }
json columns_of(const QueryOutcome& q) { return json::parse(q.result.columns_json); }

// Polls `pred` every 5 ms for up to `ms`.
template <class F>
bool within(int ms, F pred) {
    const int64_t until = mono_ms() + ms;
    while (mono_ms() < until) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return pred();
}

}  // namespace

TEST_CASE("a PostgreSQL target runs a query and returns its columns and rows", "[postgres][target]") {
    auto t = open_target(pg_config());
    auto q = t->run("SELECT country, count(*) AS n FROM customers GROUP BY country ORDER BY country", no_poll);
    REQUIRE(q.kind == QueryOutcome::Kind::ok);
    CHECK(columns_of(q) == json::parse(R"(["country","n"])"));
    CHECK(rows_of(q) == json::parse(R"([["BR",200],["DE",200],["FR",200],["JP",200],["US",200]])"));
    CHECK(q.rows == 5);
    // A query with no rows still names its columns.
    q = t->run("SELECT id, name FROM customers WHERE id < 0", no_poll);
    REQUIRE(q.kind == QueryOutcome::Kind::ok);
    CHECK(columns_of(q) == json::parse(R"(["id","name"])"));
    CHECK(rows_of(q) == json::array());
    // The target describes itself without the password.
    CHECK(t->describe().find("sqlq_reader:***@") != std::string::npos);
}

TEST_CASE("a PostgreSQL target refuses every write, a second statement and session changes", "[postgres][target]") {
    auto t = open_target(pg_config());
    const std::vector<std::pair<std::string, std::string>> refused = {
        {"INSERT INTO customers VALUES (5000, 'x', 'DE')", "only queries run here"},
        {"  /* sneaky */ -- comment\n update customers SET name = 'x'", "not UPDATE"},
        {"DELETE FROM orders", "not DELETE"},
        {"CREATE TABLE evil (x int)", "not CREATE"},
        {"CREATE TEMP TABLE evil (x int)", "not CREATE"},
        {"DROP TABLE orders", "not DROP"},
        {"COPY customers FROM STDIN", "not COPY"},
        {"COPY (SELECT 1) TO '/tmp/sqlq-evil'", "not COPY"},
        {"SET ROLE sqlq_super", "not SET"},
        {"RESET ALL", "not RESET"},
        {"DO $$ BEGIN CREATE TABLE evil (x int); END $$", "not DO"},
        {"PREPARE p AS SELECT 1", "not PREPARE"},
        {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "not DECLARE"},
        {"LISTEN evil", "not LISTEN"},
        {"CALL evil()", "not CALL"},
        {"BEGIN", "not BEGIN"},
        {"", "holds no SQL statement"},
        {"SELECT 1; SELECT pg_sleep(100)", "one statement per task"},
        {"SELECT 1; DELETE FROM orders", "one statement per task"},
        {"SELECT nextval('demo_seq')", "denied"},  // the role may not; and the transaction would not (below)
        {"WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT count(*) FROM d", "read-only"},
        {"SELECT set_config('transaction_read_only', 'off', false)", "read-write mode must be set before any query"},
        {"EXPLAIN ANALYZE DELETE FROM orders", "read-only"},
        {"SELECT * INTO evil FROM customers", "read-only"},
    };
    for (const auto& [sql, why] : refused) {
        INFO(sql);
        auto q = t->run(sql, no_poll);
        CHECK(q.kind == QueryOutcome::Kind::error);
        CHECK_THAT(q.error, Catch::Contains(why));
    }
    // Nothing changed, and the connection still works.
    PgAdmin admin;
    CHECK(admin.count("SELECT count(*) FROM customers") == 1000);
    CHECK(admin.count("SELECT count(*) FROM orders") == 200000);
    CHECK(admin.count("SELECT count(*) FROM pg_class WHERE relname = 'evil'") == 0);
    CHECK(admin.query("SELECT is_called FROM demo_seq").at(0).at(0) == "f");
    auto q = t->run("SELECT 1 AS one", no_poll);
    REQUIRE(q.kind == QueryOutcome::Kind::ok);
    CHECK(rows_of(q) == json::parse("[[1]]"));
}

TEST_CASE("nothing of a task's session state reaches the next task", "[postgres][target]") {
    auto t = open_target(pg_config());
    PgAdmin admin;
    // A session-level setting, an advisory lock (session-scoped: a rollback keeps it).
    REQUIRE(t->run("SELECT set_config('search_path', 'evil', false), pg_advisory_lock(4242)", no_poll).kind ==
            QueryOutcome::Kind::ok);
    auto q = t->run("SHOW search_path", no_poll);
    REQUIRE(q.kind == QueryOutcome::Kind::ok);
    CHECK(rows_of(q) == json::parse(R"([["\"$user\", public"]])"));
    CHECK(admin.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0);
    // Statement timeout and read-only mode are the task's, not a leftover's.
    q = t->run("SELECT current_setting('transaction_read_only'), current_setting('statement_timeout')", no_poll);
    REQUIRE(q.kind == QueryOutcome::Kind::ok);
    CHECK(rows_of(q) == json::parse(R"([["on","20s"]])"));
}

TEST_CASE("a PostgreSQL target refuses a superuser or a role that bypasses row security, unless allowed",
          "[postgres][target]") {
    try {
        open_target(pg_config(postgres_url_as("sqlq_super")));
        FAIL("a superuser was accepted");
    } catch (const TargetError& e) {
        CHECK_THAT(e.what(), Catch::Contains("role sqlq_super") && Catch::Contains("is a superuser") &&
                                 Catch::Contains("allow_superuser"));
        CHECK(e.exit_code() == kExitUsage);
        CHECK_THAT(e.what(), !Catch::Contains("test-pw-super"));
    }
    try {
        open_target(pg_config(postgres_url_as("sqlq_bypass")));
        FAIL("a BYPASSRLS role was accepted");
    } catch (const TargetError& e) {
        CHECK_THAT(e.what(), Catch::Contains("may bypass row-level security"));
    }
    auto cfg = pg_config(postgres_url_as("sqlq_super"));
    cfg.allow_superuser = true;
    auto t = open_target(cfg);
    CHECK(t->run("SELECT 1", no_poll).kind == QueryOutcome::Kind::ok);
    // Even a superuser's task runs in a read-only transaction.
    for (const char* sql : {"SELECT nextval('demo_seq')", "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d",
                            "SELECT * INTO evil FROM customers", "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false), nextval('demo_seq')"}) {
        INFO(sql);
        auto q = t->run(sql, no_poll);
        CHECK(q.kind == QueryOutcome::Kind::error);
        CHECK_THAT(q.error, Catch::Contains("read-only"));
    }
    PgAdmin admin;
    CHECK(admin.count("SELECT count(*) FROM orders") == 200000);
    CHECK(admin.query("SELECT is_called FROM demo_seq").at(0).at(0) == "f");
}

TEST_CASE("a PostgreSQL target never shows the password", "[postgres][target]") {
    const std::string port = std::to_string(postgres_port());
    SECTION("a wrong password") {
        auto t = open_target(pg_config("postgresql://sqlq_reader:wrong-pw-1234@127.0.0.1:" + port + "/demo"));
        std::string why = t->ready(no_poll);
        CHECK_THAT(why, Catch::Contains("password authentication failed") && Catch::Contains("sqlq_reader:***@"));
        CHECK_THAT(why, !Catch::Contains("wrong-pw-1234"));
        auto q = t->run("SELECT 1", no_poll);
        CHECK(q.kind == QueryOutcome::Kind::error);
        CHECK_THAT(q.error, !Catch::Contains("wrong-pw-1234"));
    }
    SECTION("a password as a URL parameter") {
        auto t = open_target(pg_config("postgresql://sqlq_reader@127.0.0.1:" + port + "/demo?password=wrong-pw-5678"));
        CHECK_THAT(t->describe(), Catch::Contains("password=***") && !Catch::Contains("wrong-pw-5678"));
        CHECK_THAT(t->ready(no_poll), !Catch::Contains("wrong-pw-5678"));
    }
    SECTION("a URL libpq cannot read") {
        try {
            open_target(pg_config("postgresql://sqlq_reader:bad-pw-9@127.0.0.1/demo?nosuchparam=1"));
            FAIL("accepted");
        } catch (const TargetError& e) {
            CHECK(e.exit_code() == kExitUsage);
            CHECK_THAT(e.what(), Catch::Contains("[query] database") && Catch::Contains("nosuchparam") &&
                                     !Catch::Contains("bad-pw-9"));
        }
    }
    SECTION("a server that does not answer") {
        auto t = open_target(pg_config("postgresql://sqlq_reader:secret-77@127.0.0.1:1/demo"));
        std::string why = t->ready(no_poll);
        CHECK_THAT(why, Catch::Contains("cannot connect to postgresql://sqlq_reader:***@127.0.0.1:1/demo"));
        CHECK_THAT(why, !Catch::Contains("secret-77"));
    }
}

TEST_CASE("the caps of a PostgreSQL query stop it on the server", "[postgres][target]") {
    PgAdmin admin;
    auto cfg = pg_config();
    SECTION("max_rows") {
        cfg.max_rows = 10;
        auto t = open_target(cfg);
        // Streamed (a nested loop over 40 billion rows): the cap stops it, not the end of the rows.
        auto q = t->run("SELECT a.id FROM orders a, orders b", no_poll);
        CHECK(q.kind == QueryOutcome::Kind::error);
        CHECK_THAT(q.error, Catch::Contains("more than 10 rows (query.max_rows)"));
    }
    SECTION("max_bytes") {
        cfg.max_bytes = 100000;
        auto t = open_target(cfg);
        auto q = t->run("SELECT repeat('x', 1000) FROM orders a, orders b", no_poll);
        CHECK(q.kind == QueryOutcome::Kind::error);
        CHECK_THAT(q.error, Catch::Contains("larger than 100000 bytes (query.max_bytes)"));
        CHECK(q.bytes <= 100000 + 1100);
    }
    SECTION("timeout_ms") {
        cfg.timeout_ms = 300;
        auto t = open_target(cfg);
        const int64_t t0 = mono_ms();
        auto q = t->run("SELECT pg_sleep(30)", no_poll);
        const int64_t took = mono_ms() - t0;
        CHECK(q.kind == QueryOutcome::Kind::timeout);
        CHECK_THAT(q.error, Catch::Contains("longer than 300 ms (query.timeout_ms)"));
        CHECK(took < 5000);  // sanity: not the 30 s of the query
    }
    // Whatever stopped it, the server runs nothing for us now (the target waited for it).
    CHECK(admin.active_backends(my_app()) == 0);
}

TEST_CASE("a cancelled PostgreSQL query is stopped on the server before run() returns", "[postgres][target]") {
    PgAdmin admin;
    auto t = open_target(pg_config());
    auto running = std::async(std::launch::async, [&] { return t->run("SELECT pg_sleep(60)", no_poll); });
    REQUIRE(within(10000, [&] { return admin.active_with("pg_sleep(60)") == 1; }));
    const int64_t t0 = mono_ms();
    t->cancel();
    auto q = running.get();
    const int64_t took = mono_ms() - t0;
    CHECK(q.kind == QueryOutcome::Kind::stopped);
    CHECK(admin.active_with("pg_sleep(60)") == 0);
    std::printf("postgres target: cancel → statement gone on the server in %lld ms\n", (long long)took);
    CHECK(took < 5000);  // sanity
    // And the connection serves the next task.
    CHECK(t->run("SELECT 1", no_poll).kind == QueryOutcome::Kind::ok);
}

TEST_CASE("a PostgreSQL target connects again when its connection was closed between tasks", "[postgres][target]") {
    PgAdmin admin;
    auto t = open_target(pg_config());
    REQUIRE(t->run("SELECT 1", no_poll).kind == QueryOutcome::Kind::ok);
    REQUIRE(admin.count("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '" +
                        my_app() + "'") == 1);
    REQUIRE(within(5000, [&] { return admin.backends(my_app()) == 0; }));
    auto q = t->run("SELECT 2 AS two", no_poll);
    REQUIRE(q.kind == QueryOutcome::Kind::ok);
    CHECK(rows_of(q) == json::parse("[[2]]"));
}

TEST_CASE("PostgreSQL values keep their meaning in the result's JSON", "[postgres][target]") {
    auto t = open_target(pg_config());
    auto q = t->run(R"(SELECT 1::smallint, 2147483647::int, 9223372036854775807::bigint,
        123456789012345678901234567890.123456789::numeric, 'NaN'::numeric, 1.5::real, 0.1::float8,
        'Infinity'::float8, true, false, NULL::int, 'héllo ☃ "q" \ <b>'::text, 'x'::char(3), 'v'::varchar,
        '2025-01-31 12:34:56.789'::timestamp, '2025-01-31 12:34:56+02'::timestamptz, '2025-01-31'::date,
        '12:34:56'::time, '12:34:56+02'::timetz, '1 year 2 mons 3 days 04:05:06'::interval,
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '{"a": [1, 2.5, null], "b": "x"}'::json,
        '{"b": 1, "a": true}'::jsonb, ARRAY[1, 2, NULL], ARRAY[['a', 'b,c'], ['"d"', NULL]],
        ARRAY[1.5, 2]::numeric[], '\x00ff41'::bytea, '{}'::int[], 'infinity'::timestamptz)",
                    no_poll);
    REQUIRE(q.kind == QueryOutcome::Kind::ok);
    json r = rows_of(q).at(0);
    CHECK(r[0] == 1);
    CHECK(r[1] == 2147483647);
    CHECK(r[2] == json::parse("9223372036854775807"));
    CHECK(r[3] == "123456789012345678901234567890.123456789");  // numeric: exact, as a string
    CHECK(r[4] == "NaN");
    CHECK(r[5] == 1.5);
    CHECK(r[6] == 0.1);
    CHECK(r[7] == "Infinity");
    CHECK(r[8] == true);
    CHECK(r[9] == false);
    CHECK(r[10].is_null());
    CHECK(r[11] == "héllo ☃ \"q\" \\ <b>");
    CHECK(r[12] == "x  ");
    CHECK(r[13] == "v");
    CHECK(r[14] == "2025-01-31T12:34:56.789");
    CHECK(r[15] == "2025-01-31T10:34:56+00:00");
    CHECK(r[16] == "2025-01-31");
    CHECK(r[17] == "12:34:56");
    CHECK(r[18] == "12:34:56+02:00");
    CHECK(r[19] == "P1Y2M3DT4H5M6S");
    CHECK(r[20] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    CHECK(r[21] == json::parse(R"({"a": [1, 2.5, null], "b": "x"})"));
    CHECK(r[22] == json::parse(R"({"a": true, "b": 1})"));
    CHECK(r[23] == json::parse("[1, 2, null]"));
    CHECK(r[24] == json::parse(R"([["a", "b,c"], ["\"d\"", null]])"));
    CHECK(r[25] == json::parse(R"(["1.5", "2"])"));
    CHECK(r[26] == json::parse(R"({"blob_hex": "00ff41"})"));
    CHECK(r[27] == json::array());
    CHECK(r[28] == "infinity");
}
