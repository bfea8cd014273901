#include "amqp_min.h"

#include <ctime>
#include <stdexcept>
#include <vector>

#include <amqp_tcp_socket.h>

namespace bench {

namespace {
constexpr amqp_channel_t kChannel = 1;
amqp_bytes_t b(const std::string& s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }
}  // namespace

int64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Conn::Conn(const std::string& host, int port) : c_(amqp_new_connection()) {
    amqp_socket_t* s = amqp_tcp_socket_new(c_.get());  // owned by the connection
    if (!s) throw std::runtime_error("cannot create a socket");
    check_status(amqp_socket_open(s, host.c_str(), port), "connect to " + host + ":" + std::to_string(port));
    check(amqp_login(c_.get(), "/", /*channel_max=*/0, /*frame_max=*/131072, /*heartbeat=*/0,
                     AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
          "login");
    amqp_channel_open(c_.get(), kChannel);
    check(amqp_get_rpc_reply(c_.get()), "open channel");
}

void Conn::check_status(int status, const std::string& doing) const {
    if (status != AMQP_STATUS_OK) throw std::runtime_error(doing + ": " + amqp_error_string2(status));
}

void Conn::check(amqp_rpc_reply_t r, const std::string& doing) const {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: check_status(r.library_error, doing); return;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
            throw std::runtime_error(doing + ": " +
                                     std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len));
        }
        throw std::runtime_error(doing + ": the broker closed the connection");
    default: throw std::runtime_error(doing + ": no reply");
    }
}

void Conn::declare(const std::string& queue, const std::string& type) {
    amqp_table_entry_t arg;
    arg.key = amqp_cstring_bytes("x-queue-type");
    arg.value.kind = AMQP_FIELD_KIND_UTF8;
    arg.value.value.bytes = amqp_cstring_bytes(type.c_str());
    amqp_queue_declare(c_.get(), kChannel, b(queue), /*passive=*/0, /*durable=*/1, /*exclusive=*/0,
                       /*auto_delete=*/0, amqp_table_t{1, &arg});
    check(amqp_get_rpc_reply(c_.get()), "declare " + queue);
}

void Conn::declare_task_queue(const std::string& queue, int delivery_limit) {
    const std::string dlx = queue + ".dlx";
    amqp_exchange_declare(c_.get(), kChannel, b(dlx), amqp_cstring_bytes("fanout"), /*passive=*/0, /*durable=*/1,
                          /*auto_delete=*/0, /*internal=*/0, amqp_empty_table);
    check(amqp_get_rpc_reply(c_.get()), "declare exchange " + dlx);
    amqp_table_entry_t args[3];
    args[0].key = amqp_cstring_bytes("x-queue-type");
    args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    args[0].value.value.bytes = amqp_cstring_bytes("quorum");
    args[1].key = amqp_cstring_bytes("x-dead-letter-exchange");
    args[1].value.kind = AMQP_FIELD_KIND_UTF8;
    args[1].value.value.bytes = b(dlx);
    args[2].key = amqp_cstring_bytes("x-delivery-limit");
    args[2].value.kind = AMQP_FIELD_KIND_I64;
    args[2].value.value.i64 = delivery_limit;
    amqp_queue_declare(c_.get(), kChannel, b(queue), /*passive=*/0, /*durable=*/1, /*exclusive=*/0,
                       /*auto_delete=*/0, amqp_table_t{3, args});
    check(amqp_get_rpc_reply(c_.get()), "declare " + queue);
}

void Conn::inspect(const std::string& queue, uint32_t& messages, uint32_t& consumers) {
    auto* ok = amqp_queue_declare(c_.get(), kChannel, b(queue), /*passive=*/1, /*durable=*/0, /*exclusive=*/0,
                                  /*auto_delete=*/0, amqp_empty_table);
    check(amqp_get_rpc_reply(c_.get()), "inspect " + queue);
    messages = ok->message_count;
    consumers = ok->consumer_count;
}

void Conn::purge(const std::string& queue) {
    amqp_queue_purge(c_.get(), kChannel, b(queue));
    check(amqp_get_rpc_reply(c_.get()), "purge " + queue);
}

void Conn::remove(const std::string& queue) {
    amqp_queue_delete(c_.get(), kChannel, b(queue), /*if_unused=*/0, /*if_empty=*/0);
    check(amqp_get_rpc_reply(c_.get()), "delete " + queue);
}

void Conn::qos(int prefetch) {
    amqp_basic_qos(c_.get(), kChannel, 0, uint16_t(prefetch), /*global=*/0);
    check(amqp_get_rpc_reply(c_.get()), "qos");
}

void Conn::consume(const std::string& queue) {
    amqp_basic_consume(c_.get(), kChannel, b(queue), amqp_empty_bytes, /*no_local=*/0, /*no_ack=*/0,
                       /*exclusive=*/0, amqp_empty_table);
    check(amqp_get_rpc_reply(c_.get()), "consume " + queue);
}

void Conn::select_confirms() {
    amqp_confirm_select(c_.get(), kChannel);
    check(amqp_get_rpc_reply(c_.get()), "confirm.select");
}

void Conn::publish(const std::string& queue, const std::string& body) {
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    check_status(amqp_basic_publish(c_.get(), kChannel, amqp_empty_bytes, b(queue), /*mandatory=*/0,
                                    /*immediate=*/0, &props, b(body)),
                 "publish");
}

void Conn::ack(uint64_t tag) { check_status(amqp_basic_ack(c_.get(), kChannel, tag, /*multiple=*/0), "ack"); }

void Conn::wait_confirmed(uint64_t tag) {
    while (confirmed_ < tag) {
        amqp_frame_t f;
        check_status(amqp_simple_wait_frame(c_.get(), &f), "wait for confirms");
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            auto* m = static_cast<amqp_basic_ack_t*>(f.payload.method.decoded);
            // Confirms arrive in order; a single ack for the next tag or a "multiple" up to one.
            if (m->delivery_tag > confirmed_) confirmed_ = m->delivery_tag;
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            throw std::runtime_error("the broker nacked a publish");
        }
    }
}

void Conn::close() noexcept {
    amqp_channel_close(c_.get(), kChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c_.get(), AMQP_REPLY_SUCCESS);
}

}  // namespace bench
