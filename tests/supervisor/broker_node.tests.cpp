// What start makes of the broker node's answer about its consumer_timeout (supervisor/broker_node.h).
// Asking a real node is in tests/integration/edges.tests.cpp.
#include <catch2/catch.hpp>

#include "supervisor/broker_node.h"

using namespace sqlq::supervisor;
using Kind = ConsumerTimeout::Kind;

TEST_CASE("the node's consumer_timeout is read from what rabbitmqctl eval printed", "[supervisor][consumer-timeout]") {
    auto t = parse_consumer_timeout("{ok,1800000}\n");
    CHECK(t.kind == Kind::set);
    CHECK(t.ms == 1800000);
    CHECK(parse_consumer_timeout(" {ok, 3600000} ").ms == 3600000);
    SECTION("no value, or one that means none, is no timeout") {
        for (const char* none : {"undefined\n", "{ok,false}", "{ok,undefined}\n", "{ok,infinity}"})
            CHECK(parse_consumer_timeout(none).kind == Kind::disabled);
    }
    SECTION("anything else is unknown, and says what it was") {
        for (const char* odd : {"", "{ok,-5}", "{ok,1.5}", "{ok,99999999999999999999}", "{error,nodedown}"}) {
            INFO(odd);
            auto u = parse_consumer_timeout(odd);
            CHECK(u.kind == Kind::unknown);
            CHECK(u.why.find("unexpected answer") == 0);
        }
        CHECK(parse_consumer_timeout("Error: unable to perform an operation on node 'x@y'\n").why ==
              "unexpected answer \"Error: unable to perform an operation on node 'x@y'\"");
    }
}
