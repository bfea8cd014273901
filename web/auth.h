#pragma once
// Sign-in state of the console: sessions (a random cookie token → user, role and CSRF token),
// kept in a file so that they survive a restart of sqlq-web, and the sliding one-minute windows
// that rate-limit failed sign-ins and submissions, bounded in size. Both are safe to use from
// several threads.
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
    // `file` ("": none, sessions live in memory only) is where they are kept across restarts:
    // read now (the sessions unused for `ttl_ms` at `now` are left out; an unreadable or
    // malformed file is logged and ignored), written whole (0600, renamed into place) at every
    // sign-in and sign-out, and at most once a minute for the times of use, and by save().
    Sessions(int64_t ttl_ms, std::string file = "", int64_t now = 0);
    // A new session; returns its token (the cookie's value).
    std::string create(const std::string& user, bool admin, int64_t now);
    // The session of `token` if it exists and was used within the TTL; marks it used at `now`.
    std::optional<Session> find(const std::string& token, int64_t now);
    void drop(const std::string& token);
    size_t size();
    // Writes the file now (at shutdown, so that the last uses are kept). A failure is logged.
    void save();

private:
    void purge_locked(int64_t now);
    void save_locked();
    std::mutex mu_;
    int64_t ttl_ms_;
    std::string file_;
    std::map<std::string, Session> by_token_;
    int64_t last_purge_ = 0;
    bool used_since_save_ = false;  // a last_used changed that the file does not have
};

// Events per key in the last minute (a sliding window). The keys (user names, addresses) come
// from clients, so the map is bounded: a key with no event in the last minute is forgotten (all
// of them at most a minute after), and at `max_keys` keys, adding a new one first forgets the
// expired ones, then, if none is, the key whose last event is the oldest.
class RateWindow {
public:
    explicit RateWindow(size_t max_keys = 10000) : max_keys_(max_keys ? max_keys : 1) {}
    // How many events `key` had within the minute before `now`.
    int64_t count(const std::string& key, int64_t now);
    void add(const std::string& key, int64_t now);
    size_t keys();  // the keys held now

private:
    int64_t count_locked(const std::string& key, int64_t now);
    void purge_locked(int64_t now);
    std::mutex mu_;
    size_t max_keys_;
    std::map<std::string, std::deque<int64_t>> events_;
    int64_t last_purge_ = 0;
};

}  // namespace sqlq::web
