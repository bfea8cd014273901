#pragma once
// The console's HTTP server: an acceptor and one session object per connection on one Asio
// thread (Boost.Beast's async server), the handler run on a small pool so that a slow store or
// broker call never holds up another connection's bytes. A request must arrive whole within
// [web] request_timeout_ms and a response be taken within as long, else the connection is
// closed: a slow client costs its own connection, nothing else.
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/thread_pool.hpp>

#include "config/config.h"
#include "web/handler.h"
#include "web/hub.h"

namespace sqlq::web {

class Server {
public:
    // Binds [web] listen (port 0: any free port). Throws sqlq::Error naming the address.
    Server(const Config& cfg, Handler& handler, Hub& hub);
    ~Server();
    std::string address() const;  // "http://127.0.0.1:8080", with the port actually bound
    // Serves until SIGTERM or SIGINT; then stops accepting, ends the streams and returns.
    void run();

    // For the sessions.
    const Config& cfg() const { return cfg_; }
    Handler& handler() { return handler_; }
    Hub& hub() { return hub_; }
    boost::asio::thread_pool& pool() { return pool_; }

private:
    void accept();

    Config cfg_;
    Handler& handler_;
    Hub& hub_;
    boost::asio::io_context ioc_{1};
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::thread_pool pool_{4};
};

}  // namespace sqlq::web
