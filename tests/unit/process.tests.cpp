#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <unistd.h>

#include "util/process.h"

using namespace sqlq;

TEST_CASE("a process's resident memory is read, and grows with what it touches", "[process][memory]") {
    Memory before = process_memory(getpid());
    REQUIRE(before.rss_kib > 0);
    constexpr size_t kBytes = 64u << 20;
    auto block = std::make_unique<char[]>(kBytes);
    std::memset(block.get(), 1, kBytes);  // touched: resident
    Memory after = process_memory(getpid());
    CHECK(after.rss_kib >= before.rss_kib + (kBytes >> 10) * 9 / 10);
    // Touched anonymous memory is this process's own: private, and all of it in its PSS. (Not
    // "PSS grew by as much": the PSS of the binary's shared pages halves when another process
    // maps them meanwhile, as a second test process of the same binary does under ctest -j2:
    // seen in a sanitizer run, PSS 7.5 MB short.)
    CHECK(after.private_dirty_kib >= before.private_dirty_kib + (kBytes >> 10) * 9 / 10);
    CHECK(after.pss_kib <= after.rss_kib);
    CHECK(after.private_dirty_kib <= after.pss_kib);
    CHECK(block[kBytes - 1] == 1);
    CHECK(process_memory(-1).rss_kib == 0);
}
