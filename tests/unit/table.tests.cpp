#include <catch2/catch.hpp>

#include "util/table.h"

using namespace sqlq;

TEST_CASE("csv records follow RFC 4180", "[csv]") {
    CHECK(csv_record({"a", "b"}) == "a,b\r\n");
    CHECK(csv_record({"x,y", "say \"hi\"", "two\nlines", ""}) == "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n");
}

TEST_CASE("tables align their columns", "[table]") {
    CHECK(format_table({"ID", "NAME"}, {{"1", "alice"}, {"22", "b"}}) == "ID  NAME\n1   alice\n22  b\n");
}

TEST_CASE("durations read naturally", "[table]") {
    CHECK(format_duration(850) == "850 ms");
    CHECK(format_duration(12300) == "12.3 s");
    CHECK(format_duration(245000) == "4 min 05 s");
}
