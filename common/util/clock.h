#pragma once
#include <chrono>
#include <cstdint>

namespace sqlq {

// Wall-clock milliseconds since the epoch: what the task store records (leases, times).
inline int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Monotonic milliseconds: for deadlines and intervals inside one process.
inline int64_t mono_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace sqlq
