#include "target/sqlite/readonly.h"

namespace sqlq::sqlite {

namespace {

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

}  // namespace

ReadOnlyPolicy::ReadOnlyPolicy(Db& db) : db_(db.get()) {
    int on = 1, off = 0;
    sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, on, nullptr);
    sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, off, nullptr);
    sqlite3_db_config(db_, SQLITE_DBCONFIG_TRUSTED_SCHEMA, off, nullptr);
    sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_TRIGGER, off, nullptr);
    sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_VIEW, on, nullptr);
    sqlite3_limit(db_, SQLITE_LIMIT_ATTACHED, 0);
    // Before the authorizer, which would refuse this PRAGMA (it has a value).
    db.exec("PRAGMA query_only=1");
    sqlite3_set_authorizer(db_, authorize, this);
}

ReadOnlyPolicy::~ReadOnlyPolicy() { sqlite3_set_authorizer(db_, nullptr, nullptr); }

int ReadOnlyPolicy::authorize(void* self, int code, const char* a, const char* b, const char*, const char*) {
    auto* policy = static_cast<ReadOnlyPolicy*>(self);
    switch (code) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_FUNCTION:
        // b is the function name; extension loading is off anyway, say so plainly.
        if (b && sqlite3_stricmp(b, "load_extension") == 0) {
            policy->denied_ = "loading extensions is not allowed";
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        if (a && readonly_pragma(a, b != nullptr)) return SQLITE_OK;
        policy->denied_ =
            std::string("PRAGMA ") + (a ? a : "") + (b ? " with a value" : "") + " is not allowed: queries are read-only";
        return SQLITE_DENY;
    default:
        if ((code == SQLITE_INSERT || code == SQLITE_UPDATE || code == SQLITE_DELETE) && a &&
            sqlite3_strnicmp(a, "sqlite_", 7) == 0) {
            policy->denied_ = "changing the schema (CREATE, DROP, ALTER) is not allowed: queries are read-only";
            return SQLITE_DENY;
        }
        policy->denied_ = std::string(action_name(code)) + " is not allowed: queries are read-only";
        return SQLITE_DENY;
    }
}

ReadOnlyPolicy::Prepared ReadOnlyPolicy::prepare(const std::string& sql) {
    denied_.clear();
    Prepared p;
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), int(sql.size()), &raw, &tail);
    p.stmt.reset(raw);  // owner first
    auto refuse = [&](std::string why) {
        p.stmt.reset();
        p.error = std::move(why);
        return std::move(p);
    };
    if (rc != SQLITE_OK) return refuse(denied_.empty() ? sqlite3_errmsg(db_) : denied_);
    if (!p.stmt) return refuse("empty query: no SQL statement");
    // Anything after the first statement but blanks and comments is a second statement.
    {
        sqlite3_stmt* next_raw = nullptr;
        const char* rest = nullptr;
        int rc2 = sqlite3_prepare_v2(db_, tail, -1, &next_raw, &rest);
        std::unique_ptr<sqlite3_stmt, Finalize> next(next_raw);
        if (next || rc2 != SQLITE_OK) return refuse("only one SQL statement per task");
    }
    if (!sqlite3_stmt_readonly(p.stmt.get())) return refuse("the statement would write: queries are read-only");
    return p;
}

}  // namespace sqlq::sqlite
