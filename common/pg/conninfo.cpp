#include "pg/conninfo.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <poll.h>

#include "config/config.h"
#include "util/clock.h"
#include "util/error.h"

namespace sqlq::pg {

std::string tidy(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    for (char& c : s)
        if (c == '\n' || c == '\t') c = ' ';
    return s;
}

std::string scrub(std::string msg, const std::string& url) {
    const std::string shown = redact_url(url);
    if (shown == url) return msg;
    auto star = shown.find("***");
    const std::string secret = url.substr(star, url.size() - (shown.size() - 3));
    if (secret.empty()) return msg;
    for (size_t at; (at = msg.find(secret)) != std::string::npos;) msg.replace(at, secret.size(), "***");
    return msg;
}

ConnParams ConnParams::from_url(const std::string& url, const std::string& what, const std::string& options,
                                const std::string& application_name) {
    char* err = nullptr;
    Conninfo given(PQconninfoParse(url.c_str(), &err));
    if (!given) {
        std::string why = err ? tidy(err) : "out of memory";
        PQfreemem(err);
        throw Error(what + ": not a PostgreSQL URL libpq can read: " + scrub(why, url) + " (" + redact_url(url) + ")",
                    kExitUsage);
    }
    ConnParams p;
    std::string url_options;
    bool keepalives_given = false;
    for (const PQconninfoOption* o = given.get(); o->keyword; ++o) {
        if (!o->val) continue;
        const std::string key = o->keyword;
        if (key == "options") {
            url_options = o->val;
            continue;
        }
        if (key == "application_name" || key == "fallback_application_name" || key == "client_encoding") continue;
        if (key.rfind("keepalives", 0) == 0) keepalives_given = true;
        if (key == "connect_timeout") {
            p.connect_timeout_ms = std::max<int64_t>(1, std::atoll(o->val)) * 1000;
            continue;
        }
        p.keys.push_back(key);
        p.values.push_back(o->val);
    }
    p.keys.push_back("options");
    p.values.push_back(url_options.empty() ? options : url_options + " " + options);
    p.keys.push_back("application_name");
    p.values.push_back(application_name);
    p.keys.push_back("client_encoding");
    p.values.push_back("UTF8");
    if (!keepalives_given) {
        // A server host that vanishes is noticed in about 25 s instead of the kernel's 2 hours.
        for (auto [k, v] : {std::pair{"keepalives", "1"}, {"keepalives_idle", "10"}, {"keepalives_interval", "5"},
                            {"keepalives_count", "3"}}) {
            p.keys.push_back(k);
            p.values.push_back(v);
        }
    }
    return p;
}

Conn ConnParams::start() const {
    std::vector<const char*> k, v;
    for (size_t i = 0; i < keys.size(); ++i) {
        k.push_back(keys[i].c_str());
        v.push_back(values[i].c_str());
    }
    k.push_back(nullptr);
    v.push_back(nullptr);
    return Conn(PQconnectStartParams(k.data(), v.data(), /*expand_dbname=*/0));
}

Conn ConnParams::connect(const std::string& url, std::string& error) const {
    Conn c = start();
    if (!c) {
        error = "out of memory";
        return nullptr;
    }
    const int64_t deadline = mono_ms() + connect_timeout_ms;
    while (PQstatus(c.get()) != CONNECTION_BAD) {
        const PostgresPollingStatusType st = PQconnectPoll(c.get());
        if (st == PGRES_POLLING_OK) {
            // The server's notices ("terminating connection due to administrator command" when
            // it restarts) would go to stderr, unasked: the caller reports what matters itself.
            PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);
            return c;
        }
        if (st == PGRES_POLLING_FAILED) break;
        const int64_t left = deadline - mono_ms();
        if (left <= 0) {
            error = "no answer within " + std::to_string(connect_timeout_ms) + " ms (connect_timeout)";
            return nullptr;
        }
        pollfd p{PQsocket(c.get()), short(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
        if (p.fd < 0) break;
        if (::poll(&p, 1, int(std::min<int64_t>(left, 1000))) < 0 && errno != EINTR) break;
    }
    error = scrub(tidy(PQerrorMessage(c.get())), url);
    return nullptr;
}

}  // namespace sqlq::pg
