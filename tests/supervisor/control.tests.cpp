#include <catch2/catch.hpp>

#include "supervisor/control.h"

using namespace sqlq::supervisor;

namespace {
Request ok(const std::string& line) {
    auto r = parse_request(line);
    INFO(line);
    REQUIRE(std::holds_alternative<Request>(r));
    return std::get<Request>(r);
}

std::string bad(const std::string& line) {
    auto r = parse_request(line);
    INFO(line);
    REQUIRE(std::holds_alternative<BadRequest>(r));
    return std::get<BadRequest>(r).why;
}
}  // namespace

TEST_CASE("the control parser reads every documented request", "[supervisor][control]") {
    SECTION("status, stop and reload take no arguments") {
        CHECK(ok(R"({"cmd":"status"})").cmd == Command::status);
        CHECK(ok(R"({"cmd":"stop"})" "\n").cmd == Command::stop);
        CHECK(ok(R"({"cmd":"reload"})" "\r\n").cmd == Command::reload);
    }
    SECTION("restart takes an optional slot") {
        CHECK_FALSE(ok(R"({"cmd":"restart"})").slot);
        CHECK_FALSE(ok(R"({"cmd":"restart","slot":null})").slot);
        CHECK(ok(R"({"cmd":"restart","slot":3})").slot == 3);
    }
    SECTION("cancel takes a task id") {
        auto r = ok(R"({"task": 42, "cmd": "cancel"})");
        CHECK(r.cmd == Command::cancel);
        CHECK(r.task == 42);
    }
}

TEST_CASE("the control parser refuses what is not a request, and says why", "[supervisor][control]") {
    CHECK(bad("") == "not a JSON object");
    CHECK(bad("status") == "not a JSON object");
    CHECK(bad("[1,2]") == "not a JSON object");
    CHECK(bad(R"({"cmd":"status")") == "not a JSON object");
    CHECK(bad(R"({})") == "missing \"cmd\"");
    CHECK(bad(R"({"cmd":7})") == "missing \"cmd\"");
    CHECK(bad(R"({"cmd":"explode"})") == "unknown command \"explode\"");
    CHECK(bad(R"({"cmd":"stop","now":true})") == "unexpected field \"now\" for \"stop\"");
    CHECK(bad(R"({"cmd":"restart","slot":"2"})") == "\"slot\" must be an integer");
    CHECK(bad(R"({"cmd":"restart","slot":0})") == "\"slot\" must be 1 or more");
    CHECK(bad(R"({"cmd":"restart","slot":1.5})") == "\"slot\" must be an integer");
    CHECK(bad(R"({"cmd":"cancel"})") == "\"cancel\" needs \"task\"");
    CHECK(bad(R"({"cmd":"cancel","task":-1})") == "\"task\" must be 1 or more");
    CHECK(bad(R"({"cmd":"cancel","task":"12"})") == "\"task\" must be an integer");
    CHECK(bad(R"({"cmd":"status","x":")" + std::string(kMaxRequestBytes, 'a') + "\"}").find("longer than") !=
          std::string::npos);
}

TEST_CASE("a formatted request parses back to itself", "[supervisor][control]") {
    Request r;
    SECTION("restart of one slot") {
        r.cmd = Command::restart;
        r.slot = 5;
    }
    SECTION("restart of all") { r.cmd = Command::restart; }
    SECTION("cancel") {
        r.cmd = Command::cancel;
        r.task = 1234567890123;
    }
    SECTION("status") { r.cmd = Command::status; }
    std::string line = format_request(r);
    CHECK(line.back() == '\n');
    Request back = ok(line);
    CHECK(back.cmd == r.cmd);
    CHECK(back.slot == r.slot);
    CHECK(back.task == r.task);
}

TEST_CASE("an error reply is one JSON line with ok false", "[supervisor][control]") {
    auto j = nlohmann::json::parse(error_reply("no slot 9"));
    CHECK(j["ok"] == false);
    CHECK(j["error"] == "no slot 9");
}
