#include "target/sqlite/readonly.h"

#include <cctype>
#include <string>

namespace sqlq::sqlite {

namespace {

std::vector<std::string>& extra_functions() {
    static std::vector<std::string> names;
    return names;
}

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

// The SQL functions a query may call: SQLite's own that compute a value from their arguments
// and the rows, and nothing that reaches outside the statement. Built from `PRAGMA
// function_list` of Debian 12's SQLite 3.40.1 (ENABLE_FTS3/4/5, FTS3_TOKENIZER, RTREE,
// MATH_FUNCTIONS, JSON built in); a function not listed is refused by name, so one that a newer
// SQLite adds stays refused until it is read and listed here. Table-valued functions
// (json_each, json_tree, pragma_*) are not functions to the authorizer: it sees a READ of their
// virtual table, and pragma_* the PRAGMA itself, which the PRAGMA list above decides.
// Left out on purpose:
//   fts3_tokenizer       returns the address of a tokenizer in libsqlite3 (an ASLR leak) and,
//                        given one, installs it: the next FTS query jumps to the user's pointer
//   load_extension       loads code (also switched off on the connection)
//   fts5                 hands out the address of the FTS5 API, for C callers only
//   optimize             merges an FTS3/4 index: a write
//   sqlite_log           writes to SQLite's error log, i.e. the worker's log
//   rtreecheck, rtreenode, rtreedepth, fts5_source_id, subtype: debugging aids
//   changes, total_changes, last_insert_rowid: about writes, of which a query makes none
bool allowed_function(const char* name) {
    static const char* const allowed[] = {
        // core scalar
        "abs", "char", "coalesce", "format", "glob", "hex", "ifnull", "iif", "instr", "length", "like",
        "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "printf", "quote", "random",
        "randomblob", "replace", "round", "rtrim", "sign", "soundex", "substr", "substring", "trim", "typeof",
        "unicode", "unlikely", "upper", "zeroblob", "sqlite_version", "sqlite_source_id",
        "sqlite_compileoption_get", "sqlite_compileoption_used",
        // date and time
        "date", "time", "datetime", "julianday", "unixepoch", "strftime", "current_date", "current_time",
        "current_timestamp",
        // math (ENABLE_MATH_FUNCTIONS)
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh", "degrees",
        "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power", "radians", "sin", "sinh",
        "sqrt", "tan", "tanh", "trunc",
        // JSON
        "json", "json_array", "json_array_length", "json_extract", "json_insert", "json_object", "json_patch",
        "json_quote", "json_remove", "json_replace", "json_set", "json_type", "json_valid", "json_group_array",
        "json_group_object", "->", "->>",
        // aggregate
        "avg", "count", "group_concat", "sum", "total",
        // window
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
        "last_value", "nth_value",
        // reading FTS3/4 and FTS5 tables that the target database holds: MATCH and the ranking and
        // snippet functions, which read the table's index and nothing else
        "match", "snippet", "offsets", "matchinfo", "highlight", "bm25",
    };
    for (const char* a : allowed)
        if (sqlite3_stricmp(name, a) == 0) return true;
    for (const auto& extra : extra_functions())
        if (sqlite3_stricmp(name, extra.c_str()) == 0) return true;
    return false;
}

// The statement starts with SELECT or VALUES, so it writes nothing itself (WITH may lead to an
// INSERT: not counted).
bool reads_only(const std::string& sql) {
    size_t i = sql.find_first_not_of(" \t\r\n");
    if (i == std::string::npos) return false;
    for (const char* kw : {"SELECT", "VALUES"}) {
        size_t n = std::char_traits<char>::length(kw);
        if (sql.size() - i > n && sqlite3_strnicmp(sql.c_str() + i, kw, int(n)) == 0 &&
            !std::isalnum(static_cast<unsigned char>(sql[i + n])) && sql[i + n] != '_')
            return true;
    }
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

AllowedFunction::AllowedFunction(std::string name) : name_(std::move(name)) { extra_functions().push_back(name_); }

AllowedFunction::~AllowedFunction() {
    auto& names = extra_functions();
    for (auto it = names.begin(); it != names.end(); ++it)
        if (*it == name_) {
            names.erase(it);
            break;
        }
}

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
        // b is the function's name as SQLite registered it. An unknown name never gets here:
        // SQLite says "no such function" first.
        if (b && allowed_function(b)) return SQLITE_OK;
        policy->denied_ = std::string("the function ") + (b ? b : "") + " is not allowed";
        return SQLITE_DENY;
    case SQLITE_PRAGMA:
        if (a && readonly_pragma(a, b != nullptr)) return SQLITE_OK;
        policy->denied_ =
            std::string("PRAGMA ") + (a ? a : "") + (b ? " with a value" : "") + " is not allowed: queries are read-only";
        return SQLITE_DENY;
    case SQLITE_UPDATE:
        // SQLite asks this of its own schema table, all five columns, the first time a
        // statement uses a virtual table (json_each, pragma_table_info, an FTS table; seen on
        // 3.40.1), and runs no such UPDATE: the statement stays read-only. IGNORE (not OK) so
        // that, were it ever compiled, it would change nothing. A user's UPDATE of the schema
        // table never gets here: SQLite refuses it first ("may not be modified").
        if (a && (sqlite3_stricmp(a, "sqlite_master") == 0 || sqlite3_stricmp(a, "sqlite_schema") == 0))
            return SQLITE_IGNORE;
        [[fallthrough]];
    default:
        if ((code == SQLITE_INSERT || code == SQLITE_UPDATE || code == SQLITE_DELETE) && a &&
            sqlite3_strnicmp(a, "sqlite_", 7) == 0) {
            policy->denied_ = "changing the schema (CREATE, DROP, ALTER) is not allowed: queries are read-only";
            return SQLITE_DENY;
        }
        policy->denied_ = std::string(action_name(code)) + " is not allowed: queries are read-only";
        if ((code == SQLITE_INSERT || code == SQLITE_UPDATE || code == SQLITE_DELETE) && a)
            policy->denied_table_ = a;
        return SQLITE_DENY;
    }
}

ReadOnlyPolicy::Prepared ReadOnlyPolicy::prepare(const std::string& sql) {
    denied_.clear();
    denied_table_.clear();
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
    if (rc != SQLITE_OK && !denied_table_.empty() && reads_only(sql))
        // A SELECT names no table to write: the write was asked for by a virtual table's module
        // as it connected (an R-tree prepares writes to its shadow tables).
        return refuse("the virtual table that stores its data in " + denied_table_ +
                      " cannot be read: its module writes to that table as it opens, and queries are read-only");
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
