#pragma once
// The limit guard's hook into SQLite: the progress handler, installed for one query and
// removed when the hook goes out of scope, on every path out of run().
#include <sqlite3.h>

#include "target/limit_guard.h"

namespace sqlq::sqlite {

class ProgressHook {
public:
    // SQLite calls the handler every this many VM instructions; the guard reads its cancel flag
    // each time but the clock and the poll callback only every 20 ms, so the check stays cheap.
    // A query stuck in native code (a C function) runs no VM instructions and is not seen at
    // all: the supervisor's watchdog and cancel_grace_ms are the answer to that.
    static constexpr int kOps = 1000;

    ProgressHook(sqlite3* db, LimitGuard& guard) : db_(db) { sqlite3_progress_handler(db_, kOps, call, &guard); }
    ~ProgressHook() { sqlite3_progress_handler(db_, 0, nullptr, nullptr); }
    ProgressHook(const ProgressHook&) = delete;
    ProgressHook& operator=(const ProgressHook&) = delete;

private:
    // Non-zero interrupts the statement: sqlite3_step returns SQLITE_INTERRUPT.
    static int call(void* guard) { return static_cast<LimitGuard*>(guard)->tick() ? 1 : 0; }
    sqlite3* db_;
};

}  // namespace sqlq::sqlite
