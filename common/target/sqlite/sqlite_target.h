#pragma once
// The SQLite query target: a database file opened read-only (readonly.h), its rows encoded by
// the shared RowEncoder, its caps kept by the shared LimitGuard through SQLite's progress
// handler (progress.h), plus SQLite's own length and heap limits.
#include <atomic>
#include <string>

#include "config/config.h"
#include "sqlite/db.h"
#include "target/sqlite/readonly.h"
#include "target/target.h"

namespace sqlq::sqlite {

class SqliteTarget final : public Target {
public:
    // Opens cfg.database read-only. Throws SqliteError naming the file.
    explicit SqliteTarget(const QueryConfig& cfg);

    QueryOutcome run(const std::string& sql, const PollFn& poll) override;
    void cancel() noexcept override { cancel_.store(true, std::memory_order_relaxed); }

private:
    const QueryConfig cfg_;
    Db db_;
    ReadOnlyPolicy policy_;  // after db_: uninstalls its authorizer before the connection closes
    // A signal handler may set it: it must be a plain lock-free store.
    static_assert(std::atomic<bool>::is_always_lock_free);
    std::atomic<bool> cancel_{false};
};

}  // namespace sqlq::sqlite
