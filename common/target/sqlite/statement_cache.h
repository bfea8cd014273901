#pragma once
// The statements of a target connection's last few queries that ran to their end, by SQL text.
// A query run again (a console's refresh, a dashboard, a fleet of the same short query) skips
// SQLite's parse and the read-only policy's checks: 5 % of a trivial task's CPU. A statement
// kept here passed ReadOnlyPolicy::prepare on this connection; should the schema change, SQLite
// prepares it again inside sqlite3_step, under the same authorizer.
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <sqlite3.h>

#include "sqlite/db.h"

namespace sqlq::sqlite {

class StatementCache {
public:
    using Stmt = std::unique_ptr<sqlite3_stmt, Finalize>;
    static constexpr size_t kMaxStatements = 8;
    static constexpr size_t kMaxSqlBytes = 4096;  // a longer text is prepared each time

    // The kept statement of `sql`, taken out (null when none): the caller owns it while it runs.
    Stmt take(const std::string& sql) {
        for (auto it = kept_.begin(); it != kept_.end(); ++it)
            if (it->first == sql) {
                Stmt s = std::move(it->second);
                kept_.erase(it);
                return s;
            }
        return nullptr;
    }
    // Keeps `s`, reset, as the statement of `sql`; the least recently kept goes past the limit.
    void put(const std::string& sql, Stmt s) {
        if (!s || sql.size() > kMaxSqlBytes) return;
        sqlite3_reset(s.get());
        if (kept_.size() >= kMaxStatements) kept_.erase(kept_.begin());
        kept_.emplace_back(sql, std::move(s));
    }
    size_t size() const noexcept { return kept_.size(); }

private:
    std::vector<std::pair<std::string, Stmt>> kept_;  // least recently kept first
};

}  // namespace sqlq::sqlite
