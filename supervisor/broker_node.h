#pragma once
// What `sqlq-supervisor start` learns from the RabbitMQ node itself ([broker] node): its
// consumer_timeout, which no AMQP frame carries. Asked through `rabbitmqctl -n NODE eval`, the one
// way that needs no plugin; a node that cannot be asked is a reason, never a failed start.
#include <cstdint>
#include <string>

namespace sqlq::supervisor {

struct ConsumerTimeout {
    enum class Kind { set, disabled, unknown };
    Kind kind = Kind::unknown;
    int64_t ms = 0;   // set: the node's value
    std::string why;  // unknown: why it could not be read
};

// Reads what `rabbitmqctl eval 'application:get_env(rabbit, consumer_timeout).'` printed:
// "{ok,1800000}" is set; "undefined" (no value: no timeout) and "{ok,false}", "{ok,undefined}",
// "{ok,infinity}" are disabled; anything else is unknown, with the text as the reason.
ConsumerTimeout parse_consumer_timeout(const std::string& printed);

// Asks `node` (rabbitmqctl, whose process group is killed after timeout_ms).
ConsumerTimeout read_consumer_timeout(const std::string& node, int64_t timeout_ms);

}  // namespace sqlq::supervisor
