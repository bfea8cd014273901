#include <catch2/catch.hpp>

#include "task/message.h"
#include "task/report.h"

using namespace sqlq;

namespace {
std::string why(const std::string& body) {
    auto r = decode_message(body);
    auto* bad = std::get_if<BadMessage>(&r);
    return bad ? bad->why : "";
}
}  // namespace

TEST_CASE("a message round-trips", "[message]") {
    auto r = decode_message(encode_message(42));
    REQUIRE(std::holds_alternative<int64_t>(r));
    CHECK(std::get<int64_t>(r) == 42);
    CHECK(encode_message(7) == R"({"v":1,"task_id":7})");
}

TEST_CASE("malformed messages are refused with a reason", "[message]") {
    CHECK(why("") == "not JSON");
    CHECK(why("\xff\xfe garbage") == "not JSON");
    CHECK(why("[1,2]") == "not a JSON object");
    CHECK(why(R"({"task_id":1})") == "no \"v\" (message version)");
    CHECK(why(R"({"v":"1","task_id":1})") == "\"v\" is not an integer");
    CHECK(why(R"({"v":2,"task_id":1})") == "unknown message version 2");
    CHECK(why(R"({"v":1})") == "no \"task_id\"");
    CHECK(why(R"({"v":1,"task_id":"7"})") == "\"task_id\" is not an integer");
    CHECK(why(R"({"v":1,"task_id":1.5})") == "\"task_id\" is not an integer");
    CHECK(why(R"({"v":1,"task_id":0})") == "\"task_id\" must be positive");
    CHECK(why(R"({"v":1,"task_id":18446744073709551615})") == "\"task_id\" is out of range");
    CHECK(why(std::string(5000, ' ')).find("over the limit") != std::string::npos);
}

TEST_CASE("worker reports round-trip and garbage is refused", "[report]") {
    auto busy = parse_report(format_report({Report::busy, 12}));
    REQUIRE(busy);
    CHECK(busy->what == Report::busy);
    CHECK(busy->task_id == 12);
    CHECK(parse_report("ready\n")->what == Report::ready);
    CHECK_FALSE(parse_report("busy x"));
    CHECK_FALSE(parse_report("busy -1"));
    CHECK_FALSE(parse_report("dancing"));
}
