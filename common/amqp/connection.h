#pragma once
// One AMQP connection with one channel (channel 1), over rabbitmq-c. The connection owns the
// amqp_connection_state_t (and through it the socket); every broker reply goes through one
// translation (check_reply) into AmqpError, which says whether the channel or the whole
// connection is gone. No password ever reaches a message: URLs are redacted.
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <amqp.h>

#include "config/config.h"
#include "util/error.h"

namespace sqlq::amqp {

class AmqpError : public Error {
public:
    enum class Kind {
        connection,    // the connection is gone (network, broker restart, heartbeat): reconnect
        channel,       // the broker closed the channel; reconnecting is the simple recovery
        auth,          // login refused: retrying will not help
        precondition,  // e.g. the queue exists with other arguments: retrying will not help
        timeout,       // nothing arrived in time; the connection is still fine
        consumer_timeout,  // the broker closed the channel: a delivery stayed unacked longer than
                           // its consumer_timeout (PRECONDITION_FAILED, but reconnecting helps)
    };
    AmqpError(const std::string& what, Kind kind) : Error(what), kind_(kind) {}
    Kind kind() const noexcept { return kind_; }
    bool fatal() const noexcept { return kind_ == Kind::auth || kind_ == Kind::precondition; }

private:
    Kind kind_;
};

struct Delivery {
    uint64_t tag = 0;
    bool redelivered = false;
    std::string body;
    std::string dead_letter_reason;  // for messages read from the dead-letter queue
};

struct QueueInfo {
    uint32_t messages = 0;   // ready, not unacked
    uint32_t consumers = 0;
};

struct DestroyConnection {
    void operator()(amqp_connection_state_t c) const noexcept { amqp_destroy_connection(c); }
};

class Connection {
public:
    // Connects, logs in (heartbeat from the config) and opens channel 1. `name` shows in the
    // broker's connection list. With several nodes ([broker] url an array, a cluster) it tries
    // them in turn, from the one this process last reached, and keeps the first that answers; a
    // node whose connection was lost is tried last by the next Connection of this process, so a
    // client whose node died fails over to another at once. Throws AmqpError(connection) naming
    // every node when none answers (callers back off and try again), AmqpError(auth) at the
    // first node that refuses the login.
    // `frame_max`: the largest frame either side may send; rabbitmq-c keeps a buffer of that size
    // each way (4096, AMQP's least, for a connection that only publishes small messages).
    static constexpr int kFrameMax = 131072;
    Connection(const BrokerConfig& cfg, const std::string& name, int frame_max = kFrameMax);
    ~Connection() = default;
    Connection(Connection&&) = default;

    // Declares the dead-letter exchange and queue and the task queue, idempotently. A queue that
    // exists with other arguments is an AmqpError(precondition) naming both.
    void declare_topology();
    // Passive declare: the queue's ready messages and consumers.
    QueueInfo inspect(const std::string& queue);

    // Publishing with confirms: publish() returns the delivery tag the broker will confirm.
    void enable_confirms();
    uint64_t publish(const std::string& queue, const std::string& body);
    // Waits until every tag up to `last` is acked or nacked, or until timeout_ms passes;
    // returns the acked tags. Unconfirmed ones are simply not in the set.
    std::set<uint64_t> wait_confirms(uint64_t first, uint64_t last, int timeout_ms);

    // Consuming.
    void qos(int prefetch);
    void consume(const std::string& queue);
    // Waits up to timeout_ms for a delivery; nullopt on timeout. Throws AmqpError when the
    // channel or connection is gone.
    std::optional<Delivery> next(int timeout_ms);
    // Acks `tag`; with Multiple::yes, every delivery of this channel up to it as well (one frame).
    enum class Multiple : bool { no, yes };
    void ack(uint64_t tag, Multiple multiple = Multiple::no);
    // Whether a rejected message goes back on its queue (yes) or to the dead-letter queue (no).
    enum class Requeue : bool { no, yes };
    void reject(uint64_t tag, Requeue requeue);
    // Stops the consumer (basic.cancel); deliveries already sent stay unacked until close, and
    // can still be acked. Those the broker sent before its cancel-ok are read and queued by the
    // time this returns: next(0) takes them while frames_queued() says so.
    void cancel_consumer();
    bool consuming() const noexcept { return !consumer_tag_.empty(); }
    // Frames read off the socket and not yet taken (rabbitmq-c queues those that arrive while it
    // waits for a reply). A channel that consumes must not wait_confirms(): a delivery met there
    // would be dropped.
    bool frames_queued() const noexcept;
    // Reads one message without consuming (for the audit); nullopt when the queue is empty.
    std::optional<Delivery> get(const std::string& queue);

    // Sends a heartbeat when one is due, without blocking and without reading: for a
    // single-threaded worker busy in a long query. Cheap enough to call very often.
    void pump();

    // This node failed us without losing the connection (its confirms did not come): the next
    // Connection of this process starts at another node. Nothing happens with one node.
    void leave_node() noexcept;

    // Polite close (a broker round trip); the destructor only frees.
    void close() noexcept;

    bool open() const noexcept { return open_; }
    // The node this connection is on, "host:port[/vhost]" (no credentials), for messages.
    const std::string& where() const noexcept { return where_; }

private:
    void connect(const std::string& url, const std::string& name);
    void check(amqp_rpc_reply_t reply, const std::string& doing);
    [[noreturn]] void lost(const std::string& doing, int status);
    // The connection is gone (not just the channel): the next Connection starts at another node.
    void broken() noexcept;
    void handle_frame(const amqp_frame_t& frame, const std::string& doing);

    BrokerConfig cfg_;
    size_t node_ = 0;     // index in cfg_.urls
    std::string where_;   // describe_url(cfg_.urls[node_])
    std::unique_ptr<amqp_connection_state_t_, DestroyConnection> conn_;
    std::string consumer_tag_;
    bool open_ = false;
    std::set<uint64_t> acked_, nacked_;  // confirms that arrived while waiting for something else
    uint64_t next_publish_tag_ = 1;
    int frame_max_ = kFrameMax;
    int64_t last_pump_ms_ = 0;
};

// A broker URL's host:port/vhost without credentials, for messages; describe() lists every
// node of the config, separated by ", ".
std::string describe_url(const std::string& url);
std::string describe(const BrokerConfig& cfg);

}  // namespace sqlq::amqp
