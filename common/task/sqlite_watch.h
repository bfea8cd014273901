#pragma once
// The SQLite store's watch (TaskStore::watch): inotify on the write-ahead log. Every commit
// appends its frames to `<db>-wal` with write(2), which inotify reports as IN_MODIFY, so a
// waiter hears of a commit by any process on this host without polling, and without the
// committing process doing anything for it (no message, no syscall of its own: the kernel's
// fsnotify hook runs inside the write it makes anyway). docs/architecture.md, "Waiting for a
// task", says why this mechanism and where it stops.
#include <cstdint>
#include <string>

#include "task/store.h"

namespace sqlq {

class SqliteWatch final : public StoreWatch {
public:
    // Watches the WAL of the database at `db_path` and its directory (a checkpoint that truncates
    // the log keeps the file; a log deleted when the last connection closed and made again by the
    // next one is a new file, seen through the directory). Throws Error when inotify cannot be
    // set up (EMFILE: fs.inotify.max_user_instances reached); TaskStore::watch() then falls back
    // to polling.
    explicit SqliteWatch(const std::string& db_path);
    ~SqliteWatch() override;
    SqliteWatch(const SqliteWatch&) = delete;
    SqliteWatch& operator=(const SqliteWatch&) = delete;

    bool wait(int64_t timeout_ms) override;
    bool live() const override { return true; }
    int fd() const override { return fd_; }
    void unwatch() override;
    // Whether it reports at the busy pace (kBusyCoalesceMs) now; for tests.
    bool busy() const { return window_ == kBusyCoalesceMs; }
    void new_wait() override {
        window_ = kCoalesceMs;
        reports_ = 0;
    }

    // A commit's frames are written (the event) a moment before the WAL index in shared memory
    // makes them visible to readers (no event), and a reader woken in between sees the old
    // state; on two cores the woken waiter often runs before the writer has finished. So a
    // report waits kPublishUs first (the writer gets the CPU for its last step), and the next
    // wait() returns after at most kSettleMs even without an event: one more look for the case
    // where that was not enough.
    static constexpr long kPublishUs = 200;
    static constexpr int64_t kSettleMs = 2;
    // Reports at most one change per kCoalesceMs, and once one wait has had kBusyReports reports
    // (the waiter woke that often and what it waits for has not come) at most one per
    // kBusyCoalesceMs, until a pause passes with no commit or a new wait begins (new_wait); a
    // report that comes later than the window after the last one is not delayed at all. So a
    // store committing thousands of times a second
    // wakes a waiter at most ~125 times a second, each wake-up one read, while the two commits
    // of a short task (claim, outcome) are reported as they come. Measured in
    // docs/performance.md, "Waiting for an outcome".
    static constexpr int64_t kCoalesceMs = 1;
    static constexpr int64_t kBusyCoalesceMs = 8;
    static constexpr int kBusyReports = 8;

private:
    // Reads every pending event; true when one of them is a change of the log (or the queue
    // overflowed). Re-arms the log's watch when the file was made again.
    bool drain();
    void watch_log();

    int fd_ = -1;      // the inotify instance: owned, closed by the destructor
    int dir_wd_ = -1;  // the database's directory: IN_CREATE / IN_MOVED_TO of the log's name
    int log_wd_ = -1;  // the log itself: IN_MODIFY; -1 while it does not exist
    std::string dir_, log_name_, log_path_;
    bool settle_ = false;      // a change was reported: look again within kSettleMs
    int64_t last_report_ = 0;  // mono_ms of the last change reported
    int64_t window_ = kCoalesceMs;  // the current least spacing of reports
    int reports_ = 0;               // reports since the wait began or the busy pace ended
};

}  // namespace sqlq
