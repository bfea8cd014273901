#include "task/sqlite_watch.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/error.h"

namespace sqlq {

namespace {
std::string dir_of(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}
std::string base_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}
}  // namespace

SqliteWatch::SqliteWatch(const std::string& db_path)
    : dir_(dir_of(db_path)), log_name_(base_of(db_path) + "-wal"), log_path_(db_path + "-wal") {
    fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd_ < 0) throw Error(std::string("cannot watch the store: inotify_init1: ") + std::strerror(errno));
    // The directory first, then the log: a log made between the two is seen either way.
    dir_wd_ = inotify_add_watch(fd_, dir_.c_str(), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
    if (dir_wd_ < 0) {
        const int err = errno;
        ::close(fd_);
        fd_ = -1;
        throw Error("cannot watch the store's directory " + dir_ + ": " + std::strerror(err));
    }
    watch_log();
}

SqliteWatch::~SqliteWatch() {
    if (fd_ >= 0) ::close(fd_);  // drops every watch of the instance
}

void SqliteWatch::unwatch() {
    for (int* wd : {&log_wd_, &dir_wd_})
        if (*wd >= 0) {
            inotify_rm_watch(fd_, *wd);
            *wd = -1;
        }
}

void SqliteWatch::watch_log() {
    // ENOENT: no log yet (the store was never opened in WAL mode, or its last connection closed);
    // its creation shows in the directory. The same file again gives back the same descriptor.
    log_wd_ = inotify_add_watch(fd_, log_path_.c_str(), IN_MODIFY);
}

bool SqliteWatch::drain() {
    bool changed = false;
    alignas(inotify_event) char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n <= 0) break;  // EAGAIN: all read; EINTR: the caller's signal, it looks again anyway
        for (ssize_t at = 0; at < n;) {
            const auto* ev = reinterpret_cast<const inotify_event*>(buf + at);
            at += ssize_t(sizeof(inotify_event) + ev->len);
            if (ev->mask & IN_Q_OVERFLOW) {
                changed = true;  // events were dropped: one of them may have been ours
            } else if (ev->wd == log_wd_) {
                if (ev->mask & IN_MODIFY) changed = true;
                if (ev->mask & IN_IGNORED) log_wd_ = -1;  // the log was deleted
            } else if (ev->wd == dir_wd_ && ev->len > 0 && log_name_ == ev->name) {
                // A new log: watch it, and count its making as a change (the first commit
                // after it may be written before the watch is in place).
                watch_log();
                changed = true;
            }
        }
    }
    return changed;
}

bool SqliteWatch::wait(int64_t timeout_ms) {
    const int64_t start = mono_ms();
    int64_t limit = std::max<int64_t>(timeout_ms, 0);
    if (settle_) {
        settle_ = false;
        limit = std::min(limit, kSettleMs);
    }
    const int64_t deadline = start + limit;
    for (;;) {
        const int64_t left = std::max<int64_t>(deadline - mono_ms(), 0);
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, int(std::min<int64_t>(left, INT_MAX)));
        if (r < 0) return false;  // EINTR: a signal; the caller decides what it means
        if (r == 0) return false; // timed out
        if (!drain()) {
            if (mono_ms() >= deadline) return false;
            continue;  // another file of the directory, or the log's watch re-armed
        }
        // Coalesce: a change reported less than a window ago waits out the rest of it, and
        // whatever was committed meanwhile is covered by this one report. Either way the
        // writer gets a moment to make its commit visible (kPublishUs).
        const int64_t since = mono_ms() - last_report_;
        if (window_ == kCoalesceMs && ++reports_ >= kBusyReports) window_ = kBusyCoalesceMs;
        const long pause_ns = since < window_ ? long(window_ - since) * 1000000 : 0;
        timespec ts{0, std::max(pause_ns, kPublishUs * 1000)};
        nanosleep(&ts, nullptr);
        // Busy while commits keep coming during the pause; the first pause without one ends it.
        // (Judged by the reports' spacing alone, a client running tasks one after the other,
        // its own commits under 16 ms apart, kept a waiter busy for good: 8 ms per outcome.)
        if (!drain() && window_ == kBusyCoalesceMs) new_wait();
        last_report_ = mono_ms();
        settle_ = true;
        return true;
    }
}

}  // namespace sqlq
