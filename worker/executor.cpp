#include "worker/executor.h"

#include <csignal>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <nlohmann/json.hpp>

#include "util/clock.h"

namespace sqlq {

namespace {

constexpr int kProgressOps = 1000;  // VM instructions between two progress-handler calls
constexpr int64_t kPollMs = 20;

// PRAGMAs that only read. The first list takes an argument that names a table or index, so
// any argument is fine; the second would change state when given a value, so only its bare
// form (a read) is allowed. Every other PRAGMA is refused.
bool readonly_pragma(const char* name, bool has_arg) {
    static const char* const with_arg[] = {"table_info", "table_xinfo", "table_list", "index_list", "index_info",
                                           "index_xinfo", "foreign_key_list"};
    static const char* const bare[] = {"database_list", "collation_list", "function_list", "pragma_list",
                                       "compile_options", "user_version", "schema_version", "application_id",
                                       "page_count", "page_size", "freelist_count", "encoding", "data_version",
                                       "module_list"};
    for (const char* a : with_arg)
        if (sqlite3_stricmp(name, a) == 0) return true;
    if (has_arg) return false;
    for (const char* a : bare)
        if (sqlite3_stricmp(name, a) == 0) return true;
    return false;
}

const char* action_name(int code) {
    switch (code) {
    case SQLITE_INSERT: return "INSERT";
    case SQLITE_UPDATE: return "UPDATE";
    case SQLITE_DELETE: return "DELETE";
    case SQLITE_ATTACH: return "ATTACH";
    case SQLITE_DETACH: return "DETACH";
    case SQLITE_ALTER_TABLE: return "ALTER TABLE";
    case SQLITE_TRANSACTION: return "a transaction statement";
    case SQLITE_SAVEPOINT: return "SAVEPOINT";
    case SQLITE_ANALYZE: return "ANALYZE";
    case SQLITE_REINDEX: return "REINDEX";
    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_VTABLE: return "a virtual table change";
    default: return code >= SQLITE_CREATE_INDEX && code <= SQLITE_DROP_VIEW ? "CREATE or DROP" : "this statement";
    }
}

int authorize(void* self, int code, const char* a, const char* b, const char*, const char*) {
    auto* ex = static_cast<Executor*>(self);
    switch (code) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_FUNCTION:
        // b is the function name; extension loading is off anyway, say so plainly.
        if (b && sqlite3_stricmp(b, "load_extension") == 0) {
            ex->denied = "loading extensions is not allowed";
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        if (a && readonly_pragma(a, b != nullptr)) return SQLITE_OK;
        ex->denied = std::string("PRAGMA ") + (a ? a : "") + (b ? " with a value" : "") + " is not allowed: queries are read-only";
        return SQLITE_DENY;
    default:
        if ((code == SQLITE_INSERT || code == SQLITE_UPDATE || code == SQLITE_DELETE) && a &&
            sqlite3_strnicmp(a, "sqlite_", 7) == 0) {
            ex->denied = "changing the schema (CREATE, DROP, ALTER) is not allowed: queries are read-only";
            return SQLITE_DENY;
        }
        ex->denied = std::string(action_name(code)) + " is not allowed: queries are read-only";
        return SQLITE_DENY;
    }
}

// Fault-injection hooks for the test suites (SQLQ_TEST_HOOKS=1 in the worker's environment).
void test_hang(sqlite3_context* ctx, int, sqlite3_value** argv) {
    // Sleeps in native code, never returning to the VM: no progress handler, no cancel, no
    // heartbeat — what a query stuck in a C library looks like.
    int64_t ms = sqlite3_value_int64(argv[0]);
    timespec ts{time_t(ms / 1000), long((ms % 1000) * 1000000)};
    while (nanosleep(&ts, &ts) != 0) {
    }
    sqlite3_result_int64(ctx, ms);
}
void test_crash(sqlite3_context*, int, sqlite3_value**) {
    std::signal(SIGSEGV, SIG_DFL);
    std::raise(SIGSEGV);  // a worker that dies in native code, every time it runs this task
}

struct Poller {
    const std::function<bool()>* poll;
    int64_t deadline;
    int64_t next_poll;
    bool timed_out = false;
    bool stopped = false;
};

int progress(void* p) {
    auto* st = static_cast<Poller*>(p);
    int64_t now = mono_ms();
    if (now < st->next_poll) return 0;
    st->next_poll = now + kPollMs;
    if (now >= st->deadline) {
        st->timed_out = true;
        return 1;
    }
    if ((*st->poll)()) {
        st->stopped = true;
        return 1;
    }
    return 0;
}

}  // namespace

Executor::Executor(const QueryConfig& cfg, bool test_hooks)
    : cfg_(cfg), db_(cfg.database, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX) {
    sqlite3* db = db_.get();
    int on = 1, off = 0;
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, on, nullptr);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, off, nullptr);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, off, nullptr);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, off, nullptr);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, on, nullptr);
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, int(std::min<int64_t>(cfg.max_bytes, 1000000000)));
    sqlite3_hard_heap_limit64(cfg.memory_limit_mb * 1024 * 1024);
    db_.exec("PRAGMA query_only=1");
    sqlite3_set_authorizer(db, authorize, this);
    if (test_hooks) {
        sqlite3_create_function(db, "sqlq_test_hang", 1, SQLITE_UTF8, nullptr, test_hang, nullptr, nullptr);
        sqlite3_create_function(db, "sqlq_test_crash", 0, SQLITE_UTF8, nullptr, test_crash, nullptr, nullptr);
    }
}

QueryOutcome Executor::run(const std::string& sql, const std::function<bool()>& poll) {
    QueryOutcome out;
    sqlite3* db = db_.get();
    denied.clear();
    auto fail = [&](std::string why) {
        out.kind = QueryOutcome::Kind::error;
        out.error = std::move(why);
        return out;
    };

    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(db, sql.c_str(), int(sql.size()), &raw, &tail);
    std::unique_ptr<sqlite3_stmt, sqlite::Finalize> stmt(raw);
    if (rc != SQLITE_OK) return fail(denied.empty() ? sqlite3_errmsg(db) : denied);
    if (!stmt) return fail("empty query: no SQL statement");
    // Anything after the first statement but blanks and comments is a second statement.
    {
        sqlite3_stmt* next = nullptr;
        const char* rest = nullptr;
        int rc2 = sqlite3_prepare_v2(db, tail, -1, &next, &rest);
        bool more = next != nullptr || rc2 != SQLITE_OK;
        sqlite3_finalize(next);
        if (more) return fail("only one SQL statement per task");
    }
    if (!sqlite3_stmt_readonly(stmt.get())) return fail("the statement would write: queries are read-only");

    Poller poller{&poll, mono_ms() + cfg_.timeout_ms, 0};
    sqlite3_progress_handler(db, kProgressOps, progress, &poller);

    const int cols = sqlite3_column_count(stmt.get());
    nlohmann::json columns = nlohmann::json::array();
    for (int i = 0; i < cols; ++i) columns.push_back(sqlite3_column_name(stmt.get(), i) ?: "");
    std::string rows = "[";
    nlohmann::json row = nlohmann::json::array();
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
        if (out.rows >= cfg_.max_rows) {
            sqlite3_progress_handler(db, 0, nullptr, nullptr);
            return fail("the result has more than " + std::to_string(cfg_.max_rows) + " rows (query.max_rows)");
        }
        row.clear();
        for (int i = 0; i < cols; ++i) {
            switch (sqlite3_column_type(stmt.get(), i)) {
            case SQLITE_INTEGER: row.push_back(sqlite3_column_int64(stmt.get(), i)); out.bytes += 8; break;
            case SQLITE_FLOAT: row.push_back(sqlite3_column_double(stmt.get(), i)); out.bytes += 8; break;
            case SQLITE_NULL: row.push_back(nullptr); out.bytes += 1; break;
            case SQLITE_TEXT: {
                auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), i));
                int n = sqlite3_column_bytes(stmt.get(), i);
                row.push_back(std::string(p, size_t(n)));
                out.bytes += n;
                break;
            }
            default: {  // BLOB: as hex, marked
                auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(stmt.get(), i));
                int n = sqlite3_column_bytes(stmt.get(), i);
                std::string hex;
                hex.reserve(size_t(n) * 2);
                static const char digits[] = "0123456789abcdef";
                for (int k = 0; k < n; ++k) {
                    hex += digits[p[k] >> 4];
                    hex += digits[p[k] & 15];
                }
                row.push_back({{"blob_hex", std::move(hex)}});
                out.bytes += n;
            }
            }
        }
        if (out.bytes > cfg_.max_bytes) {
            sqlite3_progress_handler(db, 0, nullptr, nullptr);
            return fail("the result is larger than " + std::to_string(cfg_.max_bytes) + " bytes (query.max_bytes)");
        }
        if (out.rows) rows += ',';
        rows += row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        ++out.rows;
        // Poll between rows too: a query that returns rows fast runs few VM steps per row.
        progress(&poller);
        if (poller.timed_out || poller.stopped) {
            rc = SQLITE_INTERRUPT;
            break;
        }
    }
    sqlite3_progress_handler(db, 0, nullptr, nullptr);
    if (poller.timed_out) {
        out.kind = QueryOutcome::Kind::timeout;
        out.error = "the query ran longer than " + std::to_string(cfg_.timeout_ms) + " ms (query.timeout_ms)";
        return out;
    }
    if (poller.stopped) {
        out.kind = QueryOutcome::Kind::stopped;
        return out;
    }
    if (rc != SQLITE_DONE) {
        if ((rc & 0xff) == SQLITE_NOMEM)
            return fail("the query needs more memory than " + std::to_string(cfg_.memory_limit_mb) +
                        " MB (query.memory_limit_mb)");
        if ((rc & 0xff) == SQLITE_TOOBIG)
            return fail(std::string(sqlite3_errmsg(db)) + " (query.max_bytes)");
        return fail(denied.empty() ? sqlite3_errmsg(db) : denied);
    }
    rows += ']';
    out.result.columns_json = columns.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out.result.rows_json = std::move(rows);
    return out;
}

}  // namespace sqlq
