#include "amqp/connection.h"

#include <atomic>
#include <cstring>
#include <sys/time.h>
#include <vector>

#include <amqp_tcp_socket.h>

#include "util/clock.h"

namespace sqlq::amqp {

namespace {
constexpr amqp_channel_t kChannel = 1;

std::string bytes(amqp_bytes_t b) { return std::string(static_cast<const char*>(b.bytes), b.len); }

timeval to_timeval(int ms) {
    timeval tv{};
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

struct ParsedUrl {
    std::string host, user, password, vhost;
    int port = 5672;
};

ParsedUrl parse(const std::string& url) {
    std::vector<char> buf(url.begin(), url.end());
    buf.push_back('\0');
    amqp_connection_info info;
    amqp_default_connection_info(&info);
    if (amqp_parse_url(buf.data(), &info) != AMQP_STATUS_OK)
        throw AmqpError("invalid broker url " + redact_url(url), AmqpError::Kind::precondition);
    ParsedUrl p{info.host, info.user, info.password, info.vhost, info.port};
    return p;
}


// The node a new Connection of this process tries first: the last one reached, or the one after
// a node whose connection was lost. One for the process (the web console's threads share it);
// taken modulo the config's node count.
std::atomic<size_t> g_first_node{0};
}  // namespace

std::string describe_url(const std::string& url) {
    try {
        auto p = parse(url);
        return p.host + ":" + std::to_string(p.port) + (p.vhost == "/" ? "" : "/" + p.vhost);
    } catch (const Error&) {
        return redact_url(url);
    }
}

std::string describe(const BrokerConfig& cfg) {
    std::string out;
    for (const auto& u : cfg.urls) out += (out.empty() ? "" : ", ") + describe_url(u);
    return out;
}

Connection::Connection(const BrokerConfig& cfg, const std::string& name, int frame_max)
    : cfg_(cfg), frame_max_(frame_max) {
    const size_t n = cfg_.urls.size();
    if (n == 0) throw AmqpError("no broker url configured", AmqpError::Kind::precondition);
    const size_t first = g_first_node.load() % n;
    std::string why;
    for (size_t k = 0; k < n; ++k) {
        node_ = (first + k) % n;
        where_ = describe_url(cfg_.urls[node_]);
        try {
            connect(cfg_.urls[node_], name);
            g_first_node.store(node_);
            return;
        } catch (const AmqpError& e) {
            if (e.fatal() || n == 1) throw;
            why += (why.empty() ? "" : "; ") + std::string(e.what());
        }
    }
    throw AmqpError("no broker node answers: " + why, AmqpError::Kind::connection);
}

void Connection::connect(const std::string& address, const std::string& name) {
    conn_.reset(amqp_new_connection());
    open_ = false;
    acked_.clear();
    nacked_.clear();
    next_publish_tag_ = 1;
    auto url = parse(address);
    const std::string where = "broker " + where_;
    amqp_socket_t* socket = amqp_tcp_socket_new(conn_.get());  // owned by the connection
    if (!socket) throw AmqpError(where + ": cannot create a socket", AmqpError::Kind::connection);
    timeval tv = to_timeval(cfg_.connect_timeout_ms);
    if (int rc = amqp_socket_open_noblock(socket, url.host.c_str(), url.port, &tv); rc != AMQP_STATUS_OK)
        throw AmqpError(where + ": cannot connect: " + amqp_error_string2(rc), AmqpError::Kind::connection);
    amqp_set_handshake_timeout(conn_.get(), &tv);
    amqp_table_entry_t prop;
    prop.key = amqp_cstring_bytes("connection_name");
    prop.value.kind = AMQP_FIELD_KIND_UTF8;
    prop.value.value.bytes = amqp_cstring_bytes(name.c_str());
    amqp_table_t props{1, &prop};
    amqp_rpc_reply_t r = amqp_login_with_properties(conn_.get(), url.vhost.c_str(), /*channel_max=*/0,
                                                    frame_max_, cfg_.heartbeat_s, &props,
                                                    AMQP_SASL_METHOD_PLAIN, url.user.c_str(), url.password.c_str());
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION ||
        (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_CONNECTION_CLOSED)) {
        // RabbitMQ closes the socket on a refused login (ACCESS_REFUSED), which rabbitmq-c reports
        // as a closed connection during the handshake.
        throw AmqpError(where + ": login refused for user \"" + url.user + "\" (wrong user, password or vhost)",
                        AmqpError::Kind::auth);
    }
    check(r, "login");
    open_ = true;
    amqp_channel_open(conn_.get(), kChannel);
    check(amqp_get_rpc_reply(conn_.get()), "open a channel");
    timeval rpc = to_timeval(std::max(cfg_.connect_timeout_ms, 1000));
    amqp_set_rpc_timeout(conn_.get(), &rpc);
}

void Connection::broken() noexcept {
    open_ = false;
    leave_node();
}

void Connection::leave_node() noexcept {
    const size_t n = cfg_.urls.size();
    if (n < 2) return;
    size_t expected = node_;
    g_first_node.compare_exchange_strong(expected, (node_ + 1) % n);
}

void Connection::lost(const std::string& doing, int status) {
    if (status == AMQP_STATUS_TIMEOUT) open_ = false;
    else broken();
    throw AmqpError("broker " + where_ + ": " + doing + ": " + amqp_error_string2(status),
                    status == AMQP_STATUS_TIMEOUT ? AmqpError::Kind::timeout : AmqpError::Kind::connection);
}

void Connection::check(amqp_rpc_reply_t reply, const std::string& doing) {
    const std::string where = "broker " + where_ + ": " + doing;
    switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return;
    case AMQP_RESPONSE_NONE:
        broken();
        throw AmqpError(where + ": no reply", AmqpError::Kind::connection);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        lost(doing, reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        break;
    }
    // The broker closed the channel or the connection: confirm the close, then report it.
    if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
        amqp_connection_close_ok_t ok{};
        amqp_send_method(conn_.get(), 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        broken();  // a node shutting down closes its connections so
        auto kind = m->reply_code == AMQP_ACCESS_REFUSED ? AmqpError::Kind::auth : AmqpError::Kind::connection;
        throw AmqpError(where + ": connection closed by the broker: " + bytes(m->reply_text), kind);
    }
    if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
        amqp_channel_close_ok_t ok{};
        amqp_send_method(conn_.get(), kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        open_ = false;  // we run one channel: without it the connection is of no use
        const std::string text = bytes(m->reply_text);
        auto kind = m->reply_code == AMQP_PRECONDITION_FAILED ? AmqpError::Kind::precondition
                    : m->reply_code == AMQP_ACCESS_REFUSED    ? AmqpError::Kind::auth
                                                              : AmqpError::Kind::channel;
        // RabbitMQ's consumer timeout is a PRECONDITION_FAILED too ("delivery acknowledgement on
        // channel 1 timed out. Timeout value used: 1800000 ms. ..."), but unlike a topology
        // mismatch it is about one delivery: a new channel works.
        if (kind == AmqpError::Kind::precondition && text.find("delivery acknowledgement") != std::string::npos &&
            text.find("timed out") != std::string::npos)
            kind = AmqpError::Kind::consumer_timeout;
        throw AmqpError(where + ": " + text, kind);
    }
    broken();
    throw AmqpError(where + ": unexpected reply from the broker", AmqpError::Kind::connection);
}

void Connection::declare_topology() {
    auto* c = conn_.get();
    const std::string dlx = cfg_.dead_letter_exchange(), dlq = cfg_.dead_letter_queue();
    amqp_exchange_declare(c, kChannel, amqp_cstring_bytes(dlx.c_str()), amqp_cstring_bytes("fanout"),
                          /*passive=*/0, /*durable=*/1, /*auto_delete=*/0, /*internal=*/0, amqp_empty_table);
    check(amqp_get_rpc_reply(c), "declare exchange " + dlx);

    amqp_table_entry_t dlq_args[1];
    dlq_args[0].key = amqp_cstring_bytes("x-queue-type");
    dlq_args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    const std::string dlq_type = cfg_.dead_letter_queue_type();
    dlq_args[0].value.value.bytes = amqp_cstring_bytes(dlq_type.c_str());
    amqp_queue_declare(c, kChannel, amqp_cstring_bytes(dlq.c_str()), /*passive=*/0, /*durable=*/1,
                       /*exclusive=*/0, /*auto_delete=*/0, amqp_table_t{1, dlq_args});
    check(amqp_get_rpc_reply(c), "declare queue " + dlq + " (" + dlq_type + ")");
    amqp_queue_bind(c, kChannel, amqp_cstring_bytes(dlq.c_str()), amqp_cstring_bytes(dlx.c_str()),
                    amqp_cstring_bytes(""), amqp_empty_table);
    check(amqp_get_rpc_reply(c), "bind queue " + dlq);

    std::vector<amqp_table_entry_t> args(3);
    args[0].key = amqp_cstring_bytes("x-queue-type");
    args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    args[0].value.value.bytes = amqp_cstring_bytes(cfg_.queue_type.c_str());
    args[1].key = amqp_cstring_bytes("x-dead-letter-exchange");
    args[1].value.kind = AMQP_FIELD_KIND_UTF8;
    args[1].value.value.bytes = amqp_cstring_bytes(dlx.c_str());
    if (cfg_.queue_type == "quorum") {
        args[2].key = amqp_cstring_bytes("x-delivery-limit");
        args[2].value.kind = AMQP_FIELD_KIND_I64;
        args[2].value.value.i64 = cfg_.delivery_limit;
    } else {
        args.pop_back();
    }
    amqp_queue_declare(c, kChannel, amqp_cstring_bytes(cfg_.queue.c_str()), /*passive=*/0, /*durable=*/1,
                       /*exclusive=*/0, /*auto_delete=*/0, amqp_table_t{int(args.size()), args.data()});
    check(amqp_get_rpc_reply(c), "declare queue " + cfg_.queue + " (" + cfg_.queue_type + ")");
}

QueueInfo Connection::inspect(const std::string& queue) {
    auto* ok = amqp_queue_declare(conn_.get(), kChannel, amqp_cstring_bytes(queue.c_str()), /*passive=*/1,
                                  /*durable=*/0, /*exclusive=*/0, /*auto_delete=*/0, amqp_empty_table);
    check(amqp_get_rpc_reply(conn_.get()), "inspect queue " + queue);
    return {ok->message_count, ok->consumer_count};
}

void Connection::enable_confirms() {
    amqp_confirm_select(conn_.get(), kChannel);
    check(amqp_get_rpc_reply(conn_.get()), "enable publisher confirms");
}

uint64_t Connection::publish(const std::string& queue, const std::string& body) {
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    amqp_bytes_t b{body.size(), const_cast<char*>(body.data())};
    int rc = amqp_basic_publish(conn_.get(), kChannel, amqp_cstring_bytes(""), amqp_cstring_bytes(queue.c_str()),
                                /*mandatory=*/0, /*immediate=*/0, &props, b);
    if (rc != AMQP_STATUS_OK) lost("publish to " + queue, rc);
    return next_publish_tag_++;
}

void Connection::handle_frame(const amqp_frame_t& frame, const std::string& doing) {
    if (frame.frame_type != AMQP_FRAME_METHOD) return;
    switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD:
    case AMQP_BASIC_NACK_METHOD: {
        bool ack = frame.payload.method.id == AMQP_BASIC_ACK_METHOD;
        uint64_t tag;
        bool multiple;
        if (ack) {
            auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
            tag = m->delivery_tag;
            multiple = m->multiple;
        } else {
            auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
            tag = m->delivery_tag;
            multiple = m->multiple;
        }
        auto& into = ack ? acked_ : nacked_;
        if (!multiple) {
            into.insert(tag);
        } else {
            // every unconfirmed tag up to `tag`
            for (uint64_t t = tag; t >= 1; --t) {
                if (acked_.count(t) || nacked_.count(t)) {
                    if (t < tag) break;
                    continue;
                }
                into.insert(t);
            }
        }
        return;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        // A returned message (unroutable): its body follows; read and drop it, it is not confirmed as routed.
        amqp_message_t msg;
        amqp_read_message(conn_.get(), frame.channel, &msg, /*flags=*/0);
        amqp_destroy_message(&msg);
        return;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_rpc_reply_t r{};
        r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
        r.reply = frame.payload.method;
        check(r, doing);
        return;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        open_ = false;
        throw AmqpError("broker " + where_ + ": " + doing + ": the broker cancelled our consumer",
                        AmqpError::Kind::channel);
    default:
        return;
    }
}

std::set<uint64_t> Connection::wait_confirms(uint64_t first, uint64_t last, int timeout_ms) {
    auto done = [&] {
        for (uint64_t t = first; t <= last; ++t)
            if (!acked_.count(t) && !nacked_.count(t)) return false;
        return true;
    };
    timeval tv = to_timeval(timeout_ms);
    while (!done()) {
        amqp_frame_t frame;
        int rc = amqp_simple_wait_frame_noblock(conn_.get(), &frame, &tv);
        if (rc == AMQP_STATUS_TIMEOUT) break;
        if (rc != AMQP_STATUS_OK) lost("wait for publisher confirms", rc);
        handle_frame(frame, "wait for publisher confirms");
    }
    std::set<uint64_t> ok;
    for (uint64_t t = first; t <= last; ++t)
        if (acked_.erase(t)) ok.insert(t);
    for (uint64_t t = first; t <= last; ++t) nacked_.erase(t);
    return ok;
}

void Connection::qos(int prefetch) {
    amqp_basic_qos(conn_.get(), kChannel, /*prefetch_size=*/0, uint16_t(prefetch), /*global=*/0);
    check(amqp_get_rpc_reply(conn_.get()), "set prefetch");
}

void Connection::consume(const std::string& queue) {
    auto* ok = amqp_basic_consume(conn_.get(), kChannel, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes,
                                  /*no_local=*/0, /*no_ack=*/0, /*exclusive=*/0, amqp_empty_table);
    check(amqp_get_rpc_reply(conn_.get()), "consume from " + queue);
    consumer_tag_ = bytes(ok->consumer_tag);
}

std::optional<Delivery> Connection::next(int timeout_ms) {
    amqp_maybe_release_buffers(conn_.get());
    amqp_envelope_t env;
    timeval tv = to_timeval(timeout_ms);
    amqp_rpc_reply_t r = amqp_consume_message(conn_.get(), &env, &tv, /*flags=*/0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        Delivery d{env.delivery_tag, env.redelivered != 0, bytes(env.message.body), {}};
        amqp_destroy_envelope(&env);
        return d;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) return std::nullopt;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        // A frame that is not a delivery: a close, a cancel, a confirm. Handle it.
        amqp_frame_t frame;
        timeval zero{};
        int rc = amqp_simple_wait_frame_noblock(conn_.get(), &frame, &zero);
        if (rc == AMQP_STATUS_OK) handle_frame(frame, "consume");
        else if (rc != AMQP_STATUS_TIMEOUT) lost("consume", rc);
        return std::nullopt;
    }
    check(r, "consume");
    return std::nullopt;
}

void Connection::ack(uint64_t tag, Multiple multiple) {
    int rc = amqp_basic_ack(conn_.get(), kChannel, tag, multiple == Multiple::yes ? 1 : 0);
    if (rc != AMQP_STATUS_OK) lost("ack", rc);
}

void Connection::reject(uint64_t tag, Requeue requeue) {
    int rc = amqp_basic_reject(conn_.get(), kChannel, tag, requeue == Requeue::yes ? 1 : 0);
    if (rc != AMQP_STATUS_OK) lost("reject", rc);
}

void Connection::cancel_consumer() {
    if (consumer_tag_.empty()) return;
    amqp_basic_cancel(conn_.get(), kChannel, amqp_cstring_bytes(consumer_tag_.c_str()));
    consumer_tag_.clear();
    check(amqp_get_rpc_reply(conn_.get()), "cancel the consumer");
}

bool Connection::frames_queued() const noexcept {
    return amqp_frames_enqueued(conn_.get()) != 0;
}

std::optional<Delivery> Connection::get(const std::string& queue) {
    amqp_maybe_release_buffers(conn_.get());
    amqp_rpc_reply_t r = amqp_basic_get(conn_.get(), kChannel, amqp_cstring_bytes(queue.c_str()), /*no_ack=*/0);
    check(r, "read from " + queue);
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return std::nullopt;
    auto* ok = static_cast<amqp_basic_get_ok_t*>(r.reply.decoded);
    Delivery d;
    d.tag = ok->delivery_tag;
    d.redelivered = ok->redelivered;
    amqp_message_t msg;
    check(amqp_read_message(conn_.get(), kChannel, &msg, /*flags=*/0), "read from " + queue);
    d.body = bytes(msg.body);
    // x-first-death-reason: rejected, expired, maxlen or delivery_limit
    if (msg.properties._flags & AMQP_BASIC_HEADERS_FLAG) {
        const amqp_table_t& h = msg.properties.headers;
        for (int i = 0; i < h.num_entries; ++i)
            if (bytes(h.entries[i].key) == "x-first-death-reason" &&
                (h.entries[i].value.kind == AMQP_FIELD_KIND_UTF8 || h.entries[i].value.kind == AMQP_FIELD_KIND_BYTES))
                d.dead_letter_reason = bytes(h.entries[i].value.value.bytes);
    }
    amqp_destroy_message(&msg);
    return d;
}

void Connection::pump() {
    if (!open_ || cfg_.heartbeat_s <= 0) return;
    // Only send: reading here could swallow a delivery that arrives during a query (prefetch > 1).
    // The broker needs to hear from us every heartbeat interval; we speak twice as often.
    int64_t now = mono_ms();
    if (now - last_pump_ms_ < cfg_.heartbeat_s * 500) return;
    last_pump_ms_ = now;
    amqp_frame_t hb{};
    hb.frame_type = AMQP_FRAME_HEARTBEAT;
    hb.channel = 0;
    if (int rc = amqp_send_frame(conn_.get(), &hb); rc != AMQP_STATUS_OK) lost("heartbeat", rc);
}

void Connection::close() noexcept {
    if (!open_) return;
    open_ = false;
    amqp_channel_close(conn_.get(), kChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn_.get(), AMQP_REPLY_SUCCESS);
}

}  // namespace sqlq::amqp
