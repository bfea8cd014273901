#pragma once
// The console's request handler: a parsed HTTP request in, a response out, no socket (the
// Beast examples' handle_request). Every task operation goes through TaskService, so the
// console and the `sqlq` command behave alike; the handler adds who may do what (sign-in,
// CSRF, a user's own tasks), the limits of [web], and the JSON of the API (docs/api.md).
// Safe to call from several threads at once: each call borrows a TaskService of its own.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "service/task_service.h"
#include "web/auth.h"

namespace sqlq::web {

namespace http = boost::beast::http;

struct WebRequest {
    http::request<http::string_body> msg;
    std::string remote;  // the client's address, without port
    bool tls = false;    // it came over TLS (or through the trusted proxy from https)
};

struct WebResponse {
    enum class Kind {
        full,    // msg is the whole response
        chunks,  // msg is the head; next_chunk() gives the body piece by piece ("" at the end)
        events,  // msg is the head of an event stream for (user, admin): the server subscribes it
    };
    Kind kind = Kind::full;
    http::response<http::string_body> msg;
    std::function<std::string()> next_chunk;
    std::string user;
    bool admin = false;
};

class Handler {
public:
    using Clock = std::function<int64_t()>;  // ms since the epoch
    explicit Handler(const Config& cfg, Clock clock = {});
    WebResponse handle(const WebRequest& req);

    Sessions& sessions() { return sessions_; }
    // What GET /api/fleet reports as "live" (the event streams: how many, store queries so far).
    void set_live_stats(std::function<nlohmann::json()> f) { live_stats_ = std::move(f); }

private:
    struct Who {
        std::string user;
        bool admin = false;
        std::string csrf;
    };
    class Lease;  // a borrowed TaskService, returned on destruction
    Lease borrow();

    WebResponse route(const WebRequest& req, std::vector<std::string>& set_cookies);
    std::optional<Who> authenticate(const WebRequest& req, std::vector<std::string>& set_cookies);
    WebResponse login(const WebRequest& req, std::vector<std::string>& set_cookies);
    WebResponse fleet();
    // The Set-Cookie value that gives the browser its session token, or that clears it.
    std::string cookie(const std::string& token, const WebRequest& req) const;
    std::string cleared_cookie(const WebRequest& req) const;
    std::string cookie_attributes(const WebRequest& req) const;

    Config cfg_;
    Clock clock_;
    Sessions sessions_;
    RateWindow login_failures_;
    RateWindow submits_;
    std::mutex pool_mu_;
    std::vector<std::unique_ptr<TaskService>> pool_;
    std::mutex fleet_mu_;
    int64_t fleet_at_ = 0;
    std::string fleet_cache_;
    std::function<nlohmann::json()> live_stats_;
};

// Where the console keeps its sessions across restarts: <run_dir>/web-sessions.json (0600).
std::string sessions_file(const Config& cfg);
// The HTTP status for an sqlq::Error's exit code (util/error.h).
http::status status_for(int exit_code);
// A JSON error response: {"error": what, "status": code}.
http::response<http::string_body> json_error(http::status status, const std::string& what, unsigned version = 11,
                                             bool keep_alive = true);

}  // namespace sqlq::web
