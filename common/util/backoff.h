#pragma once
// A doubling backoff: first, 2·first, 4·first ... up to cap, back to first on reset(). Only the
// arithmetic: the caller waits (a timer, a poll, a pause that keeps heartbeats flowing).
#include <algorithm>
#include <cstdint>

namespace sqlq {

class Backoff {
public:
    // The first wait is `first_ms` as given; each later one doubles, never above `cap_ms`.
    Backoff(int64_t first_ms, int64_t cap_ms) : first_(first_ms), cap_(cap_ms), current_(first_ms) {}

    // The wait to use now.
    int64_t current() const { return current_; }
    // Returns the wait to use now and doubles the one after it.
    int64_t next() {
        const int64_t now = current_;
        current_ = current_ > cap_ / 2 ? cap_ : std::min(current_ * 2, cap_);  // no overflow near INT64_MAX
        return now;
    }
    // After a success: the next wait is the first one again.
    void reset() { current_ = first_; }

private:
    int64_t first_;
    int64_t cap_;
    int64_t current_;
};

}  // namespace sqlq
