// The PostgreSQL target's pure parts: the statement check, the values' text forms to JSON, and
// the URL as it may be shown. (The target against a real server: tests/postgres/.)
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "target/postgres/statement.h"
#include "target/postgres/values.h"

using namespace sqlq;
using nlohmann::json;

TEST_CASE("the first keyword of a statement skips comments, white space and parentheses", "[postgres][unit]") {
    CHECK(pg::first_keyword("select 1") == "SELECT");
    CHECK(pg::first_keyword("  \n\t(( SELECT 1))") == "SELECT");
    CHECK(pg::first_keyword("-- a comment\nWITH x AS (SELECT 1) SELECT * FROM x") == "WITH");
    CHECK(pg::first_keyword("/* outer /* nested */ still a comment */ delete from t") == "DELETE");
    CHECK(pg::first_keyword("/* unterminated") == "");
    CHECK(pg::first_keyword("") == "");
    CHECK(pg::first_keyword("-- only a comment") == "");
}

TEST_CASE("only queries may run on a PostgreSQL target", "[postgres][unit]") {
    for (const char* ok : {"SELECT 1", "with t as (select 1) select * from t", "VALUES (1)", "TABLE customers",
                           "SHOW search_path", "EXPLAIN SELECT 1", "(SELECT 1) UNION (SELECT 2)"})
        CHECK_FALSE(pg::refuse_statement(ok));
    for (const char* bad : {"INSERT INTO t VALUES (1)", "set role postgres", "DO $$ $$", "copy t to stdout",
                            "prepare p as select 1", "listen x", "notify x", "vacuum", "begin", "commit",
                            "discard all", "lock table t", "create temp table t (x int)", "select1"}) {
        INFO(bad);
        auto why = pg::refuse_statement(bad);
        REQUIRE(why);
        CHECK_THAT(*why, Catch::Contains("only queries run here"));
    }
    CHECK_THAT(*pg::refuse_statement("  "), Catch::Contains("holds no SQL statement"));
}

TEST_CASE("PostgreSQL arrays become JSON arrays of their element type", "[postgres][unit]") {
    const pg::TypeOid int4 = 23, text = 25, numeric = 1700, boolean = 16;
    CHECK(*pg::parse_array("{1,2,NULL}", int4) == json::parse("[1,2,null]"));
    CHECK(*pg::parse_array("{}", int4) == json::array());
    CHECK(*pg::parse_array("{{1,2},{3,4}}", int4) == json::parse("[[1,2],[3,4]]"));
    CHECK(*pg::parse_array("[0:1]={7,8}", int4) == json::parse("[7,8]"));
    CHECK(*pg::parse_array(R"({"a,b","NULL",NULL,"q\"uote","back\\slash",plain})", text) ==
          json::parse(R"(["a,b","NULL",null,"q\"uote","back\\slash","plain"])"));
    CHECK(*pg::parse_array("{1.50,NaN}", numeric) == json::parse(R"(["1.50","NaN"])"));
    CHECK(*pg::parse_array("{t,f}", boolean) == json::parse("[true,false]"));
    for (const char* bad : {"", "{", "{1,2", "{1}x", "1,2", "{\"open}"}) {
        INFO(bad);
        CHECK_FALSE(pg::parse_array(bad, int4));
    }
    // An array type the target does not know stays text; a known one that does not parse, too.
    CHECK(pg::value_json(1007, "{1,2}") == json::parse("[1,2]"));
    CHECK(pg::value_json(1007, "{1,2") == "{1,2");
    CHECK(pg::value_json(99999, "{1,2}") == "{1,2}");
}

TEST_CASE("PostgreSQL scalar values become JSON values", "[postgres][unit]") {
    CHECK(pg::value_json(20, "-9223372036854775808") == json(INT64_MIN));
    CHECK(pg::value_json(20, "99999999999999999999") == "99999999999999999999");  // out of range: kept exact
    CHECK(pg::value_json(701, "1e+300") == 1e300);
    CHECK(pg::value_json(701, "-Infinity") == "-Infinity");
    CHECK(pg::value_json(1700, "0.10") == "0.10");
    CHECK(pg::value_json(114, "{\"a\": 1}") == json::parse(R"({"a":1})"));
    CHECK(pg::value_json(114, "not json") == "not json");
    CHECK(pg::value_json(17, "\\xDEADbeef") == json::parse(R"({"blob_hex":"deadbeef"})"));
    CHECK(pg::value_json(17, "\\xabc") == "\\xabc");
    CHECK(pg::value_json(1114, "2025-01-31 00:00:00") == "2025-01-31T00:00:00");
    CHECK(pg::value_json(1184, "2025-01-31 00:00:00.5+00") == "2025-01-31T00:00:00.5+00:00");
    CHECK(pg::value_json(1184, "1850-01-01 00:00:00+00:53:28") == "1850-01-01T00:00:00+00:53:28");
    CHECK(pg::value_json(1184, "-infinity") == "-infinity");
    CHECK(pg::value_json(1184, "0044-03-15 12:00:00+00 BC") == "0044-03-15T12:00:00+00 BC");
    CHECK(pg::value_json(1266, "23:59:59-05") == "23:59:59-05:00");
    CHECK(pg::value_json(1083, "23:59:59") == "23:59:59");
}

TEST_CASE("a URL is shown without its password, also when libpq takes it as a parameter", "[postgres][unit]") {
    CHECK(redact_url("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db");
    CHECK(redact_url("postgresql://u@h/db?password=s3cret&sslmode=require") ==
          "postgresql://u@h/db?password=***&sslmode=require");
    CHECK(redact_url("postgresql://u@h/db?sslmode=require&password=s3cret") ==
          "postgresql://u@h/db?sslmode=require&password=***");
    CHECK(redact_url("postgresql://u:a@h/db?password=b") == "postgresql://u:***@h/db?password=***");
    CHECK(redact_url("postgresql://h/db") == "postgresql://h/db");
}
