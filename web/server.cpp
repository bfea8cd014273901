#include "web/server.h"

#include <deque>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "util/error.h"
#include "util/log.h"

namespace sqlq::web {

namespace beast = boost::beast;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

constexpr size_t kMaxStreamBacklog = 1 << 20;  // an event stream this far behind is closed

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket&& socket, Server& server) : stream_(std::move(socket)), server_(server) {
        beast::error_code ec;
        auto ep = stream_.socket().remote_endpoint(ec);
        if (!ec) remote_ = ep.address().to_string();
    }
    void start() { net::dispatch(stream_.get_executor(), beast::bind_front_handler(&Session::read, shared_from_this())); }

private:
    std::chrono::milliseconds timeout() const { return std::chrono::milliseconds(server_.cfg().web.request_timeout_ms); }

    void read() {
        parser_.emplace();
        parser_->body_limit(uint64_t(server_.cfg().web.max_body_bytes));
        parser_->header_limit(64 * 1024);
        stream_.expires_after(timeout());
        http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, size_t) {
        if (ec == http::error::end_of_stream) return close();
        if (ec == beast::error::timeout) return;  // the stream closed the socket
        if (ec == http::error::body_limit)
            return reply_error(http::status::payload_too_large,
                               "the request body is larger than " + std::to_string(server_.cfg().web.max_body_bytes) +
                                   " bytes ([web] max_body_bytes)");
        if (ec == http::error::header_limit)
            return reply_error(http::status::request_header_fields_too_large, "the request's header is too large");
        if (ec) {
            if (ec.category() == http::make_error_code(http::error::bad_method).category())
                return reply_error(http::status::bad_request, "malformed HTTP request: " + ec.message());
            return;  // the connection broke
        }
        stream_.expires_never();
        auto req = std::make_shared<WebRequest>(WebRequest{parser_->release(), remote_, false});
        // The handler may wait on the store or the broker: on the pool, off this thread.
        net::post(server_.pool(), [self = shared_from_this(), req] {
            auto res = std::make_shared<WebResponse>(self->server_.handler().handle(*req));
            net::post(self->stream_.get_executor(), [self, res] { self->respond(std::move(*res)); });
        });
    }

    void reply_error(http::status s, const std::string& what) {
        auto msg = std::make_shared<http::response<http::string_body>>(json_error(s, what, 11, false));
        stream_.expires_after(timeout());
        http::async_write(stream_, *msg, [self = shared_from_this(), msg](beast::error_code, size_t) { self->close(); });
    }

    void respond(WebResponse res) {
        if (res.kind == WebResponse::Kind::full) {
            auto msg = std::make_shared<http::response<http::string_body>>(std::move(res.msg));
            stream_.expires_after(timeout());
            http::async_write(stream_, *msg, [self = shared_from_this(), msg](beast::error_code ec, size_t) {
                if (ec) return;
                if (msg->need_eof()) return self->close();
                self->read();
            });
            return;
        }
        // A body in chunks (a CSV download) or an event stream: the head first.
        head_ = std::make_shared<http::response<http::empty_body>>(res.msg.result(), res.msg.version());
        for (const auto& f : res.msg)
            if (f.name() != http::field::content_length) head_->insert(f.name_string(), f.value());
        head_->keep_alive(res.kind == WebResponse::Kind::chunks && res.msg.keep_alive());
        head_->chunked(true);
        serializer_ = std::make_shared<http::response_serializer<http::empty_body>>(*head_);
        next_chunk_ = std::move(res.next_chunk);
        if (res.kind == WebResponse::Kind::events) {
            stream_sub_ = std::make_shared<Hub::Stream>();
            stream_sub_->user = res.user;
            stream_sub_->admin = res.admin;
            std::weak_ptr<Session> weak = shared_from_this();
            auto ex = stream_.get_executor();
            stream_sub_->send = [weak, ex](const std::string& text) {
                net::post(ex, [weak, text] {
                    if (auto s = weak.lock()) s->queue_event(text);
                });
            };
        }
        stream_.expires_after(timeout());
        http::async_write_header(stream_, *serializer_, [self = shared_from_this()](beast::error_code ec, size_t) {
            if (ec) return self->close();
            if (self->stream_sub_) {
                self->stream_.expires_never();
                // Tell the page it is connected, then hand the stream to the hub.
                self->queue_event(": connected\n\nretry: 1000\n\n");
                self->server_.hub().add(self->stream_sub_);
                self->watch_peer();
            } else {
                self->write_next_chunk();
            }
        });
    }

    // --- a body in chunks ---
    // Each piece is made on the pool (it reads the store), then written from here.
    void write_next_chunk() {
        net::post(server_.pool(), [self = shared_from_this()] {
            auto chunk = std::make_shared<std::string>();
            bool failed = false;
            try {
                *chunk = self->next_chunk_();
            } catch (const std::exception& e) {
                // The head is sent already: all that can be said is an unfinished body, which
                // a client sees as a download that failed (no last chunk).
                spdlog::error("download for {} ended early: {}", self->remote_, e.what());
                failed = true;
            }
            net::post(self->stream_.get_executor(), [self, chunk, failed] {
                if (failed) return self->close();
                self->send_chunk(std::move(*chunk));
            });
        });
    }

    void send_chunk(std::string chunk) {
        chunk_ = std::move(chunk);
        stream_.expires_after(timeout());
        if (chunk_.empty()) {
            next_chunk_ = nullptr;  // gives back what the body held (a store connection)
            net::async_write(stream_, http::make_chunk_last(), [self = shared_from_this()](beast::error_code ec, size_t) {
                if (ec) return;
                if (!self->head_->keep_alive()) return self->close();
                self->head_.reset();
                self->serializer_.reset();
                self->read();
            });
            return;
        }
        net::async_write(stream_, http::make_chunk(net::buffer(chunk_)),
                         [self = shared_from_this()](beast::error_code ec, size_t) {
                             if (ec) return;
                             self->write_next_chunk();
                         });
    }

    // --- an event stream ---
    void queue_event(const std::string& text) {
        if (closed_) return;
        backlog_ += text.size();
        if (backlog_ > kMaxStreamBacklog) {
            // The page does not keep up: drop it; EventSource reconnects and reloads its list.
            spdlog::warn("event stream of '{}' from {} closed: {} bytes behind", stream_sub_->user, remote_, backlog_);
            return close();
        }
        events_.push_back(text);
        if (events_.size() == 1) write_event();
    }

    void write_event() {
        stream_.expires_after(timeout());
        net::async_write(stream_, http::make_chunk(net::buffer(events_.front())),
                         [self = shared_from_this()](beast::error_code ec, size_t) {
                             if (ec) return self->close();
                             self->backlog_ -= self->events_.front().size();
                             self->events_.pop_front();
                             if (!self->events_.empty()) self->write_event();
                             else self->stream_.expires_never();
                         });
    }

    // A page that goes away closes its end: see it at once rather than at the next write.
    void watch_peer() {
        stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
            if (ec == net::error::operation_aborted) return;
            self->close();
        });
    }

    void close() {
        if (closed_) return;
        closed_ = true;
        stream_sub_.reset();  // the hub forgets it
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        stream_.socket().close(ec);
    }

    beast::tcp_stream stream_;
    Server& server_;
    std::string remote_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    std::shared_ptr<http::response<http::empty_body>> head_;
    std::shared_ptr<http::response_serializer<http::empty_body>> serializer_;
    std::function<std::string()> next_chunk_;
    std::string chunk_;
    std::shared_ptr<Hub::Stream> stream_sub_;
    std::deque<std::string> events_;
    size_t backlog_ = 0;
    bool closed_ = false;
};

}  // namespace

Server::Server(const Config& cfg, Handler& handler, Hub& hub)
    : cfg_(cfg), handler_(handler), hub_(hub), acceptor_(net::make_strand(ioc_)) {
    auto hp = split_listen(cfg.web.listen);
    if (!hp) throw Error("[web] listen: not HOST:PORT: " + cfg.web.listen, kExitUsage);
    beast::error_code ec;
    auto addr = net::ip::make_address(hp->first, ec);
    if (ec) throw Error("[web] listen: '" + hp->first + "' is not an IP address", kExitUsage);
    tcp::endpoint ep(addr, uint16_t(hp->second));
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) throw Error("sqlq-web: cannot listen on " + cfg.web.listen + ": " + ec.message());
}

Server::~Server() { pool_.join(); }

std::string Server::address() const {
    auto ep = acceptor_.local_endpoint();
    std::string host = ep.address().to_string();
    if (ep.address().is_v6()) host = "[" + host + "]";
    return "http://" + host + ":" + std::to_string(ep.port());
}

void Server::accept() {
    acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted) return;
        if (!ec) std::make_shared<Session>(std::move(socket), *this)->start();
        // Out of fds or another passing error: keep accepting.
        accept();
    });
}

void Server::run() {
    net::signal_set signals(ioc_, SIGINT, SIGTERM);
    signals.async_wait([this](beast::error_code ec, int sig) {
        if (ec) return;
        spdlog::info("signal {}: stopping", sig);
        beast::error_code ignored;
        acceptor_.close(ignored);
        hub_.stop();
        // Event streams never end on their own: stop the loop; their sockets close with it.
        ioc_.stop();
    });
    accept();
    ioc_.run();
    pool_.join();
}

}  // namespace sqlq::web
