// A faketime-like shim for the tests (LD_PRELOAD): the process, and every process it starts with
// the same environment, sees the wall clock SQLQ_TEST_CLOCK_OFFSET_S seconds ahead (negative:
// behind). It interposes clock_gettime for the wall clocks (CLOCK_REALTIME and its coarse, alarm
// and TAI variants), gettimeofday and time; the monotonic and CPU clocks are left as they are.
// std::chrono::system_clock (libstdc++ calls clock_gettime) and so spdlog's timestamps follow it.
// Built for the tests only (tests/CMakeLists.txt): no sqlq binary has a clock hook of its own.
#include <dlfcn.h>
#include <sys/time.h>
#include <time.h>

#include <cstdlib>

namespace {

using clock_gettime_fn = int (*)(clockid_t, struct timespec*);

clock_gettime_fn real_clock_gettime() {
    static const auto fn = reinterpret_cast<clock_gettime_fn>(::dlsym(RTLD_NEXT, "clock_gettime"));
    return fn;
}

long long offset_s() {
    static const long long v = [] {
        const char* s = std::getenv("SQLQ_TEST_CLOCK_OFFSET_S");
        return s ? std::atoll(s) : 0LL;
    }();
    return v;
}

bool wall(clockid_t id) {
    return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE || id == CLOCK_REALTIME_ALARM || id == CLOCK_TAI;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int clock_gettime(clockid_t id, struct timespec* ts) noexcept {
    const int r = real_clock_gettime()(id, ts);
    if (r == 0 && wall(id)) ts->tv_sec += time_t(offset_s());
    return r;
}

__attribute__((visibility("default"))) int gettimeofday(struct timeval* tv, void* tz) noexcept {
    (void)tz;  // obsolete; glibc ignores it too
    struct timespec ts;
    const int r = clock_gettime(CLOCK_REALTIME, &ts);
    if (r != 0) return r;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = suseconds_t(ts.tv_nsec / 1000);
    return 0;
}

__attribute__((visibility("default"))) time_t time(time_t* out) noexcept {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return time_t(-1);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}

}  // extern "C"
