#pragma once
// The read-only check of the SQLite target: a connection locked down so that a user query can
// only read, and a prepare that accepts exactly one statement. Defence in depth: the
// connection is opened read-only and with query_only; the authorizer refuses every write,
// ATTACH and state-changing PRAGMA with a message a user understands; sqlite3_stmt_readonly
// is the last word.
#include <memory>
#include <string>
#include <vector>

#include <sqlite3.h>

#include "sqlite/db.h"

namespace sqlq::sqlite {

// A function the program itself registers on every connection (an auto-extension), allowed in
// queries while this object lives, beside the allowlist of SQLite's own functions. Only the test
// worker makes one, for its fault-injection functions; nothing a config says can. Process-wide:
// make it before the first query runs, on the thread that runs queries.
class AllowedFunction {
public:
    explicit AllowedFunction(std::string name);
    ~AllowedFunction();
    AllowedFunction(const AllowedFunction&) = delete;
    AllowedFunction& operator=(const AllowedFunction&) = delete;

private:
    std::string name_;
};

class ReadOnlyPolicy {
public:
    // Locks `db` down (defensive mode, no extension loading, untrusted schema, no triggers, no
    // ATTACH, query_only) and installs the authorizer. `db` must outlive the policy, which
    // uninstalls the authorizer when destroyed. Throws SqliteError.
    explicit ReadOnlyPolicy(Db& db);
    ~ReadOnlyPolicy();
    // The authorizer holds `this`: the policy never moves.
    ReadOnlyPolicy(const ReadOnlyPolicy&) = delete;
    ReadOnlyPolicy& operator=(const ReadOnlyPolicy&) = delete;

    struct Prepared {
        std::unique_ptr<sqlite3_stmt, Finalize> stmt;  // null when refused
        std::string error;                             // why, in the user's words
    };
    // Prepares `sql` as exactly one statement that only reads (blanks and comments may follow).
    Prepared prepare(const std::string& sql);

    // Why the authorizer refused the last statement ("" if it did not). Also set while a
    // statement steps: SQLite re-prepares it after a schema change.
    const std::string& denied() const noexcept { return denied_; }
    // Before a kept statement runs again (statement_cache.h): the refusal of an earlier one is
    // not its.
    void forget_denied() noexcept {
        denied_.clear();
        denied_table_.clear();
    }

private:
    static int authorize(void* self, int code, const char* a, const char* b, const char*, const char*);

    sqlite3* db_;
    std::string denied_;
    std::string denied_table_;  // the table of the last refused INSERT, UPDATE or DELETE
};

}  // namespace sqlq::sqlite
