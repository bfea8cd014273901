#include "web/auth.h"

#include <cerrno>
#include <cstring>
#include <iterator>
#include <sys/random.h>

#include "util/error.h"

namespace sqlq::web {

namespace {
constexpr int64_t kMinuteMs = 60 * 1000;
}

std::string random_token() {
    unsigned char bytes[32];
    size_t got = 0;
    while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw Error(std::string("no random bytes from the kernel: ") + std::strerror(errno));
        got += size_t(n);
    }
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned char b : bytes) {
        out += hex[b >> 4];
        out += hex[b & 15];
    }
    return out;
}

bool same_secret(const std::string& a, const std::string& b) {
    if (a.size() != b.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

std::string Sessions::create(const std::string& user, bool admin, int64_t now) {
    std::string token = random_token();
    std::lock_guard lock(mu_);
    by_token_[token] = Session{user, admin, random_token(), now};
    return token;
}

std::optional<Sessions::Session> Sessions::find(const std::string& token, int64_t now) {
    std::lock_guard lock(mu_);
    if (now - last_purge_ > kMinuteMs) {  // forget expired sessions now and then
        last_purge_ = now;
        for (auto it = by_token_.begin(); it != by_token_.end();)
            it = now - it->second.last_used > ttl_ms_ ? by_token_.erase(it) : std::next(it);
    }
    auto it = by_token_.find(token);
    if (it == by_token_.end()) return std::nullopt;
    if (now - it->second.last_used > ttl_ms_) {
        by_token_.erase(it);
        return std::nullopt;
    }
    it->second.last_used = now;
    return it->second;
}

void Sessions::drop(const std::string& token) {
    std::lock_guard lock(mu_);
    by_token_.erase(token);
}

size_t Sessions::size() {
    std::lock_guard lock(mu_);
    return by_token_.size();
}

int64_t RateWindow::count_locked(const std::string& key, int64_t now) {
    auto it = events_.find(key);
    if (it == events_.end()) return 0;
    auto& q = it->second;
    while (!q.empty() && q.front() <= now - kMinuteMs) q.pop_front();
    if (q.empty()) {
        events_.erase(it);
        return 0;
    }
    return int64_t(q.size());
}

int64_t RateWindow::count(const std::string& key, int64_t now) {
    std::lock_guard lock(mu_);
    return count_locked(key, now);
}

void RateWindow::add(const std::string& key, int64_t now) {
    std::lock_guard lock(mu_);
    count_locked(key, now);
    events_[key].push_back(now);
}

}  // namespace sqlq::web
