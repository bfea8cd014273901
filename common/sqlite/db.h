#pragma once
// RAII over SQLite: a Db owns one sqlite3*, a Stmt one prepared statement, a Txn one
// transaction (rolled back unless committed). Errors keep SQLite's primary and extended code.
#include <cstdint>
#include <array>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <sqlite3.h>

#include "util/error.h"

namespace sqlq::sqlite {

// Transient (StoreError::transient): the write could not happen now, but may later (busy, disk
// full, I/O error, cannot open): the caller keeps its message unacked. Resource (NOMEM, TOOBIG):
// see StoreError::resource().
class SqliteError : public StoreError {
public:
    SqliteError(const std::string& what, int code)
        : StoreError(what, is_transient(code), is_resource(code) ? Cause::resource : Cause::other), code_(code) {}
    int code() const noexcept { return code_; }              // extended code
    int primary() const noexcept { return code_ & 0xff; }
    bool busy() const noexcept { return primary() == SQLITE_BUSY || primary() == SQLITE_LOCKED; }

private:
    static bool is_transient(int code) noexcept {
        int p = code & 0xff;
        return p == SQLITE_BUSY || p == SQLITE_LOCKED || p == SQLITE_FULL || p == SQLITE_IOERR || p == SQLITE_CANTOPEN;
    }
    static bool is_resource(int code) noexcept {
        int p = code & 0xff;
        return p == SQLITE_NOMEM || p == SQLITE_TOOBIG;
    }
    int code_;
};

struct CloseDb {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct Finalize {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
struct CloseBlob {
    void operator()(sqlite3_blob* b) const noexcept { sqlite3_blob_close(b); }
};

class Stmt;

class Db {
public:
    // flags: SQLITE_OPEN_* ; vfs: a registered VFS's name, or null for the default. Throws
    // SqliteError naming the path.
    Db(const std::string& path, int flags, const char* vfs = nullptr);
    sqlite3* get() const noexcept { return db_.get(); }
    const std::string& path() const noexcept { return path_; }

    void exec(const char* sql);  // statements without results
    // The statements that open and close a transaction, prepared once and kept: sqlite3_exec
    // parses its SQL at every call, and a worker runs two transactions per task (4 % of its
    // CPU was the parsing of BEGIN and COMMIT). Throws SqliteError as exec() does.
    enum class TxnVerb { begin, begin_immediate, commit, rollback };
    void exec(TxnVerb verb);
    // The same, for a destructor: an error is returned, never thrown.
    int try_exec(TxnVerb verb) noexcept;
    Stmt prepare(std::string_view sql);
    int64_t changes() const noexcept { return sqlite3_changes64(db_.get()); }
    int64_t last_insert_rowid() const noexcept { return sqlite3_last_insert_rowid(db_.get()); }
    [[noreturn]] void fail(const std::string& doing, int rc) const;
    // fdatasync of the write-ahead log through SQLite's own handle of it (its VFS xSync), so
    // that every transaction committed before the call survives a power loss. No lock is
    // held: others commit while this one waits for the disk. No-op outside WAL mode. Throws
    // Error (not SqliteError: nothing to retry) when the sync fails.
    void sync_wal();

private:
    std::unique_ptr<sqlite3, CloseDb> db_;
    std::string path_;
    sqlite3_stmt* verb(TxnVerb verb) noexcept;  // prepared on first use; null: could not be
    // After db_: finalized before the connection closes.
    std::array<std::unique_ptr<sqlite3_stmt, Finalize>, 4> verbs_;
};

class Stmt {
public:
    Stmt(const Db& db, sqlite3_stmt* s) : db_(&db), s_(s) {}
    sqlite3_stmt* get() const noexcept { return s_.get(); }

    Stmt& bind(int i, int64_t v);
    Stmt& bind(int i, int v) { return bind(i, int64_t{v}); }
    Stmt& bind(int i, std::string_view v);
    Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
    Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
    Stmt& bind(int i, std::nullopt_t);
    Stmt& bind(int i, const std::optional<int64_t>& v) { return v ? bind(i, *v) : bind(i, std::nullopt); }
    Stmt& bind(int i, const std::optional<std::string>& v) {
        return v ? bind(i, std::string_view(*v)) : bind(i, std::nullopt);
    }

    // Steps once: true when a row is ready, false when done. Throws on error.
    bool step();
    // Steps to the end (a statement without rows) and resets; returns sqlite3_changes.
    int64_t run();
    void reset() noexcept;

    bool is_null(int col) const { return sqlite3_column_type(s_.get(), col) == SQLITE_NULL; }
    int64_t i64(int col) const { return sqlite3_column_int64(s_.get(), col); }
    std::optional<int64_t> opt_i64(int col) const {
        return is_null(col) ? std::nullopt : std::optional<int64_t>(i64(col));
    }
    std::string text(int col) const;
    std::optional<std::string> opt_text(int col) const {
        return is_null(col) ? std::nullopt : std::optional<std::string>(text(col));
    }

private:
    const Db* db_;
    std::unique_ptr<sqlite3_stmt, Finalize> s_;
};

// Incremental reads of one TEXT or BLOB value (sqlite3_blob_*): a big value read a block at a
// time, never whole. The handle holds a read transaction on its connection until it is closed,
// so it reads one snapshot, whatever other connections write meanwhile.
class Blob {
public:
    // Opens table.column of the row `rowid` of the main database, read-only. Throws SqliteError.
    Blob(const Db& db, const char* table, const char* column, int64_t rowid);
    int64_t size() const noexcept { return sqlite3_blob_bytes(b_.get()); }
    // Reads `n` bytes at `offset` (within size()). Throws SqliteError.
    void read(char* buf, int n, int64_t offset);
    // Up to `n` bytes from the start (fewer when the value is shorter): a part of a value
    // without loading the whole of it, as substr() or sqlite3_column_text() would.
    std::string prefix(int64_t n);

private:
    const Db* db_;
    std::unique_ptr<sqlite3_blob, CloseBlob> b_;
};

// A read transaction over several statements (BEGIN DEFERRED ... COMMIT): one snapshot, and one
// set of the WAL's read locks instead of one per statement. Ends when it goes out of scope.
class ReadTxn {
public:
    explicit ReadTxn(Db& db);
    ~ReadTxn();
    ReadTxn(const ReadTxn&) = delete;
    ReadTxn& operator=(const ReadTxn&) = delete;

private:
    Db& db_;
};

// BEGIN IMMEDIATE (takes the write lock up front, so a busy store fails at the start, not at
// COMMIT); rolls back in the destructor unless committed.
class Txn {
public:
    explicit Txn(Db& db);
    ~Txn();
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    void commit();

private:
    Db& db_;
    bool open_ = true;
};

}  // namespace sqlq::sqlite
