#include "target/sqlite/sqlite_target.h"

#include <algorithm>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "target/limit_guard.h"
#include "target/row_encoder.h"
#include "target/sqlite/progress.h"

namespace sqlq::sqlite {

SqliteTarget::Session::Session(const QueryConfig& cfg, const TempBudgetVfs& vfs)
    : db(cfg.database, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, vfs.name()), policy(db) {
    // A single value longer than max_bytes fails at once (SQLITE_TOOBIG) instead of being built
    // in memory first and counted afterwards.
    sqlite3_limit(db.get(), SQLITE_LIMIT_LENGTH, int(std::min<int64_t>(cfg.max_bytes, 1000000000)));
}

SqliteTarget::SqliteTarget(const QueryConfig& cfg)
    : cfg_(cfg), temp_(cfg.temp_limit_mb * 1024 * 1024), session_(std::make_unique<Session>(cfg_, temp_)) {
    // Process-wide (every connection of this process, the task store's too): a worker runs one
    // query at a time, so the cap is the query's. Past it, SQLite fails the allocation with
    // SQLITE_NOMEM rather than letting the worker grow until the kernel kills it.
    sqlite3_hard_heap_limit64(cfg.memory_limit_mb * 1024 * 1024);
}

void SqliteTarget::release_memory() noexcept {
    if (!worked_) return;  // called on every idle poll: only the first after work does anything
    worked_ = false;
    // Closing the connection frees its page cache, schema and virtual tables; the next task
    // opens a new one.
    session_.reset();
#if defined(__GLIBC__)
    // SQLite has freed it, but glibc keeps freed chunks in its heap, and those below the top of
    // the heap stay in the RSS until trimmed.
    malloc_trim(0);
#endif
}

QueryOutcome SqliteTarget::run(const std::string& sql, const PollFn& poll) {
    cancel_.store(false, std::memory_order_relaxed);
    worked_ = true;
    temp_.reset();
    // A temporary file still open would eat into this task's budget: only a connection that a
    // statement left behind holds one, so start afresh.
    if (temp_.used() > 0) session_.reset();
    if (!session_) {
        try {
            session_ = std::make_unique<Session>(cfg_, temp_);
        } catch (const SqliteError& e) {
            // It opened when the worker started: the file went away or broke since.
            QueryOutcome out;
            out.kind = QueryOutcome::Kind::error;
            out.error = e.what();
            return out;
        }
    }
    QueryOutcome out = run_in(*session_, sql, poll);
    // The connection lives on only after a query that ran to its end: one that was refused
    // (someone probing), failed, hit a cap or was stopped leaves it to be closed, so whatever
    // such a query did to it, past the allowlists, cannot reach the next task.
    if (out.kind != QueryOutcome::Kind::ok) session_.reset();
    return out;
}

QueryOutcome SqliteTarget::run_in(Session& session, const std::string& sql, const PollFn& poll) {
    QueryOutcome out;
    ReadOnlyPolicy& policy = session.policy;
    ReadOnlyPolicy::Prepared prepared{session.kept.take(sql), {}};
    if (prepared.stmt) policy.forget_denied();
    else prepared = policy.prepare(sql);
    if (!prepared.stmt) {
        out.kind = QueryOutcome::Kind::error;
        out.error = std::move(prepared.error);
        return out;
    }
    sqlite3_stmt* stmt = prepared.stmt.get();
    sqlite3* db = session.db.get();

    LimitGuard guard(cfg_, poll, cancel_);
    ProgressHook hook(db, guard);
    auto end = [&](QueryOutcome::Kind kind, std::string why) {
        out.kind = kind;
        out.error = std::move(why);
        out.rows = guard.rows();
        out.bytes = guard.bytes();
        return std::move(out);
    };

    // The columns are read after the first step: a statement prepared against a schema that
    // another process has changed since (a kept connection's, or a kept statement's) is prepared
    // again inside sqlite3_step, and its columns with it. Read before, `SELECT *` named the old
    // columns over rows of the new ones.
    int rc = sqlite3_step(stmt);
    RowEncoder rows;
    const int cols = sqlite3_column_count(stmt);
    for (int i = 0; i < cols; ++i) {
        const char* name = sqlite3_column_name(stmt, i);
        rows.column(name ? name : "");
    }
    // The column names are stored too.
    if (auto over = guard.add_bytes(rows.header_bytes())) return end(QueryOutcome::Kind::error, *over);
    for (; rc == SQLITE_ROW; rc = sqlite3_step(stmt)) {
        if (auto over = guard.admit_row()) return end(QueryOutcome::Kind::error, *over);
        for (int i = 0; i < cols; ++i) {
            switch (sqlite3_column_type(stmt, i)) {
            case SQLITE_INTEGER: rows.integer(sqlite3_column_int64(stmt, i)); break;
            case SQLITE_FLOAT: rows.real(sqlite3_column_double(stmt, i)); break;
            case SQLITE_NULL: rows.null(); break;
            case SQLITE_TEXT: {
                // column_text before column_bytes: the length is of the UTF-8 form.
                auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
                rows.text(std::string_view(p, size_t(sqlite3_column_bytes(stmt, i))));
                break;
            }
            default: {  // SQLITE_BLOB
                const void* p = sqlite3_column_blob(stmt, i);
                rows.blob(p, size_t(sqlite3_column_bytes(stmt, i)));
            }
            }
        }
        if (auto over = guard.add_bytes(rows.row_bytes())) return end(QueryOutcome::Kind::error, *over);
        rows.end_row();
        guard.row_done();
        // Check between rows too: a query that returns rows fast runs few VM steps per row.
        if (guard.tick()) {
            rc = SQLITE_INTERRUPT;
            break;
        }
    }
    switch (guard.stop()) {
    case LimitGuard::Stop::timeout: return end(QueryOutcome::Kind::timeout, guard.timeout_error());
    case LimitGuard::Stop::stopped: return end(QueryOutcome::Kind::stopped, "");
    case LimitGuard::Stop::none: break;
    }
    if (rc != SQLITE_DONE) {
        if ((rc & 0xff) == SQLITE_NOMEM) return end(QueryOutcome::Kind::error, guard.memory_error());
        if ((rc & 0xff) == SQLITE_FULL && temp_.exceeded())
            return end(QueryOutcome::Kind::error, guard.temp_error());
        if ((rc & 0xff) == SQLITE_TOOBIG)
            return end(QueryOutcome::Kind::error, LimitGuard::too_big_error(sqlite3_errmsg(db)));
        return end(QueryOutcome::Kind::error, policy.denied().empty() ? sqlite3_errmsg(db) : policy.denied());
    }
    out.result = std::move(rows).finish();
    session.kept.put(sql, std::move(prepared.stmt));  // ran to its end: kept for the same SQL again
    return end(QueryOutcome::Kind::ok, "");
}

}  // namespace sqlq::sqlite
