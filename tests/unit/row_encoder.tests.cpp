// The row encoder: the JSON a result is stored as, byte for byte. The expected texts are what
// the SQLite-only executor stored before the encoder was split out of it, so results stored
// before and after read the same; every target shares this encoder.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>

#include "sqlite/db.h"
#include "target/row_encoder.h"
#include "target/target.h"

using namespace sqlq;

TEST_CASE("rows encode as compact JSON arrays, byte for byte as before", "[target][encoder]") {
    RowEncoder e;
    e.column("n");
    e.column("say \"hi\"");
    e.column("é");

    SECTION("no rows") {
        auto r = std::move(e).finish();
        CHECK(r.columns_json == R"(["n","say \"hi\"","é"])");
        CHECK(r.rows_json == "[]");
    }
    SECTION("nulls, integers, doubles") {
        e.null();
        e.integer(0);
        e.integer(-1);
        CHECK(e.row_bytes() == int64_t(std::string("[null,0,-1]").size()));  // what the store keeps
        e.end_row();
        e.integer(std::numeric_limits<int64_t>::max());
        e.integer(std::numeric_limits<int64_t>::min());
        e.real(1.5);
        e.end_row();
        e.real(-2.0);
        e.real(0.1);
        e.real(1e300);
        e.end_row();
        e.real(3e-5);
        e.real(std::numeric_limits<double>::infinity());
        e.real(std::nan(""));
        e.end_row();
        CHECK(e.rows() == 4);
        auto r = std::move(e).finish();
        CHECK(r.rows_json == "[[null,0,-1],[9223372036854775807,-9223372036854775808,1.5],"
                             "[-2.0,0.1,1e+300],[3e-05,null,null]]");
    }
    SECTION("text: quotes, escapes, unicode, invalid UTF-8") {
        e.text("say \"hi\" \\ / ");
        e.text("\n\t\x01\x7f");
        e.text("é ü 日本 🎉");
        const int64_t first = e.row_bytes();
        e.end_row();
        e.text(std::string_view("\xff" "A", 2));  // Latin-1, not UTF-8: U+FFFD, the rest kept
        e.text("");
        e.null();
        e.end_row();
        auto r = std::move(e).finish();
        CHECK(r.rows_json == "[[\"say \\\"hi\\\" \\\\ / \",\"\\n\\t\\u0001\x7f\",\"é ü 日本 🎉\"],"
                             "[\"\xef\xbf\xbd" "A\",\"\",null]]");
        CHECK(first == int64_t(r.rows_json.find("],[")));  // the first row, escapes and all
    }
    SECTION("blobs: lower-case hex, marked") {
        const unsigned char bytes[] = {0x00, 0xff, 0x10, 0xab};
        e.blob(bytes, sizeof bytes);
        e.blob(nullptr, 0);  // an empty blob (SQLite hands over a null pointer for it)
        e.integer(7);
        const int64_t row = e.row_bytes();
        e.end_row();
        auto r = std::move(e).finish();
        CHECK(r.rows_json == R"([[{"blob_hex":"00ff10ab"},{"blob_hex":""},7]])");
        CHECK(row == int64_t(r.rows_json.size()) - 2);
    }
}

TEST_CASE("the SQLite target stores what the encoder makes of the same values", "[target][encoder]") {
    char tmpl[] = "/tmp/sqlq-encoder-XXXXXX";
    std::string dir = mkdtemp(tmpl);
    QueryConfig cfg;
    cfg.database = dir + "/t.db";
    { sqlite::Db(cfg.database, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE).exec("CREATE TABLE t(x)"); }
    auto target = open_target(cfg);
    auto r = target->run("SELECT NULL AS n, 0 AS \"say \"\"hi\"\"\", -1 AS \"é\", 9223372036854775807, "
                         "-9223372036854775808, 1.5, -2.0, 0.1, 1e300, 3e-5, 9e999, 'say \"hi\" \\ / ', "
                         "char(10, 9, 1, 127), 'é ü 日本 🎉', CAST(x'ff41' AS TEXT), '', x'00ff10ab', x''",
                         [] { return false; });
    std::filesystem::remove_all(dir);
    REQUIRE(r.kind == QueryOutcome::Kind::ok);
    CHECK(r.result.columns_json ==
          R"~(["n","say \"hi\"","é","9223372036854775807","-9223372036854775808","1.5","-2.0","0.1","1e300",)~"
          R"~("3e-5","9e999","'say \"hi\" \\ / '","char(10, 9, 1, 127)","'é ü 日本 🎉'","CAST(x'ff41' AS TEXT)",)~"
          R"~("''","x'00ff10ab'","x''"])~");
    CHECK(r.result.rows_json ==
          "[[null,0,-1,9223372036854775807,-9223372036854775808,1.5,-2.0,0.1,1e+300,3e-05,null,"
          "\"say \\\"hi\\\" \\\\ / \",\"\\n\\t\\u0001\x7f\",\"é ü 日本 🎉\",\"\xef\xbf\xbd" "A\",\"\","
          "{\"blob_hex\":\"00ff10ab\"},{\"blob_hex\":\"\"}]]");
    // What the store keeps, but for the invalid byte 0xff, counted as one and stored as U+FFFD (3).
    CHECK(r.bytes == int64_t(r.result.columns_json.size() + r.result.rows_json.size()) - 2);
}
