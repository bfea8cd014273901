#include "web/handler.h"

#include <algorithm>
#include <cctype>
#include <map>

#include <nlohmann/json.hpp>

#include "amqp/connection.h"
#include "util/clock.h"
#include "util/control.h"
#include "util/error.h"
#include "util/log.h"
#include "util/table.h"
#include "web/csv_stream.h"
#include "web/page.h"
#include "web/users.h"

namespace sqlq::web {

using json = nlohmann::json;
using http::status;

namespace {

constexpr const char* kCookie = "sqlq_session";

// The API's answer when a request's input is wrong: thrown inside the handler, rendered once.
struct HttpError {
    status code;
    std::string what;
};

// Beast 1.74 hands out boost::string_view.
template <class View>
std::string str(const View& v) {
    return std::string(v.data(), v.size());
}

int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = char(std::tolower(static_cast<unsigned char>(c)));
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

std::string url_decode(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+') out += ' ';
        else if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out += char(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else out += s[i];
    }
    return out;
}

struct Target {
    std::vector<std::string> parts;  // "/api/tasks/3" → {"api","tasks","3"}
    std::map<std::string, std::string> query;
};

Target parse_target(std::string_view t) {
    Target out;
    auto q = t.find('?');
    std::string_view path = t.substr(0, q);
    if (q != std::string_view::npos) {
        std::string_view rest = t.substr(q + 1);
        while (!rest.empty()) {
            auto amp = rest.find('&');
            std::string_view kv = rest.substr(0, amp);
            auto eq = kv.find('=');
            if (!kv.empty())
                out.query[url_decode(kv.substr(0, eq))] = eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1));
            if (amp == std::string_view::npos) break;
            rest = rest.substr(amp + 1);
        }
    }
    size_t i = 0;
    while (i < path.size()) {
        while (i < path.size() && path[i] == '/') ++i;
        size_t j = path.find('/', i);
        if (j == std::string_view::npos) j = path.size();
        if (j > i) out.parts.emplace_back(path.substr(i, j - i));
        i = j;
    }
    return out;
}

int64_t parse_id(const std::string& s, const char* what) {
    if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos)
        throw HttpError{status::bad_request, std::string(what) + " must be a non-negative integer, not '" +
                                                 s.substr(0, 40) + "'"};
    return std::stoll(s);
}

int64_t query_int(const Target& t, const std::string& key, int64_t dflt) {
    auto it = t.query.find(key);
    if (it == t.query.end() || it->second.empty()) return dflt;
    return parse_id(it->second, key.c_str());
}

http::response<http::string_body> make(status s, const WebRequest& req, std::string body,
                                       const char* type = "application/json; charset=utf-8") {
    http::response<http::string_body> r{s, req.msg.version()};
    r.set(http::field::content_type, type);
    r.set(http::field::cache_control, "no-store");
    r.set("X-Content-Type-Options", "nosniff");
    r.set("Referrer-Policy", "no-referrer");
    r.keep_alive(req.msg.keep_alive());
    r.body() = std::move(body);
    r.prepare_payload();
    return r;
}

WebResponse full(http::response<http::string_body> r) {
    WebResponse w;
    w.msg = std::move(r);
    return w;
}

WebResponse ok_json(const WebRequest& req, const json& j, status s = status::ok) {
    return full(make(s, req, j.dump(-1, ' ', false, json::error_handler_t::replace)));
}

json parse_body(const WebRequest& req) {
    try {
        json j = json::parse(req.msg.body());
        if (!j.is_object()) throw HttpError{status::bad_request, "the request body must be a JSON object"};
        return j;
    } catch (const json::parse_error& e) {
        throw HttpError{status::bad_request, std::string("the request body is not valid JSON: ") + e.what()};
    }
}

std::string string_field(const json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end()) throw HttpError{status::bad_request, std::string("missing field \"") + key + "\""};
    if (!it->is_string()) throw HttpError{status::bad_request, std::string("field \"") + key + "\" must be a string"};
    return it->get<std::string>();
}

std::string cookie_value(const WebRequest& req, const std::string& name) {
    auto range = req.msg.equal_range(http::field::cookie);
    for (auto it = range.first; it != range.second; ++it) {
        std::string_view v(it->value().data(), it->value().size());
        while (!v.empty()) {
            auto semi = v.find(';');
            std::string_view part = v.substr(0, semi);
            while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
            auto eq = part.find('=');
            if (eq != std::string_view::npos && part.substr(0, eq) == name) return std::string(part.substr(eq + 1));
            if (semi == std::string_view::npos) break;
            v.remove_prefix(semi + 1);
        }
    }
    return {};
}

// What a log line may show of a name a client sent.
std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char c : s.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? char(c) : '?';
    return out;
}

}  // namespace

std::string sessions_file(const Config& cfg) { return cfg.supervisor.run_dir + "/web-sessions.json"; }

http::status status_for(int exit_code) {
    switch (exit_code) {
    case kExitUsage: return status::bad_request;
    case kExitNotFound: return status::not_found;
    case kExitConflict:
    case kExitTaskFailed:
    case kExitTaskCancelled: return status::conflict;
    case kExitTooLarge: return status::payload_too_large;
    case kExitQueueFull: return status::too_many_requests;
    default: return status::service_unavailable;
    }
}

http::response<http::string_body> json_error(status s, const std::string& what, unsigned version, bool keep_alive) {
    http::response<http::string_body> r{s, version};
    r.set(http::field::content_type, "application/json; charset=utf-8");
    r.set(http::field::cache_control, "no-store");
    r.set("X-Content-Type-Options", "nosniff");
    r.keep_alive(keep_alive);
    r.body() = json{{"error", what}, {"status", int(s)}}.dump(-1, ' ', false, json::error_handler_t::replace);
    r.prepare_payload();
    return r;
}

class Handler::Lease {
public:
    Lease(Handler& h, std::unique_ptr<TaskService> s) : h_(h), s_(std::move(s)) {}
    Lease(Lease&&) = default;
    ~Lease() {
        if (!s_) return;
        std::lock_guard lock(h_.pool_mu_);
        h_.pool_.push_back(std::move(s_));
    }
    TaskService* operator->() { return s_.get(); }
    TaskService& operator*() { return *s_; }

private:
    Handler& h_;
    std::unique_ptr<TaskService> s_;
};

Handler::Handler(const Config& cfg, Clock clock)
    : cfg_(cfg),
      clock_(clock ? std::move(clock) : Clock(now_ms)),
      sessions_(cfg.web.session_ttl_s * 1000, sessions_file(cfg), clock_()) {}

Handler::Lease Handler::borrow() {
    {
        std::lock_guard lock(pool_mu_);
        if (!pool_.empty()) {
            auto s = std::move(pool_.back());
            pool_.pop_back();
            return Lease(*this, std::move(s));
        }
    }
    return Lease(*this, std::make_unique<TaskService>(cfg_));
}

std::string Handler::cookie(const std::string& token, const WebRequest& req) const {
    return std::string(kCookie) + "=" + token + cookie_attributes(req);
}

std::string Handler::cleared_cookie(const WebRequest& req) const {
    return std::string(kCookie) + "=" + cookie_attributes(req) + "; Max-Age=0";
}

std::string Handler::cookie_attributes(const WebRequest& req) const {
    std::string c = "; Path=/; HttpOnly; SameSite=Strict";
    // Secure when the browser reached us over TLS: directly, or through the trusted proxy.
    bool tls = req.tls;
    if (!tls && !cfg_.web.trusted_proxy.empty() && req.remote == cfg_.web.trusted_proxy) {
        auto proto = req.msg.find("X-Forwarded-Proto");
        tls = proto != req.msg.end() && str(proto->value()) == "https";
    }
    if (tls) c += "; Secure";
    return c;
}

std::optional<Handler::Who> Handler::authenticate(const WebRequest& req, std::vector<std::string>& set_cookies) {
    const int64_t now = clock_();
    const std::string token = cookie_value(req, kCookie);
    std::optional<Sessions::Session> s;
    if (!token.empty()) s = sessions_.find(token, now);
    // A trusted reverse proxy names the user; believed only from its own address.
    if (!cfg_.web.trusted_proxy.empty() && req.remote == cfg_.web.trusted_proxy) {
        auto h = req.msg.find(cfg_.web.proxy_user_header);
        if (h != req.msg.end()) {
            std::string user = str(h->value());
            if (!valid_user_name(user)) throw HttpError{status::bad_request, "the proxy's user header is not a valid user name"};
            if (s && s->user == user) return Who{s->user, s->admin, s->csrf};
            bool admin = false;
            auto users = load_users(cfg_.web.users_file);
            if (auto it = users.find(user); it != users.end()) admin = it->second.admin;
            std::string t = sessions_.create(user, admin, now);
            set_cookies.push_back(cookie(t, req));
            auto made = sessions_.find(t, now);
            return Who{made->user, made->admin, made->csrf};
        }
    }
    if (!s) return std::nullopt;
    return Who{s->user, s->admin, s->csrf};
}

WebResponse Handler::handle(const WebRequest& req) {
    std::vector<std::string> set_cookies;
    WebResponse r;
    try {
        r = route(req, set_cookies);
    } catch (const HttpError& e) {
        r = full(json_error(e.code, e.what, req.msg.version(), req.msg.keep_alive()));
    } catch (const Error& e) {
        r = full(json_error(status_for(e.exit_code()), e.what(), req.msg.version(), req.msg.keep_alive()));
    } catch (const std::exception& e) {
        spdlog::error("{} {}: {}", str(req.msg.method_string()), printable(str(req.msg.target())), e.what());
        r = full(json_error(status::internal_server_error, std::string("internal error: ") + e.what(),
                            req.msg.version(), req.msg.keep_alive()));
    }
    for (const auto& c : set_cookies) r.msg.insert(http::field::set_cookie, c);
    return r;
}

WebResponse Handler::route(const WebRequest& req, std::vector<std::string>& set_cookies) {
    const std::string target = str(req.msg.target());
    const Target t = parse_target(target);
    const auto method = req.msg.method();
    const bool get = method == http::verb::get, post = method == http::verb::post;
    auto not_allowed = [&](const char* allow) {
        auto r = json_error(status::method_not_allowed,
                            str(req.msg.method_string()) + " is not allowed here; use " + allow,
                            req.msg.version(), req.msg.keep_alive());
        r.set(http::field::allow, allow);
        return full(std::move(r));
    };

    // The page itself: no sign-in needed to load it (it asks for one).
    if (t.parts.empty() || t.parts[0] != "api") {
        const PageFile* f = page_file(t.parts.empty() ? "/" : "/" + t.parts[0]);
        if (!f || t.parts.size() > 1) throw HttpError{status::not_found, "no such page: " + printable(target)};
        if (!get) return not_allowed("GET");
        auto r = make(status::ok, req, std::string(f->body), std::string(f->content_type).c_str());
        r.set(http::field::cache_control, "no-cache");
        r.set("Content-Security-Policy",
              "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
              "form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
        r.set("X-Frame-Options", "DENY");
        return full(std::move(r));
    }
    const auto& p = t.parts;
    if (p.size() == 2 && p[1] == "login") {
        if (!post) return not_allowed("POST");
        return login(req, set_cookies);
    }

    auto who = authenticate(req, set_cookies);
    const bool known = (p.size() == 2 && (p[1] == "me" || p[1] == "logout" || p[1] == "tasks" || p[1] == "events" ||
                                          p[1] == "fleet")) ||
                       (p.size() >= 3 && p[1] == "tasks");
    if (!known) throw HttpError{status::not_found, "no such API endpoint: " + printable(target)};
    if (!who) throw HttpError{status::unauthorized, "sign in first (POST /api/login)"};
    if (method != http::verb::get && method != http::verb::head) {
        auto h = req.msg.find("X-CSRF-Token");
        if (h == req.msg.end() || !same_secret(str(h->value()), who->csrf))
            throw HttpError{status::forbidden, "missing or wrong X-CSRF-Token header (the csrf of POST /api/login)"};
    }

    if (p[1] == "me") {
        if (!get) return not_allowed("GET");
        return ok_json(req, {{"user", who->user}, {"admin", who->admin}, {"csrf", who->csrf}});
    }
    if (p[1] == "logout") {
        if (!post) return not_allowed("POST");
        sessions_.drop(cookie_value(req, kCookie));
        set_cookies.push_back(cleared_cookie(req));
        return ok_json(req, {{"ok", true}});
    }
    if (p[1] == "events") {
        if (!get) return not_allowed("GET");
        WebResponse w;
        w.kind = WebResponse::Kind::events;
        w.msg = make(status::ok, req, "", "text/event-stream");
        w.msg.set(http::field::cache_control, "no-store");
        w.user = who->user;
        w.admin = who->admin;
        return w;
    }
    if (p[1] == "fleet") {
        if (!get) return not_allowed("GET");
        if (!who->admin) throw HttpError{status::forbidden, "the fleet is for admins"};
        auto r = fleet();
        r.msg.keep_alive(req.msg.keep_alive());
        return r;
    }

    // --- tasks ---
    auto svc = borrow();
    if (p.size() == 2) {
        if (post) {
            // Counted once stored: a refused request (bad JSON, too long) uses none of the quota.
            if (submits_.count(who->user, clock_()) >= cfg_.web.submits_per_minute)
                throw HttpError{status::too_many_requests,
                                "too many submissions: at most " + std::to_string(cfg_.web.submits_per_minute) +
                                    " a minute ([web] submits_per_minute); try again shortly"};
            json body = parse_body(req);
            auto s = svc->submit({string_field(body, "sql")}, who->user);
            submits_.add(who->user, clock_());
            json out = {{"id", s.ids.front()}, {"published", s.published == 1}};
            if (!s.problem.empty()) out["problem"] = s.problem;
            return ok_json(req, out, status::created);
        }
        if (!get) return not_allowed("GET, POST");
        TaskStore::ListFilter f;
        f.limit = std::clamp<int64_t>(query_int(t, "limit", 50), 1, 1000);
        if (auto it = t.query.find("status"); it != t.query.end() && !it->second.empty()) {
            f.status = parse_status(it->second);
            if (!f.status) throw HttpError{status::bad_request, "unknown status '" + printable(it->second) + "'"};
        }
        if (who->admin) {
            if (auto it = t.query.find("user"); it != t.query.end() && !it->second.empty()) f.submitter = it->second;
        } else {
            f.submitter = who->user;
        }
        auto tasks = svc->list(f);
        const int64_t now = svc->now();  // the store's clock: the page counts elapsed times from it
        json arr = json::array();
        for (const auto& task : tasks) arr.push_back(task_json(task, now));
        return ok_json(req, {{"tasks", arr}, {"now", now}});
    }

    const int64_t id = parse_id(p[2], "the task id");
    // Another user's task is answered as no task at all: its existence is not theirs to know.
    Task task;
    try {
        task = svc->show(id);
    } catch (const Error& e) {
        if (e.exit_code() == kExitNotFound) throw HttpError{status::not_found, "no task " + std::to_string(id)};
        throw;
    }
    if (!who->admin && task.submitter != who->user) throw HttpError{status::not_found, "no task " + std::to_string(id)};

    if (p.size() == 3) {
        if (!get) return not_allowed("GET");
        return ok_json(req, task_json(task, *svc));
    }
    if (p.size() == 4 && p[3] == "cancel") {
        if (!post) return not_allowed("POST");
        using Kind = TaskService::Cancelled::Kind;
        auto c = svc->cancel(id, who->user, TaskService::WaitForStop::no);
        if (c.kind == Kind::already_finished)
            throw HttpError{status::conflict, "task " + std::to_string(id) + " already " + to_string(c.status) +
                                                  "; nothing to cancel"};
        const char* kind = c.kind == Kind::cancelled_queued ? "cancelled" : "requested";
        return ok_json(req, {{"result", kind}, {"task", task_json(svc->show(id), *svc)}});
    }
    auto expired_is_gone = [&](const Error& e) {
        // The task succeeded but its result is gone: 410, not "no such task".
        if (e.exit_code() == kExitNotFound) throw HttpError{status::gone, e.what()};
        throw;
    };
    if (p.size() == 4 && p[3] == "result") {
        if (!get) return not_allowed("GET");
        const int64_t offset = query_int(t, "offset", 0);
        const int64_t limit = query_int(t, "limit", std::min<int64_t>(100, cfg_.web.max_page_rows));
        if (limit > cfg_.web.max_page_rows)
            throw HttpError{status::bad_request, "limit must be at most " + std::to_string(cfg_.web.max_page_rows) +
                                                     " ([web] max_page_rows)"};
        try {
            auto page = svc->result_page(id, offset, limit);
            // The store's JSON goes out as it is: no parse and re-dump of a page.
            std::string body = "{\"id\":" + std::to_string(id) + ",\"columns\":" + page.columns_json +
                               ",\"rows\":" + page.rows_json + ",\"total\":" + std::to_string(page.total) +
                               ",\"offset\":" + std::to_string(offset) + ",\"limit\":" + std::to_string(limit) + "}";
            return full(make(status::ok, req, std::move(body)));
        } catch (const Error& e) {
            expired_is_gone(e);
        }
    }
    if (p.size() == 4 && p[3] == "result.csv") {
        if (!get) return not_allowed("GET");
        std::unique_ptr<ResultReader> reader;
        try {
            reader = svc->read_result(id);
        } catch (const Error& e) {
            expired_is_gone(e);
        }
        // The reader reads through the borrowed service's connection: the download keeps both,
        // the reader declared last so that it closes before the service goes back to the pool.
        struct Download {
            Lease lease;
            CsvStream csv;
        };
        auto d = std::make_shared<Download>(Download{std::move(svc), CsvStream(std::move(reader))});
        WebResponse w;
        w.kind = WebResponse::Kind::chunks;
        w.msg = make(status::ok, req, "", "text/csv; charset=utf-8");
        w.msg.set(http::field::content_disposition, "attachment; filename=\"task-" + std::to_string(id) + ".csv\"");
        // RFC 4180 records, ~64 KiB a chunk, made as they are sent (web/csv_stream.h).
        w.next_chunk = [d]() { return d->csv.next(); };
        return w;
    }
    throw HttpError{status::not_found, "no such API endpoint: " + printable(target)};
}

WebResponse Handler::login(const WebRequest& req, std::vector<std::string>& set_cookies) {
    json body = parse_body(req);
    const std::string user = string_field(body, "user"), password = string_field(body, "password");
    const int64_t now = clock_();
    const std::string by_user = "user:" + user, by_addr = "addr:" + req.remote;
    const int64_t limit = cfg_.web.login_failures_per_minute;
    if (login_failures_.count(by_user, now) >= limit || login_failures_.count(by_addr, now) >= limit) {
        spdlog::warn("sign-in refused for user '{}' from {}: too many failures in a minute", printable(user), req.remote);
        throw HttpError{status::too_many_requests, "too many failed sign-ins; try again in a minute"};
    }
    auto users = load_users(cfg_.web.users_file);
    auto it = valid_user_name(user) ? users.find(user) : users.end();
    bool ok = false;
    if (it == users.end()) verify_nobody(password);
    else ok = verify_password(password, it->second.hash);
    if (!ok) {
        login_failures_.add(by_user, now);
        login_failures_.add(by_addr, now);
        spdlog::warn("sign-in failed for user '{}' from {}", printable(user), req.remote);
        throw HttpError{status::unauthorized, "wrong user name or password"};
    }
    std::string token = sessions_.create(user, it->second.admin, now);
    auto s = sessions_.find(token, now);
    set_cookies.push_back(cookie(token, req));
    spdlog::info("user '{}' signed in from {}", user, req.remote);
    return ok_json(req, {{"csrf", s->csrf}, {"user", user}, {"admin", s->admin}});
}

WebResponse Handler::fleet() {
    // Cached a second: a room full of admin pages asks the supervisor, broker and store once.
    std::lock_guard lock(fleet_mu_);
    const int64_t now = mono_ms();
    if (fleet_cache_.empty() || now - fleet_at_ > 1000) {
        json j;
        try {
            auto r = control_request(cfg_.supervisor.run_dir, control::Request::status(), 2000);
            j["supervisor"] = r ? r->status() : json(nullptr);
            if (!r) j["supervisor_error"] = "no supervisor is running";
        } catch (const std::exception& e) {
            j["supervisor"] = nullptr;
            j["supervisor_error"] = e.what();
        }
        try {
            amqp::Connection conn(cfg_.broker, "sqlq-web");
            auto q = conn.inspect(cfg_.broker.queue);
            j["queue"] = {{"name", cfg_.broker.queue}, {"messages", q.messages}, {"consumers", q.consumers}};
            conn.close();
        } catch (const std::exception& e) {
            j["queue"] = {{"name", cfg_.broker.queue}, {"error", e.what()}};
        }
        j["tasks"] = borrow()->store().counts();
        if (live_stats_) j["live"] = live_stats_();
        j["at"] = now_ms();
        fleet_cache_ = j.dump(-1, ' ', false, json::error_handler_t::replace);
        fleet_at_ = now;
    }
    WebResponse w;
    w.msg = http::response<http::string_body>{status::ok, 11};
    w.msg.set(http::field::content_type, "application/json; charset=utf-8");
    w.msg.set(http::field::cache_control, "no-store");
    w.msg.body() = fleet_cache_;
    w.msg.prepare_payload();
    return w;
}

}  // namespace sqlq::web
