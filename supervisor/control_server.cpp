#include "supervisor/control_server.h"

#include <chrono>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include "util/error.h"

namespace sqlq::supervisor {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;

namespace {

// One connection: read a line, answer it, close. Handlers hold it by shared_ptr.
struct Session {
    Session(local::socket s, asio::io_context& io)
        : sock(std::move(s)), deadline(io), buf(control::kMaxRequestBytes + 2) {}
    local::socket sock;
    asio::steady_timer deadline;
    asio::streambuf buf;  // bounded: a longer line ends the read with not_found
    std::string reply;
};

}  // namespace

ControlServer::ControlServer(asio::io_context& io, std::string path, Handler handler)
    : io_(io), path_(std::move(path)), handler_(std::move(handler)), acceptor_(io) {}

void ControlServer::listen() {
    // The lock is ours, so a socket file left here belongs to a dead supervisor.
    ::unlink(path_.c_str());
    local::endpoint ep(path_);
    acceptor_.open(ep.protocol());
    // Created 0600 (umask) rather than chmod-ed afterwards: no window where others may connect.
    mode_t old = ::umask(0177);
    boost::system::error_code ec;
    acceptor_.bind(ep, ec);
    ::umask(old);
    if (ec) throw Error("cannot listen on " + path_ + ": " + ec.message());
    acceptor_.listen();
    accept();
}

void ControlServer::close() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    ::unlink(path_.c_str());
}

void ControlServer::accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, local::socket sock) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec) {
            auto s = std::make_shared<Session>(std::move(sock), io_);
            // A client that connects and says nothing is dropped after a while.
            s->deadline.expires_after(std::chrono::milliseconds(kRequestTimeoutMs));
            s->deadline.async_wait([s](boost::system::error_code e) {
                if (!e) s->sock.close();
            });
            asio::async_read_until(s->sock, s->buf, '\n', [this, s](boost::system::error_code e, size_t n) {
                if (e) {
                    s->reply = control::error_reply(e == asio::error::not_found ? "request too long" : "no request line");
                } else {
                    std::string line(asio::buffers_begin(s->buf.data()), asio::buffers_begin(s->buf.data()) + n);
                    auto parsed = control::parse_request(line);
                    if (auto* bad = std::get_if<control::BadRequest>(&parsed)) s->reply = control::error_reply(bad->why);
                    else s->reply = handler_(std::get<control::Request>(parsed));
                }
                asio::async_write(s->sock, asio::buffer(s->reply), [s](boost::system::error_code, size_t) {
                    boost::system::error_code ignored;
                    s->deadline.cancel();
                    s->sock.close(ignored);
                });
            });
        }
        accept();
    });
}

}  // namespace sqlq::supervisor
