// The control protocol (common/control/protocol.h), both sides of it, on strings only.
#include <catch2/catch.hpp>

#include <algorithm>
#include <limits>

#include "control/protocol.h"
#include "util/error.h"

using namespace sqlq::control;
using nlohmann::json;

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

TEST_CASE("the typed requests format to the documented lines", "[supervisor][control]") {
    CHECK(format_request(Request::status()) == "{\"cmd\":\"status\"}\n");
    CHECK(format_request(Request::stop()) == "{\"cmd\":\"stop\"}\n");
    CHECK(format_request(Request::reload()) == "{\"cmd\":\"reload\"}\n");
    CHECK(format_request(Request::restart()) == "{\"cmd\":\"restart\"}\n");
    CHECK(format_request(Request::restart(3)) == "{\"cmd\":\"restart\",\"slot\":3}\n");
    CHECK(format_request(Request::cancel(42)) == "{\"cmd\":\"cancel\",\"task\":42}\n");
}

TEST_CASE("every typed request survives a round trip through its line", "[supervisor][control]") {
    for (const Request& r : {Request::status(), Request::stop(), Request::reload(), Request::restart(),
                             Request::restart(1), Request::restart(std::numeric_limits<int>::max()),
                             Request::cancel(1), Request::cancel(std::numeric_limits<int64_t>::max())}) {
        std::string line = format_request(r);
        INFO(line);
        CHECK(std::count(line.begin(), line.end(), '\n') == 1);
        Request back = ok(line);
        CHECK(back.cmd == r.cmd);
        CHECK(back.slot == r.slot);
        CHECK(back.task == r.task);
        CHECK(format_request(back) == line);
    }
}

TEST_CASE("a command is refused the fields of another command", "[supervisor][control]") {
    CHECK(bad(R"({"cmd":"restart","task":4})") == "unexpected field \"task\" for \"restart\"");
    CHECK(bad(R"({"cmd":"cancel","task":4,"slot":1})") == "unexpected field \"slot\" for \"cancel\"");
    CHECK(bad(R"({"cmd":"status","slot":1})") == "unexpected field \"slot\" for \"status\"");
    CHECK(bad(R"({"cmd":"reload","task":1})") == "unexpected field \"task\" for \"reload\"");
}

TEST_CASE("out-of-range numbers in a request are refused, not wrapped", "[supervisor][control]") {
    CHECK(bad(R"({"cmd":"restart","slot":2147483648})") == "\"slot\" must be 1 or more");
    CHECK(bad(R"({"cmd":"restart","slot":-3})") == "\"slot\" must be 1 or more");
    CHECK(bad(R"({"cmd":"restart","slot":18446744073709551615})") == "\"slot\" must be 1 or more");
    CHECK(bad(R"({"cmd":"cancel","task":0})") == "\"task\" must be 1 or more");
    CHECK(bad(R"({"cmd":"cancel","task":18446744073709551615})") == "\"task\" must be 1 or more");
    CHECK(bad(R"({"cmd":"cancel","task":null})") == "\"task\" must be an integer");
    CHECK(bad(R"({"cmd":"cancel","task":4.0})") == "\"task\" must be an integer");
}

TEST_CASE("a request of exactly the longest allowed length is read", "[supervisor][control]") {
    const std::string head = R"({"cmd":"cancel","task":7,"x":")";
    std::string at_limit = head + std::string(kMaxRequestBytes - head.size() - 2, 'a') + "\"}";
    REQUIRE(at_limit.size() == kMaxRequestBytes);
    // Within the limit it gets as far as the fields; one byte more and it is refused for its size.
    CHECK(bad(at_limit + "\n") == "unexpected field \"x\" for \"cancel\"");
    CHECK(bad(" " + at_limit).find("longer than") != std::string::npos);
}

TEST_CASE("the reply builders and the reply reader agree", "[supervisor][control]") {
    SECTION("ok") {
        auto r = parse_reply(ok_reply());
        REQUIRE(r);
        CHECK(r->ok);
        CHECK(r->error.empty());
    }
    SECTION("reload") {
        auto r = parse_reply(reload_reply(8));
        REQUIRE(r);
        CHECK(r->ok);
        CHECK(r->target() == 8);
    }
    SECTION("cancel") {
        auto r = parse_reply(cancel_reply(0));
        REQUIRE(r);
        CHECK(r->slot() == 0);
        CHECK(parse_reply(cancel_reply(3))->slot() == 3);
    }
    SECTION("status") {
        auto r = parse_reply(status_reply(json{{"pid", 7}, {"phase", "running"}}));
        REQUIRE(r);
        CHECK(r->ok);
        CHECK(r->status() == json{{"pid", 7}, {"phase", "running"}});
    }
    SECTION("error") {
        auto r = parse_reply(error_reply("no slot 9"));
        REQUIRE(r);
        CHECK_FALSE(r->ok);
        CHECK(r->error == "no slot 9");
        CHECK_THROWS_AS(r->target(), sqlq::Error);
    }
    SECTION("every reply is one line") {
        for (const std::string& line : {ok_reply(), reload_reply(1), cancel_reply(1), status_reply(json::object()),
                                        error_reply("a\nb")}) {
            INFO(line);
            CHECK(line.back() == '\n');
            CHECK(std::count(line.begin(), line.end(), '\n') == 1);
        }
    }
}

TEST_CASE("a reply that is not a control reply is refused", "[supervisor][control]") {
    CHECK_FALSE(parse_reply(""));
    CHECK_FALSE(parse_reply("garbage"));
    CHECK_FALSE(parse_reply("[true]"));
    CHECK_FALSE(parse_reply(R"({"target":3})"));
    CHECK_FALSE(parse_reply(R"({"ok":"yes"})"));
    auto no_why = parse_reply(R"({"ok":false})");
    REQUIRE(no_why);
    CHECK(no_why->error == "?");
}
