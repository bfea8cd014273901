// The factory: the one place outside an engine's folder that knows which engines exist.
#include "target/target.h"

#include "sqlite/db.h"
#include "target/postgres/pg_target.h"
#include "target/sqlite/sqlite_target.h"

namespace sqlq {

std::unique_ptr<Target> open_target(const QueryConfig& cfg) {
    const std::string scheme = url_scheme(cfg.database);
    if (scheme == "postgresql" || scheme == "postgres") return std::make_unique<pg::PgTarget>(cfg);
    if (!scheme.empty())
        // Only the scheme is named: the rest of the URL may hold a password.
        throw TargetError("[query] database: unknown kind of target " + scheme +
                              "://; give the path of a SQLite database file or a postgresql:// URL",
                          kExitUsage);
    try {
        return std::make_unique<sqlite::SqliteTarget>(cfg);
    } catch (const sqlite::SqliteError& e) {
        // Translated once, here: the worker knows no engine's errors. The message already names
        // the file and SQLite's reason.
        throw TargetError(e.what(), e.exit_code());
    }
}

}  // namespace sqlq
