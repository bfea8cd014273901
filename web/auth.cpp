#include "web/auth.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sys/random.h>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"
#include "util/log.h"

namespace sqlq::web {

using json = nlohmann::json;

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

Sessions::Sessions(int64_t ttl_ms, std::string file, int64_t now) : ttl_ms_(ttl_ms), file_(std::move(file)) {
    if (file_.empty()) return;
    std::ifstream in(file_);
    if (!in) return;  // none yet
    try {
        const json j = json::parse(in);
        for (const auto& s : j.at("sessions")) {
            Session v{s.at("user").get<std::string>(), s.at("admin").get<bool>(), s.at("csrf").get<std::string>(),
                      s.at("last_used").get<int64_t>()};
            if (now - v.last_used <= ttl_ms_) by_token_[s.at("token").get<std::string>()] = std::move(v);
        }
        spdlog::info("{} sessions kept from {}", by_token_.size(), file_);
    } catch (const json::exception& e) {
        by_token_.clear();
        spdlog::warn("{}: not a sessions file, ignored (everyone signs in again): {}", file_, e.what());
    }
}

void Sessions::save_locked() {
    if (file_.empty()) return;
    json list = json::array();
    for (const auto& [token, v] : by_token_)
        list.push_back({{"token", token}, {"user", v.user}, {"admin", v.admin}, {"csrf", v.csrf}, {"last_used", v.last_used}});
    try {
        auto dir = std::filesystem::path(file_).parent_path();
        if (!dir.empty()) (void)create_private_dirs(dir.string());
        replace_private_file(file_, json{{"sessions", list}}.dump() + "\n", "sessions file");
        used_since_save_ = false;
    } catch (const Error& e) {
        // Signing in still works; only a restart would sign these users out.
        spdlog::error("{}", e.what());
    }
}

void Sessions::save() {
    std::lock_guard lock(mu_);
    save_locked();
}

void Sessions::purge_locked(int64_t now) {
    last_purge_ = now;
    for (auto it = by_token_.begin(); it != by_token_.end();)
        it = now - it->second.last_used > ttl_ms_ ? by_token_.erase(it) : std::next(it);
}

std::string Sessions::create(const std::string& user, bool admin, int64_t now) {
    std::string token = random_token();
    std::lock_guard lock(mu_);
    by_token_[token] = Session{user, admin, random_token(), now};
    save_locked();
    return token;
}

std::optional<Sessions::Session> Sessions::find(const std::string& token, int64_t now) {
    std::lock_guard lock(mu_);
    if (now - last_purge_ > kMinuteMs) {  // now and then: forget expired sessions, keep the times of use
        purge_locked(now);
        if (used_since_save_) save_locked();
    }
    auto it = by_token_.find(token);
    if (it == by_token_.end()) return std::nullopt;
    if (now - it->second.last_used > ttl_ms_) {
        by_token_.erase(it);
        return std::nullopt;
    }
    it->second.last_used = now;
    used_since_save_ = true;
    return it->second;
}

void Sessions::drop(const std::string& token) {
    std::lock_guard lock(mu_);
    if (by_token_.erase(token)) save_locked();
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

void RateWindow::purge_locked(int64_t now) {
    last_purge_ = now;
    for (auto it = events_.begin(); it != events_.end();)
        it = it->second.back() <= now - kMinuteMs ? events_.erase(it) : std::next(it);
}

int64_t RateWindow::count(const std::string& key, int64_t now) {
    std::lock_guard lock(mu_);
    return count_locked(key, now);
}

void RateWindow::add(const std::string& key, int64_t now) {
    std::lock_guard lock(mu_);
    if (now - last_purge_ > kMinuteMs) purge_locked(now);
    count_locked(key, now);
    if (!events_.count(key) && events_.size() >= max_keys_) {
        purge_locked(now);
        if (events_.size() >= max_keys_) {
            // Full of keys active this minute: forget the one quiet for longest.
            auto oldest = events_.begin();
            for (auto it = events_.begin(); it != events_.end(); ++it)
                if (it->second.back() < oldest->second.back()) oldest = it;
            events_.erase(oldest);
        }
    }
    events_[key].push_back(now);
}

size_t RateWindow::keys() {
    std::lock_guard lock(mu_);
    return events_.size();
}

}  // namespace sqlq::web
