#pragma once
// Sign-in state of the console: sessions (a random cookie token → user, role and CSRF token)
// and the sliding one-minute windows that rate-limit failed sign-ins and submissions. Both are
// safe to use from several threads.
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace sqlq::web {

// 32 random bytes from the kernel, as 64 hex digits. Throws sqlq::Error when there are none.
std::string random_token();

// Compares in time that does not depend on where the strings differ.
bool same_secret(const std::string& a, const std::string& b);

class Sessions {
public:
    struct Session {
        std::string user;
        bool admin = false;
        std::string csrf;   // sent back in X-CSRF-Token by every state-changing request
        int64_t last_used = 0;
    };
    explicit Sessions(int64_t ttl_ms) : ttl_ms_(ttl_ms) {}
    // A new session; returns its token (the cookie's value).
    std::string create(const std::string& user, bool admin, int64_t now);
    // The session of `token` if it exists and was used within the TTL; marks it used at `now`.
    std::optional<Session> find(const std::string& token, int64_t now);
    void drop(const std::string& token);
    size_t size();

private:
    std::mutex mu_;
    int64_t ttl_ms_;
    std::map<std::string, Session> by_token_;
    int64_t last_purge_ = 0;
};

// Events per key in the last minute (a sliding window).
class RateWindow {
public:
    // How many events `key` had within the minute before `now`.
    int64_t count(const std::string& key, int64_t now);
    void add(const std::string& key, int64_t now);

private:
    int64_t count_locked(const std::string& key, int64_t now);
    std::mutex mu_;
    std::map<std::string, std::deque<int64_t>> events_;
};

}  // namespace sqlq::web
