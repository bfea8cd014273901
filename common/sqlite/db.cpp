#include "sqlite/db.h"

#include <algorithm>

namespace sqlq::sqlite {

Db::Db(const std::string& path, int flags, const char* vfs) : path_(path) {
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_EXRESCODE, vfs);
    db_.reset(raw);  // owner first: open allocates a handle even when it fails
    if (rc != SQLITE_OK) fail("cannot open", rc);
}

void Db::fail(const std::string& doing, int rc) const {
    std::string msg = db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
    throw SqliteError(path_ + ": " + doing + ": " + msg, rc);
}

Blob::Blob(const Db& db, const char* table, const char* column, int64_t rowid) : db_(&db) {
    sqlite3_blob* b = nullptr;
    const int rc = sqlite3_blob_open(db.get(), "main", table, column, rowid, /*flags (read-only)=*/0, &b);
    b_.reset(b);  // owned before the check: a failed open may still leave a handle to close
    if (rc != SQLITE_OK) db.fail(std::string("cannot read ") + table + "." + column, rc);
}

void Blob::read(char* buf, int n, int64_t offset) {
    const int rc = sqlite3_blob_read(b_.get(), buf, n, int(offset));
    if (rc != SQLITE_OK) db_->fail("cannot read a stored value", rc);
}

void Db::sync_wal() {
    // A failed sync is not a SqliteError: the commit is done and visible, only its place on disk
    // is in doubt, so no caller may treat it as "not written, try again" (and retrying an fsync
    // on Linux proves nothing: the failed pages may have been marked clean).
    auto failed = [&](const char* doing, int rc) {
        return Error(path_ + ": " + doing + ": " + sqlite3_errstr(rc) +
                     " (the last commit may not survive a power loss)");
    };
    sqlite3_file* wal = nullptr;
    if (int rc = sqlite3_file_control(db_.get(), "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal); rc != SQLITE_OK)
        throw failed("cannot reach the write-ahead log", rc);
    if (!wal || !wal->pMethods) return;  // not opened: nothing written through this connection
    if (int rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL | SQLITE_SYNC_DATAONLY); rc != SQLITE_OK)
        throw failed("cannot sync the write-ahead log", rc);
}

void Db::exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        throw SqliteError(path_ + ": " + msg, sqlite3_extended_errcode(db_.get()));
    }
}

namespace {
const char* const kVerbs[] = {"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"};
}

sqlite3_stmt* Db::verb(TxnVerb verb) noexcept {
    auto& s = verbs_[size_t(verb)];
    if (!s) {
        sqlite3_stmt* p = nullptr;
        if (sqlite3_prepare_v3(db_.get(), kVerbs[size_t(verb)], -1, SQLITE_PREPARE_PERSISTENT, &p, nullptr) != SQLITE_OK)
            return nullptr;
        s.reset(p);
    }
    return s.get();
}

int Db::try_exec(TxnVerb v) noexcept {
    sqlite3_stmt* s = verb(v);
    if (!s) return sqlite3_errcode(db_.get());
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

void Db::exec(TxnVerb v) {
    sqlite3_stmt* s = verb(v);
    int rc = s ? sqlite3_step(s) : sqlite3_errcode(db_.get());
    if (rc != SQLITE_DONE) {
        // Read before the reset, which may set another.
        SqliteError e(path_ + ": " + sqlite3_errmsg(db_.get()), sqlite3_extended_errcode(db_.get()));
        if (s) sqlite3_reset(s);
        throw e;
    }
    sqlite3_reset(s);
}

Stmt Db::prepare(std::string_view sql) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v3(db_.get(), sql.data(), int(sql.size()), SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(s);
        fail("cannot prepare \"" + std::string(sql.substr(0, 60)) + "\"", rc);
    }
    return Stmt(*this, s);
}

Stmt& Stmt::bind(int i, int64_t v) {
    if (int rc = sqlite3_bind_int64(s_.get(), i, v); rc != SQLITE_OK) db_->fail("bind", rc);
    return *this;
}
Stmt& Stmt::bind(int i, std::string_view v) {
    if (int rc = sqlite3_bind_text64(s_.get(), i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8); rc != SQLITE_OK)
        db_->fail("bind", rc);
    return *this;
}
Stmt& Stmt::bind(int i, std::nullopt_t) {
    if (int rc = sqlite3_bind_null(s_.get(), i); rc != SQLITE_OK) db_->fail("bind", rc);
    return *this;
}

bool Stmt::step() {
    int rc = sqlite3_step(s_.get());
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    int code = sqlite3_extended_errcode(db_->get());
    sqlite3_reset(s_.get());
    db_->fail("cannot run \"" + std::string(sqlite3_sql(s_.get())).substr(0, 60) + "\"", code);
}

int64_t Stmt::run() {
    while (step()) {
    }
    int64_t n = db_->changes();
    reset();
    return n;
}

void Stmt::reset() noexcept {
    sqlite3_reset(s_.get());
    sqlite3_clear_bindings(s_.get());
}

std::string Stmt::text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_.get(), col));
    int n = sqlite3_column_bytes(s_.get(), col);
    return p ? std::string(p, size_t(n)) : std::string();
}

std::string Blob::prefix(int64_t n) {
    std::string out(size_t(std::max<int64_t>(0, std::min(n, size()))), '\0');
    if (!out.empty()) read(out.data(), int(out.size()), 0);
    return out;
}

ReadTxn::ReadTxn(Db& db) : db_(db) { db_.exec(Db::TxnVerb::begin); }

ReadTxn::~ReadTxn() {
    db_.try_exec(Db::TxnVerb::commit);  // reads only: nothing to lose
}

Txn::Txn(Db& db) : db_(db) { db_.exec(Db::TxnVerb::begin_immediate); }

Txn::~Txn() {
    if (open_) db_.try_exec(Db::TxnVerb::rollback);  // error swallowed: destructor
}

void Txn::commit() {
    db_.exec(Db::TxnVerb::commit);
    open_ = false;
}

}  // namespace sqlq::sqlite
