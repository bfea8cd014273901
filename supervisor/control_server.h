#pragma once
// The supervisor's end of the control socket: listens on <run_dir>/control.sock (created 0600),
// reads one request line per connection, answers with what the handler returns and closes. The
// handler is a function of the parsed request (control/protocol.h) and never sees the socket; a
// line that does not parse is answered with control::error_reply() without reaching it.
//
// Everything runs on the io_context's thread: the handler is called from a completion handler,
// so it may touch the supervisor's state directly.
#include <functional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "control/protocol.h"

namespace sqlq::supervisor {

class ControlServer {
public:
    // Returns the reply line (a control::*_reply()).
    using Handler = std::function<std::string(const control::Request&)>;

    ControlServer(boost::asio::io_context& io, std::string path, Handler handler);
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // Replaces a socket file left by a dead supervisor (the caller holds the run-dir lock) and
    // starts accepting. Throws sqlq::Error when the socket cannot be bound.
    void listen();
    // Stops accepting and removes the socket file; connections being answered finish.
    void close();

    // How long a client may take to send its request line after connecting.
    static constexpr int kRequestTimeoutMs = 5000;

private:
    void accept();

    boost::asio::io_context& io_;
    std::string path_;
    Handler handler_;
    boost::asio::local::stream_protocol::acceptor acceptor_;
};

}  // namespace sqlq::supervisor
