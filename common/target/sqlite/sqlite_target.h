#pragma once
// The SQLite query target: a database file opened read-only (readonly.h), its rows encoded by
// the shared RowEncoder, its caps kept by the shared LimitGuard through SQLite's progress
// handler (progress.h), plus SQLite's own length and heap limits and a cap on temporary files
// (temp_vfs.h).
//
// What a query can do to its connection is kept to reads by the allowlists of readonly.cpp; on
// top of that, the connection is closed after every query that did not end ok (refused,
// failed, over a cap, stopped) and when the worker falls idle (release_memory()), and the next
// task opens a new one. A connection per task would cost a file open and a parse of the whole
// schema each time: 10 to 30 times a kept connection's cost for a small schema, milliseconds
// for a large one (docs/performance.md, "The query target").
#include <atomic>
#include <memory>
#include <string>

#include "config/config.h"
#include "sqlite/db.h"
#include "target/sqlite/readonly.h"
#include "target/sqlite/statement_cache.h"
#include "target/sqlite/temp_vfs.h"
#include "target/target.h"

namespace sqlq::sqlite {

class SqliteTarget final : public Target {
public:
    // Opens cfg.database read-only, now rather than at the first task. Throws SqliteError
    // naming the file.
    explicit SqliteTarget(const QueryConfig& cfg);

    QueryOutcome run(const std::string& sql, const PollFn& poll) override;
    void cancel() noexcept override { cancel_.store(true, std::memory_order_relaxed); }
    // Closes the connection: its page cache, schema and virtual tables go (and glibc is asked to
    // hand the freed pages back). The next run() opens a new one.
    void release_memory() noexcept override;
    std::string describe() const override { return cfg_.database; }

private:
    // One task's connection, locked down.
    struct Session {
        Session(const QueryConfig& cfg, const TempBudgetVfs& vfs);
        Db db;
        ReadOnlyPolicy policy;  // after db: uninstalls its authorizer before the connection closes
        StatementCache kept;    // after policy: finalized first
    };

    QueryOutcome run_in(Session& session, const std::string& sql, const PollFn& poll);

    const QueryConfig cfg_;
    TempBudgetVfs temp_;                // before session_ and outliving it: its files use it
    std::unique_ptr<Session> session_;  // null until the next task when closed (see above)
    bool worked_ = false;               // a task ran since the last release_memory()
    // A signal handler may set it: it must be a plain lock-free store.
    static_assert(std::atomic<bool>::is_always_lock_free);
    std::atomic<bool> cancel_{false};
};

}  // namespace sqlq::sqlite
