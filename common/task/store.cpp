#include "task/store.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

#include "util/backoff.h"
#include "util/clock.h"
#include "util/process.h"

namespace sqlq {

using sqlite::Db;
using sqlite::Stmt;
using sqlite::Txn;

const char* to_string(Status s) {
    switch (s) {
    case Status::queued: return "queued";
    case Status::running: return "running";
    case Status::succeeded: return "succeeded";
    case Status::failed: return "failed";
    case Status::cancelled: return "cancelled";
    }
    return "?";
}

std::optional<Status> parse_status(const std::string& s) {
    for (Status st : {Status::queued, Status::running, Status::succeeded, Status::failed, Status::cancelled})
        if (s == to_string(st)) return st;
    return std::nullopt;
}

Owner Owner::self() {
    Owner o;
    o.host = host_name();
    o.pid = getpid();
    o.start = int64_t(process_start_time(getpid()));
    return o;
}

namespace {

constexpr const char* kSchemaV1 = R"SQL(
CREATE TABLE tasks (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    sql                 TEXT    NOT NULL,
    submitter           TEXT    NOT NULL,
    status              TEXT    NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued','running','succeeded','failed','cancelled')),
    published           INTEGER NOT NULL DEFAULT 0,   -- 1 once the broker confirmed a message for it
    published_at        INTEGER,                      -- ms since the epoch, like every time here
    attempts            INTEGER NOT NULL DEFAULT 0,   -- claims so far; the current one fences writes
    executions          INTEGER NOT NULL DEFAULT 0,   -- times the query was started
    owner               TEXT,                         -- "host:pid" of the worker of the current attempt
    owner_pid           INTEGER,
    owner_start         INTEGER,                      -- that process's start time, against pid reuse
    owner_lost_at       INTEGER,                      -- when the supervisor saw that worker die
    lease_until         INTEGER,                      -- the owner renews it while it works
    created_at          INTEGER NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    error               TEXT,
    row_count           INTEGER,
    result_bytes        INTEGER,
    result_ref          TEXT,                         -- where the result is: 'results/<id>'; NULL when none or expired
    cancel_requested_at INTEGER,
    cancelled_by        TEXT,
    outcomes            INTEGER NOT NULL DEFAULT 0,   -- terminal writes; never above 1
    recovery_ms         INTEGER                       -- owner's death → the task running again
);
CREATE INDEX tasks_status ON tasks(status);
CREATE TABLE results (
    task_id    INTEGER PRIMARY KEY REFERENCES tasks(id),
    columns    TEXT    NOT NULL,
    rows       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
)SQL";

constexpr const char* kTaskColumns =
    "id, sql, submitter, status, published, attempts, executions, owner, owner_pid, owner_start, lease_until, "
    "created_at, started_at, finished_at, error, row_count, result_bytes, result_ref, cancel_requested_at, "
    "cancelled_by, outcomes, recovery_ms";

// Resets a statement when the scope ends, whatever happened (a SELECT read only partly).
struct ResetGuard {
    Stmt& s;
    ~ResetGuard() { s.reset(); }
};

std::string owner_host(const std::string& owner) {
    auto colon = owner.rfind(':');
    return colon == std::string::npos ? owner : owner.substr(0, colon);
}

}  // namespace

Task task_from_row(const Stmt& s) {
    Task t;
    t.id = s.i64(0);
    t.sql = s.text(1);
    t.submitter = s.text(2);
    t.status = parse_status(s.text(3)).value_or(Status::queued);
    t.published = s.i64(4) != 0;
    t.attempts = s.i64(5);
    t.executions = s.i64(6);
    t.owner = s.opt_text(7);
    t.owner_pid = s.i64(8);
    t.owner_start = s.i64(9);
    t.lease_until = s.opt_i64(10);
    t.created_at = s.i64(11);
    t.started_at = s.opt_i64(12);
    t.finished_at = s.opt_i64(13);
    t.error = s.opt_text(14);
    t.row_count = s.opt_i64(15);
    t.result_bytes = s.opt_i64(16);
    t.result_ref = s.opt_text(17);
    t.cancel_requested_at = s.opt_i64(18);
    t.cancelled_by = s.opt_text(19);
    t.outcomes = s.i64(20);
    t.recovery_ms = s.opt_i64(21);
    return t;
}

TaskStore::TaskStore(const std::string& path, const StoreConfig& cfg)
    : cfg_(cfg), db_([&] {
          auto dir = std::filesystem::path(path).parent_path();
          std::error_code ec;
          if (!dir.empty()) std::filesystem::create_directories(dir, ec);
          return Db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
      }()) {
    sqlite3_busy_timeout(db_.get(), cfg_.busy_timeout_ms);
    try {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) st.st_mode = 0644;
        gate_ = sqlite::WriteGate(path + "-gate", st.st_mode & 0666);
    } catch (const Error& e) {
        gate_error_ = e.what();
    }
    // Opening a fresh store takes locks that do not wait in the busy handler (switching to WAL
    // needs an exclusive lock; the first reader of a new WAL may find it being set up), so
    // processes that open it at the same moment (a fleet's first start) can see SQLITE_BUSY
    // here: retry the whole set-up, within the busy timeout.
    const int64_t give_up = mono_ms() + cfg_.busy_timeout_ms;
    for (Backoff pause(1, 100);;) {
        try {
            db_.exec("PRAGMA journal_mode=WAL");
            db_.exec("PRAGMA foreign_keys=ON");
            // "full" commits at NORMAL too, then fsyncs the WAL after the commit (persist()).
            db_.exec(cfg_.durability == "off" ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=NORMAL");
            migrate();
            return;
        } catch (const sqlite::SqliteError& e) {
            if (!e.busy() || mono_ms() >= give_up) throw;
            timespec ts{0, long(pause.next()) * 1000000};
            nanosleep(&ts, nullptr);
        }
    }
}

void TaskStore::persist() {
    // "full": every submitted task, recorded outcome and cancel request survives a power loss.
    // SQLite's synchronous=FULL would fsync inside COMMIT, holding the store's only write lock
    // across the disk flush while every other worker waits for it. Instead every commit runs
    // at NORMAL (WAL frames written, no fsync) and the caller, once the lock is released,
    // fsyncs the WAL here, before it acts on the commit (ack, confirm, answer). Workers that
    // finish at the same time flush in parallel and share the disk's flushes. A claim or a
    // lease renewal is never persisted: its message stays unacked until the outcome is.
    // "normal" fsyncs only at checkpoints; "off" never.
    if (cfg_.durability == "full") db_.sync_wal();
}

sqlite::Stmt& TaskStore::cached(const std::string& sql) {
    auto it = stmts_.find(sql);
    if (it == stmts_.end()) it = stmts_.emplace(sql, db_.prepare(sql)).first;
    it->second.reset();  // read only partly, or thrown out of mid-step
    return it->second;
}

void TaskStore::migrate() {
    auto version = [&] {
        auto s = db_.prepare("PRAGMA user_version");
        s.step();
        return s.i64(0);
    };
    if (version() >= kSchemaVersion) {
        if (version() > kSchemaVersion)
            throw Error(db_.path() + ": task store schema version " + std::to_string(version()) +
                        " is newer than this sqlq (" + std::to_string(kSchemaVersion) + ")");
        return;
    }
    auto w = writing();
    Txn txn(db_);
    int64_t v = version();  // re-read under the write lock: another process may have migrated
    if (v < 1) {
        db_.exec(kSchemaV1);
        db_.exec("PRAGMA user_version=1");
    }
    // Later versions: `if (v < 2) { ALTER TABLE ...; PRAGMA user_version=2 }`.
    txn.commit();
}

int64_t TaskStore::insert(const std::string& sql, const std::string& submitter) {
    return insert_batch({sql}, submitter).front();
}

std::vector<int64_t> TaskStore::insert_batch(const std::vector<std::string>& sqls, const std::string& submitter) {
    auto st = db_.prepare("INSERT INTO tasks(sql, submitter, status, created_at) VALUES(?, ?, 'queued', ?)");
    std::vector<int64_t> ids;
    ids.reserve(sqls.size());
    {
        auto w = writing();
        Txn txn(db_);
        for (const auto& sql : sqls) {
            st.bind(1, sql).bind(2, submitter).bind(3, now_ms()).run();
            ids.push_back(db_.last_insert_rowid());
        }
        txn.commit();
    }
    persist();
    return ids;
}

// Unconditional on the status: a worker can run the task from the message before the
// broker's confirm reaches the producer, and the flag still records that a message went out.
void TaskStore::mark_published(const std::vector<int64_t>& ids) {
    // Not persisted: losing this flag only means one more (harmless) publish by the sweeper.
    auto w = writing();
    Txn txn(db_);
    auto st = db_.prepare("UPDATE tasks SET published=1, published_at=? WHERE id=?");
    for (int64_t id : ids) st.bind(1, now_ms()).bind(2, id).run();
    txn.commit();
}

void TaskStore::mark_published(int64_t id) { mark_published(std::vector<int64_t>{id}); }

TaskStore::Claim TaskStore::claim(int64_t id, const Owner& me, int max_attempts) {
    Claim c = try_claim(id, me, max_attempts);
    // The caller acks the message of a task that ends here, or that it finds finished: make that
    // end durable first (outside the gate). A task found finished may carry another worker's
    // outcome that is committed but still waiting for that worker's sync.
    if (c.kind == ClaimKind::finished || c.kind == ClaimKind::gave_up || c.kind == ClaimKind::cancelled_now)
        persist();
    return c;
}

TaskStore::Claim TaskStore::try_claim(int64_t id, const Owner& me, int max_attempts) {
    for (int round = 0;; ++round) {
        int64_t now = now_ms();
        auto& sel = cached(
            "SELECT status, attempts, owner, owner_pid, owner_start, lease_until, cancel_requested_at, sql "
            "FROM tasks WHERE id=?");
        sel.bind(1, id);
        if (!sel.step()) return {ClaimKind::unknown};
        Status status = parse_status(sel.text(0)).value_or(Status::failed);
        int64_t attempts = sel.i64(1);
        std::string owner = sel.text(2);
        int64_t owner_pid = sel.i64(3), owner_start = sel.i64(4);
        int64_t lease = sel.opt_i64(5).value_or(0);
        bool cancel_pending = !sel.is_null(6);
        std::string sql = sel.text(7);
        sel.reset();

        if (terminal(status)) return {ClaimKind::finished, 0, status};

        int64_t changed = 0;
        auto w = writing();
        if (status == Status::queued) {
            changed = cached(
                             "UPDATE tasks SET status='running', attempts=attempts+1, executions=executions+1, "
                             "owner=?, owner_pid=?, owner_start=?, lease_until=?, started_at=? "
                             "WHERE id=? AND status='queued' AND attempts=?")
                          .bind(1, me.name()).bind(2, me.pid).bind(3, me.start)
                          .bind(4, now + cfg_.lease_ms).bind(5, now).bind(6, id).bind(7, attempts)
                          .run();
            if (changed) return {ClaimKind::claimed, attempts + 1, Status::running, 0, std::move(sql)};
        } else {
            // running: is its owner gone? On this host we can tell at once; elsewhere the lease says.
            bool local = owner_host(owner) == me.host;
            bool gone = lease < now || (local && !process_alive(pid_t(owner_pid), uint64_t(owner_start)));
            if (!gone) return {ClaimKind::held, 0, status, lease};
            const char* guard = " WHERE id=? AND status='running' AND attempts=?";
            if (cancel_pending) {
                changed = cached(std::string("UPDATE tasks SET status='cancelled', finished_at=?, "
                                                  "outcomes=outcomes+1, lease_until=NULL") + guard)
                              .bind(1, now).bind(2, id).bind(3, attempts).run();
                if (changed) return {ClaimKind::cancelled_now, 0, Status::cancelled};
            } else if (attempts >= max_attempts) {
                std::string err = "gave up after " + std::to_string(attempts) +
                                  " attempts: the worker running it died each time";
                changed = cached(std::string("UPDATE tasks SET status='failed', finished_at=?, error=?, "
                                                  "outcomes=outcomes+1, lease_until=NULL") + guard)
                              .bind(1, now).bind(2, err).bind(3, id).bind(4, attempts).run();
                if (changed) return {ClaimKind::gave_up, 0, Status::failed};
            } else {
                changed = cached(std::string(
                                          "UPDATE tasks SET attempts=attempts+1, executions=executions+1, "
                                          "owner=?, owner_pid=?, owner_start=?, lease_until=?, started_at=?, "
                                          "recovery_ms=CASE WHEN owner_lost_at IS NULL THEN recovery_ms "
                                          "ELSE ? - owner_lost_at END, owner_lost_at=NULL") + guard)
                              .bind(1, me.name()).bind(2, me.pid).bind(3, me.start)
                              .bind(4, now + cfg_.lease_ms).bind(5, now).bind(6, now)
                              .bind(7, id).bind(8, attempts)
                              .run();
                if (changed) return {ClaimKind::claimed, attempts + 1, Status::running, 0, std::move(sql)};
            }
        }
        // Someone else moved the task between our read and our write: look again.
        if (round > 100) throw Error("task " + std::to_string(id) + ": claim keeps losing races");
    }
}

TaskStore::Tick TaskStore::tick(int64_t id, int64_t token, bool renew) {
    Tick t;
    if (renew) {
        auto w = writing();
        auto& s = cached(
            "UPDATE tasks SET lease_until=? WHERE id=? AND status='running' AND attempts=? "
            "RETURNING cancel_requested_at");
        s.bind(1, now_ms() + cfg_.lease_ms).bind(2, id).bind(3, token);
        ResetGuard g{s};
        if (!s.step()) {
            t.still_owner = false;
            return t;
        }
        t.cancel_requested = !s.is_null(0);
        while (s.step()) {
        }
        return t;
    }
    auto& s = cached("SELECT status='running' AND attempts=?, cancel_requested_at IS NOT NULL FROM tasks WHERE id=?");
    s.bind(1, token).bind(2, id);
    ResetGuard g{s};
    if (!s.step()) {
        t.still_owner = false;
        return t;
    }
    t.still_owner = s.i64(0) != 0;
    t.cancel_requested = s.i64(1) != 0;
    return t;
}

bool TaskStore::finish(int64_t id, int64_t token, const Outcome& o) {
    {
        auto w = writing();
        Txn txn(db_);
        int64_t now = now_ms();
        std::optional<std::string> ref;
        if (o.result) {
            cached("INSERT OR REPLACE INTO results(task_id, columns, rows, created_at) VALUES(?,?,?,?)")
                .bind(1, id).bind(2, o.result->columns_json).bind(3, o.result->rows_json).bind(4, now)
                .run();
            ref = "results/" + std::to_string(id);
        }
        int64_t changed = cached(
                                 "UPDATE tasks SET status=?, finished_at=?, error=?, row_count=?, result_bytes=?, "
                                 "result_ref=?, outcomes=outcomes+1, lease_until=NULL "
                                 "WHERE id=? AND status='running' AND attempts=?")
                              .bind(1, to_string(o.status)).bind(2, now).bind(3, o.error).bind(4, o.row_count)
                              .bind(5, o.result_bytes).bind(6, ref).bind(7, id).bind(8, token)
                              .run();
        if (changed == 0) return false;  // fenced out: the transaction rolls back, the result with it
        txn.commit();
    }
    persist();  // outside the gate: the next writer goes on while this one waits for the disk
    return true;
}

TaskStore::CancelResult TaskStore::request_cancel(int64_t id, const std::string& by) {
    int64_t now = now_ms();
    std::optional<CancelResult> done;
    {
        auto w = writing();
        // Queued: cancelled at once, its message will be skipped.
        if (db_.prepare("UPDATE tasks SET status='cancelled', cancel_requested_at=?, cancelled_by=?, finished_at=?, "
                        "outcomes=outcomes+1 WHERE id=? AND status='queued'")
                .bind(1, now).bind(2, by).bind(3, now).bind(4, id).run())
            done = {CancelKind::cancelled, Status::cancelled};
        // Running: ask its worker, which stops the query and records the cancel.
        else if (db_.prepare("UPDATE tasks SET cancel_requested_at=coalesce(cancel_requested_at, ?), "
                             "cancelled_by=coalesce(cancelled_by, ?) WHERE id=? AND status='running'")
                     .bind(1, now).bind(2, by).bind(3, id).run())
            done = {CancelKind::requested, Status::running};
    }
    if (done) {
        persist();
        return *done;
    }
    auto t = get(id);
    if (!t) return {CancelKind::unknown};
    // States only move forward, so anything else is terminal now.
    return {CancelKind::already_finished, t->status};
}

std::optional<Task> TaskStore::get(int64_t id) {
    auto& s = cached(std::string("SELECT ") + kTaskColumns + " FROM tasks WHERE id=?");
    ResetGuard g{s};
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    return task_from_row(s);
}

std::vector<Task> TaskStore::list(std::optional<Status> status, int64_t limit) {
    auto s = db_.prepare(std::string("SELECT ") + kTaskColumns +
                         " FROM tasks WHERE (?1 IS NULL OR status=?1) ORDER BY id DESC LIMIT ?2");
    if (status) s.bind(1, to_string(*status));
    s.bind(2, limit);
    std::vector<Task> out;
    while (s.step()) out.push_back(task_from_row(s));
    return out;
}

std::optional<ResultData> TaskStore::result(int64_t id) {
    auto s = db_.prepare("SELECT columns, rows FROM results WHERE task_id=?");
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    return ResultData{s.text(0), s.text(1)};
}

std::map<std::string, int64_t> TaskStore::counts() {
    std::map<std::string, int64_t> out;
    for (Status st : {Status::queued, Status::running, Status::succeeded, Status::failed, Status::cancelled})
        out[to_string(st)] = 0;
    auto s = db_.prepare("SELECT status, count(*) FROM tasks GROUP BY status");
    while (s.step()) out[s.text(0)] = s.i64(1);
    return out;
}

std::vector<int64_t> TaskStore::to_republish(int64_t unpublished_ms, int64_t stale_ms, bool queue_idle) {
    int64_t now = now_ms();
    auto s = db_.prepare(
        "SELECT id FROM tasks WHERE "
        " (status='queued' AND published=0 AND created_at < ?1)"
        " OR (?3 AND status='queued' AND published=1 AND published_at < ?2)"
        " OR (status='running' AND lease_until < ?2 AND (published_at IS NULL OR published_at < ?2))"
        " ORDER BY id LIMIT 1000");
    s.bind(1, now - unpublished_ms).bind(2, now - stale_ms).bind(3, int64_t(queue_idle));
    std::vector<int64_t> ids;
    while (s.step()) ids.push_back(s.i64(0));
    return ids;
}

void TaskStore::owner_lost(int64_t id, const Owner& owner) {
    auto w = writing();
    db_.prepare("UPDATE tasks SET owner_lost_at=? WHERE id=? AND status='running' AND owner_pid=? AND owner_start=?")
        .bind(1, now_ms()).bind(2, id).bind(3, owner.pid).bind(4, owner.start)
        .run();
}

int64_t TaskStore::expire_results(int64_t ttl_s) {
    int64_t cutoff = now_ms() - ttl_s * 1000;
    auto w = writing();
    Txn txn(db_);
    int64_t n = db_.prepare("DELETE FROM results WHERE created_at < ?").bind(1, cutoff).run();
    db_.prepare("UPDATE tasks SET result_ref=NULL WHERE result_ref IS NOT NULL AND finished_at < ?")
        .bind(1, cutoff)
        .run();
    txn.commit();
    return n;
}

TaskStore::AuditFigures TaskStore::audit() {
    AuditFigures f;
    f.by_status = counts();
    int64_t now = now_ms();
    {
        auto s = db_.prepare(
            "SELECT count(*) FILTER (WHERE published=0 AND status IN ('queued','running')),"
            " count(*) FILTER (WHERE outcomes > 1),"
            " coalesce(sum(max(executions - 1, 0)), 0) FROM tasks");
        s.step();
        f.unpublished = s.i64(0);
        f.duplicate_outcomes = s.i64(1);
        f.reexecuted = s.i64(2);
    }
    {
        auto s = db_.prepare("SELECT id, owner, owner_pid, owner_start, lease_until FROM tasks WHERE status='running'");
        while (s.step()) {
            bool local = owner_host(s.text(1)) == host_name();
            bool alive = local ? process_alive(pid_t(s.i64(2)), uint64_t(s.i64(3)))
                               : s.opt_i64(4).value_or(0) >= now;
            if (!alive) f.stuck_ids.push_back(s.i64(0));
        }
        f.stuck = int64_t(f.stuck_ids.size());
    }
    {
        auto s = db_.prepare(
            "SELECT count(*) FROM tasks WHERE status='queued' AND coalesce(published_at, created_at) < ?");
        s.bind(1, now - 5000);
        s.step();
        f.queued_stale = s.i64(0);
    }
    {
        auto s = db_.prepare("SELECT recovery_ms FROM tasks WHERE recovery_ms IS NOT NULL ORDER BY recovery_ms");
        while (s.step()) f.recovery_ms.push_back(s.i64(0));
    }
    return f;
}

}  // namespace sqlq
