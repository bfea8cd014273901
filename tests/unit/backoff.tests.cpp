#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <vector>

#include "util/backoff.h"

using sqlq::Backoff;

namespace {
std::vector<int64_t> waits(Backoff& b, int n) {
    std::vector<int64_t> v;
    for (int i = 0; i < n; ++i) v.push_back(b.next());
    return v;
}
}  // namespace

TEST_CASE("a backoff doubles from its first wait up to its cap", "[unit][backoff]") {
    Backoff b(100, 1000);
    CHECK(b.current() == 100);
    CHECK(waits(b, 7) == std::vector<int64_t>{100, 200, 400, 800, 1000, 1000, 1000});
    CHECK(b.current() == 1000);
}

TEST_CASE("a reset backoff starts again from its first wait", "[unit][backoff]") {
    Backoff b(50, 2000);
    waits(b, 5);
    b.reset();
    CHECK(b.current() == 50);
    CHECK(waits(b, 2) == std::vector<int64_t>{50, 100});
}

TEST_CASE("a backoff whose first wait is above its cap uses it once, then the cap", "[unit][backoff]") {
    // The worker's reconnect: 100 ms first, whatever reconnect_max_ms says (10 at the least).
    Backoff b(100, 10);
    CHECK(waits(b, 3) == std::vector<int64_t>{100, 10, 10});
}

TEST_CASE("a backoff near the largest number does not overflow", "[unit][backoff]") {
    const int64_t max = std::numeric_limits<int64_t>::max();
    Backoff b(max / 2 + 1, max);
    CHECK(waits(b, 3) == std::vector<int64_t>{max / 2 + 1, max, max});
}
