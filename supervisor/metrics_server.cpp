#include "supervisor/metrics_server.h"

#include <array>
#include <chrono>
#include <optional>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "util/error.h"

namespace sqlq::supervisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr auto kIdle = std::chrono::seconds(10);
constexpr size_t kMaxSessions = 32;
constexpr uint32_t kHeaderLimit = 8 * 1024;
constexpr uint64_t kBodyLimit = 1024;
}  // namespace

HttpReply metrics_reply(std::string_view method, std::string_view target, const std::function<std::string()>& render) {
    HttpReply r;
    const std::string_view path = target.substr(0, target.find('?'));
    if (path != "/metrics") {
        r.status = 404;
        r.body = "not found: this server has /metrics only\n";
        return r;
    }
    if (method != "GET" && method != "HEAD") {
        r.status = 405;
        r.body = "method not allowed: /metrics takes GET or HEAD\n";
        r.headers.emplace_back("Allow", "GET, HEAD");
        return r;
    }
    r.content_type = kMetricsContentType;
    r.body = render();
    r.head_only = method == "HEAD";
    return r;
}

// One connection: read a request, answer it, and again while the client keeps it alive.
struct MetricsServer::Session : std::enable_shared_from_this<MetricsServer::Session> {
    Session(tcp::socket s, std::shared_ptr<const Render> render) : stream(std::move(s)), render_(std::move(render)) {}

    void read() {
        parser.emplace();
        parser->header_limit(kHeaderLimit);
        parser->body_limit(kBodyLimit);
        stream.expires_after(kIdle);
        http::async_read(stream, buffer, *parser, [self = shared_from_this()](beast::error_code ec, size_t) {
            self->on_read(ec);
        });
    }

    void on_read(beast::error_code ec) {
        if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
            ec == asio::error::operation_aborted || ec == asio::error::connection_reset)
            return close();
        if (ec) {
            // The request could not be read: say why, then close (the rest of the stream
            // cannot be trusted to start a new request).
            HttpReply r;
            r.status = ec == http::error::header_limit ? 431 : ec == http::error::body_limit ? 413 : 400;
            r.body = std::string(r.status == 431 ? "request header fields too large"
                                 : r.status == 413 ? "request body too large"
                                                   : "bad request") + ": " + ec.message() + "\n";
            return write(r, /*keep_alive=*/false, 11);
        }
        const auto& req = parser->get();
        HttpReply r = metrics_reply(std::string_view(req.method_string().data(), req.method_string().size()),
                                    std::string_view(req.target().data(), req.target().size()), *render_);
        write(r, req.keep_alive() && r.status == 200, req.version());
    }

    void write(const HttpReply& r, bool keep_alive, unsigned version) {
        auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), version);
        res->set(http::field::server, "sqlq-supervisor");
        res->set(http::field::content_type, r.content_type);
        for (const auto& [k, v] : r.headers) res->set(k, v);
        res->keep_alive(keep_alive);
        if (r.head_only) {
            res->content_length(r.body.size());  // what GET would send; no body follows
        } else {
            res->body() = r.body;
            res->prepare_payload();
        }
        stream.expires_after(kIdle);
        http::async_write(stream, *res, [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
            if (ec) return self->close();
            if (!keep_alive) return self->linger();
            self->read();
        });
    }

    // Closing with unread bytes from the client makes the kernel send a reset, which can destroy
    // the reply before the client reads it (a refused 20 KiB header, a body over the limit).
    // So: no more sending, then read and drop what the client still sends (up to 1 MiB, 2 s),
    // then close.
    void linger() {
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        stream.expires_after(std::chrono::seconds(2));
        drain();
    }

    void drain() {
        stream.async_read_some(asio::buffer(scratch), [self = shared_from_this()](beast::error_code ec, size_t n) {
            self->drained += n;
            if (ec || self->drained > (1u << 20)) return self->close();
            self->drain();
        });
    }

    void close() {
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream.socket().close(ignored);
    }

    beast::tcp_stream stream;
    beast::flat_buffer buffer{2 * (kHeaderLimit + kBodyLimit)};  // room for the parser to see a limit passed
    std::optional<http::request_parser<http::string_body>> parser;
    std::shared_ptr<const Render> render_;
    std::array<char, 4096> scratch{};
    size_t drained = 0;
};

MetricsServer::MetricsServer(asio::io_context& io, Render render)
    : render_(std::make_shared<const Render>(std::move(render))), acceptor_(io), retry_(io) {}

MetricsServer::~MetricsServer() { close(); }

void MetricsServer::listen(const ListenAddress& where) {
    const std::string name = (where.host.find(':') != std::string::npos ? "[" + where.host + "]" : where.host) + ":" +
                             std::to_string(where.port);
    boost::system::error_code ec;
    tcp::endpoint ep(asio::ip::make_address(where.host, ec), static_cast<unsigned short>(where.port));
    if (ec) throw Error("[supervisor] metrics_listen " + name + ": " + ec.message(), kExitUsage);
    auto fail = [&](const char* what) {
        const std::string why = ec.message();
        boost::system::error_code ignored;
        acceptor_.close(ignored);
        throw Error("[supervisor] metrics_listen " + name + ": cannot " + what + ": " + why);
    };
    if (acceptor_.open(ep.protocol(), ec)) fail("open a socket");
    // Workers forked later do not inherit the socket: launch.cpp closes every fd above 3 in the child.
    if (acceptor_.set_option(asio::socket_base::reuse_address(true), ec)) fail("set SO_REUSEADDR");
    if (acceptor_.bind(ep, ec)) fail("bind");
    if (acceptor_.listen(asio::socket_base::max_listen_connections, ec)) fail("listen");
    spdlog::info("metrics: serving http://{}/metrics", name);
    accept();
}

uint16_t MetricsServer::port() const {
    boost::system::error_code ec;
    auto ep = acceptor_.local_endpoint(ec);
    return ec ? 0 : ep.port();
}

void MetricsServer::accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
        if (!ec) {
            sessions_.remove_if([](const std::weak_ptr<Session>& w) { return w.expired(); });
            if (sessions_.size() >= kMaxSessions) {
                boost::system::error_code ignored;
                socket.close(ignored);  // a scraper needs one connection; more is a flood
            } else {
                auto s = std::make_shared<Session>(std::move(socket), render_);
                sessions_.push_back(s);
                s->read();
            }
        } else {
            // EMFILE and the like: keep serving the connections we have; try again in a while
            // (at once would spin).
            spdlog::warn("metrics: accept: {}; retrying in 100 ms", ec.message());
            retry_.expires_after(std::chrono::milliseconds(100));
            retry_.async_wait([this](boost::system::error_code e) {
                if (!e && acceptor_.is_open()) accept();
            });
            return;
        }
        accept();
    });
}

void MetricsServer::close() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    retry_.cancel();
    for (auto& w : sessions_)
        if (auto s = w.lock()) s->close();
    sessions_.clear();
}

}  // namespace sqlq::supervisor
