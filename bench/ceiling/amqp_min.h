#pragma once
// The least code that talks to RabbitMQ through rabbitmq-c: what the broker itself allows on
// this machine, with nothing of sqlq in the way. Only the bench tools use it; sqlq's own
// connection is common/amqp/connection.*.
#include <cstdint>
#include <memory>
#include <string>

#include <amqp.h>

namespace bench {

struct DestroyConnection {
    void operator()(amqp_connection_state_t c) const noexcept { amqp_destroy_connection(c); }
};

enum class Confirms { off, on };

class Conn {
public:
    // Connects to 127.0.0.1:port as guest and opens channel 1. Throws std::runtime_error.
    Conn(const std::string& host, int port);
    amqp_connection_state_t get() const noexcept { return c_.get(); }
    // Throws std::runtime_error("<doing>: <reason>") unless the reply is normal.
    void check(amqp_rpc_reply_t r, const std::string& doing) const;
    void check_status(int status, const std::string& doing) const;

    // A durable queue of type "classic" or "quorum".
    void declare(const std::string& queue, const std::string& type);
    // sqlq's task queue, declared with the same arguments as sqlq's (common/amqp/connection.cpp),
    // so that it may already exist: a durable quorum queue dead-lettering to the durable fanout
    // exchange <queue>.dlx after delivery_limit redeliveries.
    void declare_task_queue(const std::string& queue, int delivery_limit);
    // Passive declare: ready messages and consumers.
    void inspect(const std::string& queue, uint32_t& messages, uint32_t& consumers);
    void purge(const std::string& queue);
    void remove(const std::string& queue);

    void qos(int prefetch);
    void consume(const std::string& queue);
    void select_confirms();
    // A persistent message, like the ones sqlq publishes.
    void publish(const std::string& queue, const std::string& body);
    void ack(uint64_t tag);
    // Waits until the broker has confirmed every publish up to `tag` (basic.ack, multiple or not).
    void wait_confirmed(uint64_t tag);

    void close() noexcept;  // polite close; the destructor only frees

private:
    std::unique_ptr<amqp_connection_state_t_, DestroyConnection> c_;
    uint64_t confirmed_ = 0;
};

int64_t now_ns();

}  // namespace bench
