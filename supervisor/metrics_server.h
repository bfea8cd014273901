#pragma once
// GET /metrics over HTTP/1.1 on the supervisor's event loop ([supervisor] metrics_listen):
// Boost.Beast sessions, one per connection, and a handler that maps a parsed request to a reply
// without touching the socket (metrics_reply, tested in tests/supervisor/metrics.tests.cpp).
// Deliberately small and metrics-only: the web console has its own server.
//
// Bad requests get a status and the connection closed, never a crash: unparseable → 400,
// headers over 8 KiB → 431, a body over 1 KiB → 413, a method other than GET or HEAD → 405, any
// other path → 404. A connection idle or stalled for 10 s is closed; at most 32 are open at a
// time (more are closed at accept).
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "config/config.h"

namespace sqlq::supervisor {

// The exposition text's content type (Prometheus text format 0.0.4).
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

struct HttpReply {
    unsigned status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // extra ones (Allow)
    bool head_only = false;  // HEAD: the headers of the GET, no body
};

// The reply to `method` on `target` (the request-target as sent, query string included).
// `render` produces the exposition text; it is called only for GET or HEAD /metrics.
HttpReply metrics_reply(std::string_view method, std::string_view target, const std::function<std::string()>& render);

class MetricsServer {
public:
    using Render = std::function<std::string()>;
    MetricsServer(boost::asio::io_context& io, Render render);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    // Binds and starts accepting. Throws sqlq::Error naming the address and why (in use, not an
    // address of this host, permission).
    void listen(const ListenAddress& where);
    // Stops accepting and closes every open connection. Idempotent.
    void close();
    bool listening() const { return acceptor_.is_open(); }
    uint16_t port() const;

    struct Session;

private:
    void accept();

    std::shared_ptr<const Render> render_;  // shared with the sessions
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer retry_;  // accept again after an error
    std::list<std::weak_ptr<Session>> sessions_;  // open connections, for close() and the cap
};

}  // namespace sqlq::supervisor
