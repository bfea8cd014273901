#include "target/limit_guard.h"

#include "util/clock.h"

namespace sqlq {

namespace {
constexpr int64_t kPollMs = 20;
}  // namespace

LimitGuard::LimitGuard(const QueryConfig& cfg, const PollFn& poll, const std::atomic<bool>& cancel)
    : cfg_(cfg), poll_(poll), cancel_(cancel), deadline_(mono_ms() + cfg.timeout_ms) {}

bool LimitGuard::tick() {
    if (stop_ != Stop::none) return true;
    if (cancel_.load(std::memory_order_relaxed)) {
        stop_ = Stop::stopped;
        return true;
    }
    int64_t now = mono_ms();
    if (now < next_poll_) return false;
    next_poll_ = now + kPollMs;
    if (now >= deadline_) {
        stop_ = Stop::timeout;
        return true;
    }
    if (poll_()) {
        stop_ = Stop::stopped;
        return true;
    }
    return false;
}

std::optional<std::string> LimitGuard::admit_row() const {
    if (rows_ < cfg_.max_rows) return std::nullopt;
    return "the result has more than " + std::to_string(cfg_.max_rows) + " rows (query.max_rows)";
}

std::optional<std::string> LimitGuard::add_bytes(int64_t bytes) {
    bytes_ += bytes;
    if (bytes_ <= cfg_.max_bytes) return std::nullopt;
    return "the result is larger than " + std::to_string(cfg_.max_bytes) + " bytes (query.max_bytes)";
}

std::string LimitGuard::timeout_error() const {
    return "the query ran longer than " + std::to_string(cfg_.timeout_ms) + " ms (query.timeout_ms)";
}

std::string LimitGuard::memory_error() const {
    return "the query needs more memory than " + std::to_string(cfg_.memory_limit_mb) + " MB (query.memory_limit_mb)";
}

std::string LimitGuard::temp_error() const {
    return "the query needs more than " + std::to_string(cfg_.temp_limit_mb) +
           " MB of temporary space (temporary space limit: query.temp_limit_mb)";
}

std::string LimitGuard::too_big_error(const std::string& engine_text) { return engine_text + " (query.max_bytes)"; }

}  // namespace sqlq
