#include "task/sqlite_store.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <optional>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "task/engine_rules.h"
#include "task/sqlite_watch.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/files.h"
#include "util/process.h"

namespace sqlq {

using engine::gave_up_error;
using engine::owner_host;
using engine::queue_full;
using engine::too_long_error;

using sqlite::Db;
using sqlite::Stmt;
using sqlite::Txn;

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

// Fairness: the users' order (users.served: a counter, the last claim of one of their queued
// tasks), and the indexes the choice of the next task reads: the waiting users one by one, each
// one's oldest task and its running count, and a message's running task. tasks_status gives way
// to tasks_queue, which starts with the same column.
constexpr const char* kSchemaV4 = R"SQL(
CREATE TABLE users (
    name   TEXT    PRIMARY KEY,
    served INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX users_served ON users(served);
CREATE TRIGGER tasks_served AFTER UPDATE OF status ON tasks
    WHEN old.status = 'queued' AND new.status = 'running'
BEGIN
    INSERT INTO users(name, served) VALUES (new.submitter, (SELECT coalesce(max(served), 0) + 1 FROM users))
        ON CONFLICT(name) DO UPDATE SET served = excluded.served;
END;
DROP INDEX tasks_status;
CREATE INDEX tasks_queue ON tasks(status, submitter, id);
CREATE INDEX tasks_unit ON tasks(unit);
)SQL";

// The claim's trigger again, writing users.served only when it changes the order: a user who is
// already the one served last stays so without it. A burst of one user's claims (the common
// case: one user's many queries) wrote the users row and moved its users_served entry at every
// claim: two of the eight pages of write-ahead log that an outcome and the next claim wrote.
constexpr const char* kSchemaV7 = R"SQL(
DROP TRIGGER tasks_served;
CREATE TRIGGER tasks_served AFTER UPDATE OF status ON tasks
    WHEN old.status = 'queued' AND new.status = 'running'
     AND coalesce((SELECT served FROM users WHERE name = new.submitter), -1)
         <> (SELECT coalesce(max(served), 0) FROM users)
BEGIN
    INSERT INTO users(name, served) VALUES (new.submitter, (SELECT coalesce(max(served), 0) + 1 FROM users))
        ON CONFLICT(name) DO UPDATE SET served = excluded.served;
END;
)SQL";

// A result this small (columns and rows, JSON) is stored in its task's row (schema 8), not in
// `results`: the outcome then writes one B-tree page less (the results table's leaf, and the
// reads down to it), a seventh of a trivial task's WAL. Small enough that the task rows, which
// list() and the claims read, stay about as compact as they were.
constexpr size_t kInlineResultBytes = 512;

// A list shows this many characters of a task's SQL (store.h); get() at most kGetChars.
constexpr int64_t kPreviewChars = 1000;
constexpr int64_t kGetChars = 1 << 20;

// The first `chars` characters of a UTF-8 text, counted as SQLite's substr() counts them (a lead
// byte and the continuation bytes after it). `bytes` may be a prefix of a longer text: read
// 4 × chars bytes and no whole character is cut.
std::string sql_prefix(std::string bytes, int64_t chars) {
    size_t i = 0;
    for (int64_t n = 0; i < bytes.size() && n < chars; ++n) {
        const auto lead = static_cast<unsigned char>(bytes[i++]);
        if (lead >= 0xc0)
            while (i < bytes.size() && (static_cast<unsigned char>(bytes[i]) & 0xc0) == 0x80) ++i;
    }
    bytes.resize(i);
    return bytes;
}

// The first `chars` characters of task `id`'s SQL, read in place: substr() or a column read
// would load the whole text (a 200 MB one: 200 MB of memory for a look at its first line).
std::string read_sql_prefix(Db& db, int64_t id, int64_t sql_bytes, int64_t chars) {
    if (sql_bytes <= 0) return {};
    auto in_own_table = db.prepare("SELECT 1 FROM task_sql WHERE task_id=?");  // the rowid only
    const bool own = in_own_table.bind(1, id).step();
    in_own_table.reset();
    sqlite::Blob b = own ? sqlite::Blob(db, "task_sql", "sql", id) : sqlite::Blob(db, "tasks", "sql", id);
    return sql_prefix(b.prefix(std::min(b.size(), 4 * chars)), chars);
}

// A task's whole SQL text, in its own table (schema v3) or, for a task stored before, in its row.
constexpr const char* kSqlOf = "coalesce((SELECT sql FROM task_sql WHERE task_id=tasks.id), tasks.sql)";

// The columns task_from_row reads: list() and changes() read the preview stored beside the
// text (list_row()); get() reads none (''), then its part of the text in place
// (read_sql_prefix).
std::string task_columns(const char* sql_column) {
    return std::string("id, ") + sql_column +
           ", submitter, status, published, attempts, executions, owner, owner_pid, owner_start, lease_until, "
           "created_at, started_at, finished_at, error, row_count, result_bytes, result_ref, cancel_requested_at, "
           "cancelled_by, outcomes, recovery_ms, sql_bytes";
}
const std::string kTaskColumns = task_columns("''");          // get()
const std::string kListColumns = task_columns("sql_preview");  // list(), changes()

// Resets a statement when the scope ends, whatever happened (a SELECT read only partly).
struct ResetGuard {
    Stmt& s;
    ~ResetGuard() { s.reset(); }
};


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
    t.sql_bytes = s.i64(22);
    t.sql_truncated = int64_t(t.sql.size()) < t.sql_bytes;
    return t;
}

}  // namespace

SqliteStore::SqliteStore(const StoreConfig& cfg, StoreDeps deps)
    : cfg_(cfg), deps_(std::move(deps)), db_([&] {
          // Every query and result of every user is in the store: a new one is private
          // (util/files.h). SQLite gives the -wal and -shm files the mode of the database file,
          // and so does the writer gate.
          create_private_file(cfg.path);
          return Db(cfg.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
      }()) {
    if (!deps_.clock) deps_.clock = StoreDeps::wall_clock;
    if (!deps_.owner_alive) deps_.owner_alive = StoreDeps::local_process;
    sqlite3_busy_timeout(db_.get(), cfg_.busy_timeout_ms);
    try {
        struct stat st {};
        if (::stat(cfg_.path.c_str(), &st) != 0) st.st_mode = 0600;
        gate_ = sqlite::WriteGate(cfg_.path + "-gate", st.st_mode & 0666);
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
            // A new store gives the pages of expired results back (expire_results runs the
            // incremental vacuum). It takes only on a file with no table yet, and before the
            // switch to WAL; on an existing store the pragma would still write (and fail on a
            // full disk), so it is only sent to an empty one.
            if (db_.prepare("SELECT 1 FROM sqlite_master LIMIT 1").step() == false)
                db_.exec("PRAGMA auto_vacuum=INCREMENTAL");
            db_.exec("PRAGMA journal_mode=WAL");
            db_.exec("PRAGMA foreign_keys=ON");
            // "full" commits at NORMAL too, then fsyncs the WAL after the commit (persist()).
            db_.exec(cfg_.durability == "off" ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=NORMAL");
            // After a checkpoint resets the log, cut the file back to this size: a burst of
            // large results must not leave a WAL of gigabytes behind.
            db_.exec("PRAGMA journal_size_limit=67108864");
            migrate();
            return;
        } catch (const sqlite::SqliteError& e) {
            if (!e.busy() || mono_ms() >= give_up) throw;
            timespec ts{0, long(pause.next()) * 1000000};
            nanosleep(&ts, nullptr);
        }
    }
}

bool SqliteStore::owner_gone(const Owner& owner, int64_t lease_until, int64_t now) const {
    return engine::owner_gone(deps_, owner, lease_until, now);
}

std::string SqliteStore::warning() const {
    if (gate_error_.empty()) return {};
    return gate_error_ + "; writes wait in SQLite's busy handler instead (slower with many workers)";
}

std::unique_ptr<StoreWatch> SqliteStore::watch() {
    try {
        return std::make_unique<SqliteWatch>(cfg_.path);
    } catch (const Error&) {
        return std::make_unique<PollingWatch>();  // out of inotify instances: the caller polls
    }
}

void SqliteStore::persist() {
    // "full": every submitted task, recorded outcome and cancel request survives a power loss.
    // SQLite's synchronous=FULL would fsync inside COMMIT, holding the store's only write lock
    // across the disk flush while every other worker waits for it. Instead every commit runs
    // at NORMAL (WAL frames written, no fsync) and the caller, once the lock is released,
    // fsyncs the WAL here, before it acts on the commit (ack, confirm, answer). The syncs are
    // grouped (sqlite/write_gate.h): workers that finish at the same time share one fsync. A
    // claim or a lease renewal is never persisted: its message stays unacked until the outcome
    // is. "normal" fsyncs only at checkpoints; "off" never.
    if (cfg_.durability == "full") gate_.sync_through([this] { db_.sync_wal(); });
}

sqlite::Stmt& SqliteStore::cached(const std::string& sql) {
    auto it = stmts_.find(sql);
    if (it == stmts_.end()) it = stmts_.emplace(sql, db_.prepare(sql)).first;
    it->second.reset();  // read only partly, or thrown out of mid-step
    return it->second;
}

void SqliteStore::migrate() {
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
    if (v < 2) {
        // Why the last worker holding the task was lost, for the error of a task given up.
        db_.exec("ALTER TABLE tasks ADD COLUMN lost_reason TEXT");
        // The SQL text's length in bytes, stored with it: a claim decides on it without reading
        // the text (SQLite's length() of a TEXT column loads the whole value).
        db_.exec("ALTER TABLE tasks ADD COLUMN sql_bytes INTEGER NOT NULL DEFAULT 0");
        db_.exec("UPDATE tasks SET sql_bytes=length(CAST(sql AS BLOB))");
        db_.exec("PRAGMA user_version=2");
    }
    if (v < 3) {
        // The SQL text moves out of the task's row, into a table of its own: an UPDATE of any
        // column of a row loads the whole row, so every status change of a task (its claim, its
        // failure, its outcome) loaded its text, 2x its size (400 MB of memory for a 200 MB
        // text, measured): a text too big for a worker's memory cap could not even be failed.
        // Tasks stored before keep theirs in the row (moving it would load it: 2x the largest).
        db_.exec("CREATE TABLE task_sql (task_id INTEGER PRIMARY KEY REFERENCES tasks(id), sql TEXT NOT NULL)");
        // The first 1,000 characters of the SQL, written at insert, for list() and changes():
        // substr() on the text loads all of it, for every task listed. Tasks stored before have
        // NULL there and their preview read in place when listed (list_row()): filling it in
        // here would rewrite, and so load, each row.
        db_.exec("ALTER TABLE tasks ADD COLUMN sql_preview TEXT");
        db_.exec("PRAGMA user_version=3");
    }
    if (v < 4) {
        // Fairness (docs/architecture.md): the message whose delivery runs a task (its unit of
        // work), and when each user was last served, kept by the claim of a queued task itself.
        db_.exec("ALTER TABLE tasks ADD COLUMN unit INTEGER");
        db_.exec(kSchemaV4);
        db_.exec("PRAGMA user_version=4");
    }
    if (v < 5) {
        // The fleet-wide view: each supervisor's record of itself and its workers (sqlq workers).
        db_.exec("CREATE TABLE fleets (host TEXT NOT NULL, run_dir TEXT NOT NULL, pid INTEGER NOT NULL, "
                 "interval_ms INTEGER NOT NULL, workers TEXT NOT NULL, heartbeat_at INTEGER NOT NULL, "
                 "PRIMARY KEY (host, run_dir)) WITHOUT ROWID");
        db_.exec("PRAGMA user_version=5");
    }
    if (v < 6) {
        // A task's unit (the message whose delivery runs it) is its own id unless written: the
        // index is on coalesce(unit, id), and a claim by the task's own message, the usual case,
        // leaves the column alone. Moving the task's entry from the NULLs to its id cost every
        // claim two index pages of WAL.
        db_.exec("DROP INDEX tasks_unit; CREATE INDEX tasks_unit ON tasks(coalesce(unit, id))");
        db_.exec("PRAGMA user_version=6");
    }
    if (v < 7) {
        db_.exec(kSchemaV7);
        db_.exec("PRAGMA user_version=7");
    }
    if (v < 8) {
        // A small result in its task's row (kInlineResultBytes); NULL otherwise, and once expired.
        db_.exec("ALTER TABLE tasks ADD COLUMN result_columns TEXT");
        db_.exec("ALTER TABLE tasks ADD COLUMN result_rows TEXT");
        db_.exec("PRAGMA user_version=8");
    }
    txn.commit();
}

std::vector<int64_t> SqliteStore::insert_batch(const std::vector<std::string>& sqls, const std::string& submitter,
                                               const InsertRules& rules) {
    auto st = db_.prepare(
        "INSERT INTO tasks(sql, submitter, status, created_at, sql_bytes, sql_preview) VALUES('', ?, 'queued', ?, ?, ?)");
    auto text = db_.prepare("INSERT INTO task_sql(task_id, sql) VALUES(?, ?)");
    std::vector<int64_t> ids;
    ids.reserve(sqls.size());
    {
        auto w = writing();
        Txn txn(db_);
        if (rules.max_queued_per_user > 0) {
            auto n = db_.prepare("SELECT count(*) FROM tasks WHERE status='queued' AND submitter=?");
            n.bind(1, submitter).step();
            if (n.i64(0) + int64_t(sqls.size()) > rules.max_queued_per_user)
                throw queue_full(submitter, n.i64(0), int64_t(sqls.size()), rules.max_queued_per_user);
        }
        for (const auto& sql : sqls) {
            st.bind(1, submitter).bind(2, deps_.clock()).bind(3, int64_t(sql.size()))
                .bind(4, sql_prefix(sql.substr(0, 4 * kPreviewChars), kPreviewChars))
                .run();
            ids.push_back(db_.last_insert_rowid());
            text.bind(1, ids.back()).bind(2, sql).run();
        }
        txn.commit();
    }
    persist();
    return ids;
}

// Unconditional on the status: a worker can run the task from the message before the
// broker's confirm reaches the producer, and the flag still records that a message went out.
void SqliteStore::mark_published(const std::vector<int64_t>& ids) {
    // Not persisted: losing this flag only means one more (harmless) publish by the sweeper.
    auto w = writing();
    Txn txn(db_);
    auto st = db_.prepare("UPDATE tasks SET published=1, published_at=? WHERE id=?");
    for (int64_t id : ids) st.bind(1, deps_.clock()).bind(2, id).run();
    txn.commit();
}

class SqliteStore::Scope final : public ClaimScope {
public:
    explicit Scope(SqliteStore& s) : s_(s), gate_(s.writing()), txn_(std::in_place, s.db_) { s_.claim_scope_ = this; }
    ~Scope() override { s_.claim_scope_ = nullptr; }
    // A claim that ended its task is made durable after the commit, outside the gate.
    void persist_after() { persist_ = true; }
    void commit() override {
        // A statement that ran out of memory or disk may have rolled the whole transaction back.
        if (!sqlite3_get_autocommit(s_.db_.get())) txn_->commit();
        txn_.reset();
        gate_.reset();
        s_.claim_scope_ = nullptr;
        if (persist_) s_.persist();
    }

private:
    SqliteStore& s_;
    std::optional<sqlite::WriteGate::Held> gate_;
    std::optional<Txn> txn_;
    bool persist_ = false;
};

std::unique_ptr<TaskStore::ClaimScope> SqliteStore::claim_scope(const ClaimRules& rules) {
    // Inside a scope already (finish_then_claim): its transaction is the claim's.
    if (rules.max_running_per_user > 0 || claim_scope_) return nullptr;
    return std::make_unique<Scope>(*this);
}

TaskStore::Claim SqliteStore::claim_as(int64_t id, const Owner& me, const ClaimRules& rules, int64_t unit) {
    Claim c = try_claim(id, me, rules, unit);
    // The caller acks the message of a task that ends here, or that it finds finished: make that
    // end durable first (outside the gate). A task found finished may carry another worker's
    // outcome that is committed but still waiting for that worker's sync.
    if (c.kind == ClaimKind::finished || c.kind == ClaimKind::gave_up || c.kind == ClaimKind::cancelled_now ||
        c.kind == ClaimKind::refused || c.kind == ClaimKind::past_deadline) {
        // Grouped (persist()) when the task was read under the gate: in a claim scope, or before a
        // write of ours. Found finished outside the gate, the outcome may be a worker's that died
        // after its COMMIT and before its release of the gate: no count covers it yet (the next
        // holder's takeover counts it), so it is synced unconditionally.
        if (claim_scope_) claim_scope_->persist_after();
        else if (c.kind == ClaimKind::finished && cfg_.durability == "full") db_.sync_wal();
        else persist();
    }
    return c;
}

TaskStore::Claim SqliteStore::try_claim(int64_t id, const Owner& me, const ClaimRules& rules, int64_t unit) {
    for (int round = 0;; ++round) {
        int64_t now = deps_.clock();
        // The SQL text of a queued task is read here only when it is within max_sql_bytes
        // (SQLite loads a column inside a CASE branch only when the branch is taken); a running
        // one's only once the takeover below has won: while its owner lives, a waiting worker
        // asks again every 50 ms, and must not load the text each time. Not with UPDATE ...
        // RETURNING: its ephemeral table cost a quarter of the worker's CPU per task.
        auto& sel = cached(std::string(
            "SELECT status, attempts, owner, owner_pid, owner_start, lease_until, cancel_requested_at, "
            "sql_bytes, lost_reason, started_at, "
            "CASE WHEN status='queued' AND sql_bytes <= ?2 THEN ") + kSqlOf + " END, created_at, "
            "coalesce(unit, id) "
            "FROM tasks WHERE id=?1");
        sel.bind(1, id).bind(2, rules.max_sql_bytes);
        if (!sel.step()) return {ClaimKind::unknown};
        Status status = parse_status(sel.text(0)).value_or(Status::failed);
        int64_t attempts = sel.i64(1);
        std::string owner = sel.text(2);
        int64_t owner_pid = sel.i64(3), owner_start = sel.i64(4);
        int64_t lease = sel.opt_i64(5).value_or(0);
        bool cancel_pending = !sel.is_null(6);
        const int64_t cancel_requested_at = sel.opt_i64(6).value_or(0);
        int64_t sql_bytes = sel.i64(7);
        std::optional<std::string> lost_reason = sel.opt_text(8);
        const int64_t started_at = sel.opt_i64(9).value_or(now);
        std::string sql = sel.is_null(10) ? std::string() : sel.text(10);
        const int64_t created_at = sel.i64(11);
        // The claim writes the unit only when it changes (tasks_unit: schema version 6).
        const std::string set_unit = sel.i64(12) == unit ? "" : ", unit=?";
        sel.reset();
        auto claimed = [&] {
            Claim c{ClaimKind::claimed, attempts + 1, Status::running, 0, std::move(sql)};
            c.created_at = created_at;
            c.claimed_at = now;
            return c;
        };

        if (terminal(status)) return {ClaimKind::finished, 0, status};
        const bool too_long = sql_bytes > rules.max_sql_bytes;
        // Every way a claim ends a task as failed: one conditional statement per arrow.
        auto fail_now = [&](const char* from, const std::string& err) -> bool {
            return cached(std::string("UPDATE tasks SET status='failed', finished_at=?, error=?, "
                                      "outcomes=outcomes+1, lease_until=NULL WHERE id=? AND status=") + from +
                          " AND attempts=?")
                       .bind(1, now).bind(2, err).bind(3, id).bind(4, attempts)
                       .run() != 0;
        };
        auto refuse = [&](const char* from) { return fail_now(from, too_long_error(sql_bytes, rules.max_sql_bytes)); };

        int64_t changed = 0;
        auto w = writing();
        // The times written are read under the write lock. The supervisor's owner_lost() may have
        // stamped owner_lost_at while we waited for the lock; with `now` from before the wait, the
        // recovery (now - owner_lost_at) came out negative (audit showed -5 ms).
        now = deps_.clock();
        if (status == Status::queued) {
            if (too_long) {
                if (refuse("'queued'")) return {ClaimKind::refused, 0, Status::failed};
                continue;
            }
            auto& st = cached(
                "UPDATE tasks SET status='running', attempts=attempts+1, executions=executions+1, "
                "owner=?1, owner_pid=?2, owner_start=?3, lease_until=?4, started_at=?5" + set_unit +
                " WHERE id=?7 AND status='queued' AND attempts=?8");
            st.bind(1, me.name()).bind(2, me.pid).bind(3, me.start)
                .bind(4, now + cfg_.lease_ms).bind(5, now).bind(7, id).bind(8, attempts);
            if (!set_unit.empty()) st.bind(6, unit);
            if (st.run()) return claimed();
        } else {
            // running: is its owner gone? On this host we can tell at once; elsewhere the lease says.
            const Owner recorded{owner_host(owner), owner_pid, owner_start};
            if (!engine::same_owner(me, recorded) && !owner_gone(recorded, lease, now))
                return {ClaimKind::held, 0, status, lease};
            const char* guard = " WHERE id=? AND status='running' AND attempts=?";
            if (cancel_pending) {
                changed = cached(std::string("UPDATE tasks SET status='cancelled', finished_at=?, "
                                                  "outcomes=outcomes+1, lease_until=NULL") + guard)
                              .bind(1, now).bind(2, id).bind(3, attempts).run();
                if (changed) {
                    Claim c{ClaimKind::cancelled_now, 0, Status::cancelled};
                    c.created_at = created_at;
                    c.claimed_at = now;
                    c.cancel_requested_at = cancel_requested_at;
                    return c;
                }
            } else if (rules.timeout_ms > 0 && now - started_at >= rules.timeout_ms + rules.deadline_grace_ms) {
                // Its worker ran past the hard deadline and was killed for it (the supervisor
                // fails the task too; whoever comes first): another attempt would be as stuck.
                if (fail_now("'running'", hard_deadline_error(rules.timeout_ms, rules.deadline_grace_ms)))
                    return {ClaimKind::past_deadline, 0, Status::failed};
            } else if (attempts >= rules.max_attempts) {
                if (fail_now("'running'", gave_up_error(attempts, lost_reason)))
                    return {ClaimKind::gave_up, 0, Status::failed};
            } else if (too_long) {
                if (refuse("'running'")) return {ClaimKind::refused, 0, Status::failed};
            } else {
                auto& st = cached(std::string(
                                      "UPDATE tasks SET attempts=attempts+1, executions=executions+1, "
                                      "owner=?, owner_pid=?, owner_start=?, lease_until=?, started_at=?, "
                                      "recovery_ms=CASE WHEN owner_lost_at IS NULL THEN recovery_ms "
                                      "ELSE max(0, ? - owner_lost_at) END, owner_lost_at=NULL, lost_reason=NULL") +
                                  set_unit + guard);
                st.bind(1, me.name()).bind(2, me.pid).bind(3, me.start)
                    .bind(4, now + cfg_.lease_ms).bind(5, now).bind(6, now);
                int k = 7;
                if (!set_unit.empty()) st.bind(k++, unit);
                st.bind(k, id).bind(k + 1, attempts);
                if (st.run()) {
                    // Ours now (the attempt fences out anyone else): only now load the text.
                    auto& text = cached(std::string("SELECT ") + kSqlOf + " FROM tasks WHERE id=?");
                    ResetGuard g{text};
                    if (text.bind(1, id).step()) sql = text.text(0);
                    return claimed();
                }
            }
        }
        // Someone else moved the task between our read and our write: look again.
        if (round > 100) throw Error("task " + std::to_string(id) + ": claim keeps losing races");
    }
}

TaskStore::Next SqliteStore::next_for(int64_t unit, int64_t max_running_per_user) {
    // Its three or four reads in one transaction: one set of the WAL's read locks (each
    // statement alone took and dropped its own: about 4 fcntl calls each).
    std::optional<sqlite::ReadTxn> snapshot;
    if (!claim_scope_) snapshot.emplace(db_);
    // 1. The task an earlier delivery of this message runs (or ran, its worker now gone).
    {
        auto& mine = cached("SELECT id FROM tasks WHERE coalesce(unit, id)=? AND status='running'");
        ResetGuard g{mine};
        if (mine.bind(1, unit).step()) return {Next::Kind::task, mine.i64(0), true};
    }
    // 2. The task it was published for, running with its owner gone: the sweeper republished it.
    Status own_status = Status::queued;
    {
        auto& own = cached("SELECT status, owner, owner_pid, owner_start, lease_until FROM tasks WHERE id=?");
        ResetGuard g{own};
        if (!own.bind(1, unit).step()) return {Next::Kind::unknown};
        own_status = parse_status(own.text(0)).value_or(Status::failed);
        if (own.text(0) == "running" &&
            owner_gone({owner_host(own.text(1)), own.i64(2), own.i64(3)}, own.opt_i64(4).value_or(0), deps_.clock()))
            return {Next::Kind::task, unit};
    }
    // 3. The fairest queued task. With one user waiting (a burst of one user's queries, the
    // common case) and no per-user limit, that is the user's oldest task, and the general choice
    // below would count that user's running tasks for nothing: a look at each running task's row,
    // its largest part. Two ends of one index range tell.
    if (max_running_per_user == 0) {
        auto& only = cached(
            "SELECT (SELECT min(id) FROM tasks WHERE status='queued' AND submitter=u.first) FROM"
            " (SELECT (SELECT min(submitter) FROM tasks WHERE status='queued') AS first,"
            "         (SELECT max(submitter) FROM tasks WHERE status='queued') AS last) AS u"
            " WHERE u.first = u.last");
        ResetGuard g0{only};
        if (only.step()) {
            Next n{Next::Kind::task, only.i64(0)};
            n.fairest = true;
            return n;
        }
    }
    // The waiting users are found one by one through tasks_queue (a
    // skip scan: what it costs grows with the users waiting, not with their tasks), each with its
    // oldest task and its running count; then fewest running, least recently served, oldest.
    auto& fair = cached(
        "WITH RECURSIVE waiting(name) AS ("
        "  SELECT (SELECT min(submitter) FROM tasks WHERE status='queued')"
        "  UNION ALL"
        "  SELECT (SELECT min(submitter) FROM tasks WHERE status='queued' AND submitter > waiting.name)"
        "  FROM waiting WHERE waiting.name IS NOT NULL),"
        " candidates AS ("
        "  SELECT (SELECT min(id) FROM tasks WHERE status='queued' AND submitter=waiting.name) AS head,"
        "         (SELECT count(*) FROM tasks WHERE status='running' AND submitter=waiting.name"
        "          AND lease_until >= ?2 AND owner_lost_at IS NULL) AS running,"
        "         coalesce((SELECT served FROM users WHERE users.name=waiting.name), 0) AS served"
        "  FROM waiting WHERE waiting.name IS NOT NULL)"
        "SELECT head FROM candidates WHERE ?1 = 0 OR running < ?1 ORDER BY running, served, head LIMIT 1");
    ResetGuard g{fair};
    if (fair.bind(1, max_running_per_user).bind(2, deps_.clock()).step()) {
        Next n{Next::Kind::task, fair.i64(0)};
        n.fairest = true;  // claimed as chosen (claim_fairest's default): claims take turns here anyway
        return n;
    }
    fair.reset();
    auto& any = cached("SELECT EXISTS (SELECT 1 FROM tasks WHERE status='queued')");
    ResetGuard g2{any};
    any.step();
    return {any.i64(0) ? Next::Kind::limited : Next::Kind::none, 0, false, own_status};
}

void SqliteStore::record_fleet(const FleetRecord& r) {
    auto w = writing();
    cached("INSERT INTO fleets(host, run_dir, pid, interval_ms, workers, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (host, run_dir) DO UPDATE SET pid=excluded.pid, interval_ms=excluded.interval_ms, "
           "workers=excluded.workers, heartbeat_at=excluded.heartbeat_at")
        .bind(1, r.host).bind(2, r.run_dir).bind(3, r.pid).bind(4, r.interval_ms).bind(5, r.workers_json)
        .bind(6, deps_.clock())
        .run();
}

void SqliteStore::forget_fleet(const std::string& host, const std::string& run_dir) {
    auto w = writing();
    cached("DELETE FROM fleets WHERE host=? AND run_dir=?").bind(1, host).bind(2, run_dir).run();
}

std::vector<TaskStore::FleetRecord> SqliteStore::fleets() {
    auto& st = cached("SELECT host, run_dir, pid, interval_ms, workers, heartbeat_at FROM fleets ORDER BY host, run_dir");
    ResetGuard g{st};
    const int64_t now = deps_.clock();
    std::vector<FleetRecord> out;
    while (st.step())
        out.push_back({st.text(0), st.text(1), st.i64(2), st.i64(3), st.text(4), st.i64(5), now - st.i64(5)});
    return out;
}

int64_t SqliteStore::task_of_unit(int64_t unit) {
    // The task its deliveries ran last, ended or not (a letter for a task given up since maps to
    // that one, never to the innocent task the message was first published for).
    auto& mine = cached(
        "SELECT id FROM tasks WHERE coalesce(unit, id)=? ORDER BY status='running' DESC, started_at DESC LIMIT 1");
    ResetGuard g{mine};
    return mine.bind(1, unit).step() ? mine.i64(0) : unit;
}

std::map<std::string, int64_t> SqliteStore::running_per_user() {
    auto& st = cached("SELECT submitter, count(*) FROM tasks WHERE status='running' AND lease_until >= ? "
                      "AND owner_lost_at IS NULL GROUP BY submitter");
    ResetGuard g{st};
    st.bind(1, deps_.clock());
    std::map<std::string, int64_t> out;
    while (st.step()) out[st.text(0)] = st.i64(1);
    return out;
}

TaskStore::Tick SqliteStore::tick(int64_t id, int64_t token, Renew renew) {
    Tick t;
    if (renew == Renew::yes) {
        auto w = writing();
        auto& s = cached(
            "UPDATE tasks SET lease_until=? WHERE id=? AND status='running' AND attempts=? "
            "RETURNING cancel_requested_at");
        s.bind(1, deps_.clock() + cfg_.lease_ms).bind(2, id).bind(3, token);
        ResetGuard g{s};
        if (!s.step()) {
            t.still_owner = false;
            return t;
        }
        t.cancel_requested = !s.is_null(0);
        t.cancel_requested_at = s.opt_i64(0).value_or(0);
        while (s.step()) {
        }
        return t;
    }
    auto& s = cached("SELECT status='running' AND attempts=?, cancel_requested_at FROM tasks WHERE id=?");
    s.bind(1, token).bind(2, id);
    ResetGuard g{s};
    if (!s.step()) {
        t.still_owner = false;
        return t;
    }
    t.still_owner = s.i64(0) != 0;
    t.cancel_requested = !s.is_null(1);
    t.cancel_requested_at = s.opt_i64(1).value_or(0);
    return t;
}

bool SqliteStore::write_outcome(int64_t id, int64_t token, const Outcome& o) {
    int64_t now = deps_.clock();
    std::optional<std::string> ref, inline_columns, inline_rows;
    if (o.result) {
        if (o.result->columns_json.size() + o.result->rows_json.size() <= kInlineResultBytes) {
            inline_columns = o.result->columns_json;
            inline_rows = o.result->rows_json;
        } else {
            cached("INSERT OR REPLACE INTO results(task_id, columns, rows, created_at) VALUES(?,?,?,?)")
                .bind(1, id).bind(2, o.result->columns_json).bind(3, o.result->rows_json).bind(4, now)
                .run();
        }
        ref = "results/" + std::to_string(id);  // where it is stored is the store's business
    }
    int64_t changed = cached(
                             "UPDATE tasks SET status=?, finished_at=?, error=?, row_count=?, result_bytes=?, "
                             "result_ref=?, result_columns=?, result_rows=?, outcomes=outcomes+1, lease_until=NULL "
                             "WHERE id=? AND status='running' AND attempts=?")
                          .bind(1, to_string(o.status)).bind(2, now).bind(3, o.error).bind(4, o.row_count)
                          .bind(5, o.result_bytes).bind(6, ref).bind(7, inline_columns).bind(8, inline_rows)
                          .bind(9, id).bind(10, token)
                          .run();
    return changed != 0;
}

bool SqliteStore::finish(int64_t id, int64_t token, const Outcome& o) {
    {
        auto w = writing();
        Txn txn(db_);
        if (!write_outcome(id, token, o)) return false;  // fenced out: the transaction rolls back, the result with it
        txn.commit();
    }
    persist();  // outside the gate: the next writer goes on while this one waits for the disk
    return true;
}

bool SqliteStore::finish_then_claim(int64_t id, int64_t token, const Outcome& o, int64_t unit, const Owner& me,
                                    const ClaimRules& rules, std::optional<Claim>& next) {
    next.reset();
    // Where a claim is one write transaction under the gate (claim_scope: not with a per-user
    // limit), the outcome joins it; otherwise it goes alone.
    auto scope = claim_scope(rules);
    if (!scope) return finish(id, token, o);
    claim_scope_->persist_after();  // the outcome is acked on next: durable with the commit, one sync for both
    if (!write_outcome(id, token, o)) return false;  // fenced out: rolled back, nothing claimed
    std::optional<Claim> c;
    try {
        c = claim_next(unit, me, rules);  // in this scope's transaction (claim_scope: none of its own)
    } catch (const std::exception&) {
        // The claim's trouble is the claim's: the outcome is written alone below, and the
        // caller's own claim meets the trouble again and deals with it.
    }
    // A statement that ran out of memory or disk may have rolled the whole transaction back, the
    // outcome with it.
    if (!c || sqlite3_get_autocommit(db_.get())) {
        scope.reset();  // rolled back, the gate released
        return finish(id, token, o);
    }
    scope->commit();
    if (handed_over(c->kind)) next = std::move(c);
    return true;
}

TaskStore::FailKind SqliteStore::fail_unowned(int64_t id, const std::string& error, const Owner& me) {
    FailKind k = try_fail_unowned(id, error, me);
    // The caller acks on it (a worker) or counts on it (the sweeper): make it durable first.
    if (k == FailKind::failed || k == FailKind::cancelled || k == FailKind::finished) persist();
    return k;
}

TaskStore::FailKind SqliteStore::try_fail_unowned(int64_t id, const std::string& error, const Owner& me) {
    for (int round = 0;; ++round) {
        const int64_t now = deps_.clock();
        auto& sel = cached(
            "SELECT status, attempts, owner, owner_pid, owner_start, lease_until, cancel_requested_at "
            "FROM tasks WHERE id=?");
        sel.bind(1, id);
        if (!sel.step()) {
            sel.reset();
            return FailKind::unknown;
        }
        Status status = parse_status(sel.text(0)).value_or(Status::failed);
        const int64_t attempts = sel.i64(1);
        const Owner owner{owner_host(sel.text(2)), sel.i64(3), sel.i64(4)};
        const int64_t lease = sel.opt_i64(5).value_or(0);
        const bool cancel_pending = !sel.is_null(6);
        sel.reset();
        if (terminal(status)) return FailKind::finished;
        if (status == Status::running) {
            if (!engine::same_owner(me, owner) && !owner_gone(owner, lease, now)) return FailKind::held;
        }
        const bool cancel = status == Status::running && cancel_pending;
        auto w = writing();
        int64_t changed =
            cached("UPDATE tasks SET status=?, finished_at=?, error=?, outcomes=outcomes+1, lease_until=NULL "
                   "WHERE id=? AND status=? AND attempts=?")
                .bind(1, cancel ? "cancelled" : "failed").bind(2, now)
                .bind(3, cancel ? std::optional<std::string>() : std::optional<std::string>(error))
                .bind(4, id).bind(5, to_string(status)).bind(6, attempts)
                .run();
        if (changed) return cancel ? FailKind::cancelled : FailKind::failed;
        // Moved between our read and our write: look again.
        if (round > 100) throw Error("task " + std::to_string(id) + ": failing it keeps losing races");
    }
}

std::vector<int64_t> SqliteStore::give_up_stale(int64_t stale_ms, int max_attempts) {
    std::vector<std::pair<int64_t, int64_t>> found;
    {
        auto s = db_.prepare(
            "SELECT id, attempts FROM tasks WHERE status='running' AND attempts >= ? AND lease_until < ? "
            "ORDER BY id LIMIT 1000");
        s.bind(1, int64_t(max_attempts)).bind(2, deps_.clock() - stale_ms);
        while (s.step()) found.emplace_back(s.i64(0), s.i64(1));
    }
    std::vector<int64_t> failed;
    for (auto [id, attempts] : found) {
        if (fail_unowned(id, gave_up_error(attempts, std::nullopt), Owner{}) == FailKind::failed) failed.push_back(id);
    }
    return failed;
}

TaskStore::CancelResult SqliteStore::request_cancel(int64_t id, const std::string& by) {
    int64_t now = deps_.clock();
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

std::optional<Task> SqliteStore::get(int64_t id) {
    auto& s = cached("SELECT " + kTaskColumns + " FROM tasks WHERE id=?");
    ResetGuard g{s};
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    Task t = task_from_row(s);
    s.reset();
    t.sql = read_sql_prefix(db_, id, t.sql_bytes, kGetChars);
    t.sql_truncated = int64_t(t.sql.size()) < t.sql_bytes;
    return t;
}

Task SqliteStore::list_row(const sqlite::Stmt& s) {
    Task t = task_from_row(s);
    if (s.is_null(1)) {  // stored before the preview column: read it in place
        t.sql = read_sql_prefix(db_, t.id, t.sql_bytes, kPreviewChars);
        t.sql_truncated = int64_t(t.sql.size()) < t.sql_bytes;
    }
    return t;
}

std::vector<Task> SqliteStore::list(const ListFilter& f) {
    auto s = db_.prepare("SELECT " + kListColumns +
                         " FROM tasks WHERE (?1 IS NULL OR status=?1) AND (?3 IS NULL OR submitter=?3)"
                         " ORDER BY id DESC LIMIT ?2");
    if (f.status) s.bind(1, to_string(*f.status));
    s.bind(2, f.limit);
    if (f.submitter) s.bind(3, *f.submitter);
    std::vector<Task> out;
    while (s.step()) out.push_back(list_row(s));
    return out;
}

// A task's stored result: in its row when small (schema 8), else in `results`.
constexpr const char* kResultOf =
    "(SELECT result_columns AS columns, result_rows AS rows FROM tasks WHERE id=?1 AND result_rows IS NOT NULL "
    " UNION ALL SELECT columns, rows FROM results WHERE task_id=?1 LIMIT 1)";

std::optional<ResultData> SqliteStore::result(int64_t id) {
    auto s = db_.prepare(std::string("SELECT columns, rows FROM ") + kResultOf);
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    return ResultData{s.text(0), s.text(1)};
}

std::optional<TaskStore::ResultPage> SqliteStore::result_page(int64_t id, int64_t offset, int64_t limit) {
    // json_each walks the stored text in C; only the page's rows come out of SQLite.
    auto s = db_.prepare(std::string(
        "SELECT columns, json_array_length(rows),"
        " (SELECT json_group_array(json(value)) FROM"
        "   (SELECT value FROM json_each(r.rows) ORDER BY key LIMIT ?2 OFFSET ?3))"
        " FROM ") + kResultOf + " AS r");
    s.bind(1, id).bind(2, std::max<int64_t>(limit, 0)).bind(3, std::max<int64_t>(offset, 0));
    if (!s.step()) return std::nullopt;
    return ResultPage{s.text(0), s.text(2), s.i64(1)};
}

namespace {
class SqliteResultReader final : public ResultReader {
public:
    SqliteResultReader(std::string columns, sqlite::Blob blob) : columns_(std::move(columns)), blob_(std::move(blob)) {}
    const std::string& columns_json() const override { return columns_; }
    size_t read(char* buf, size_t n) override {
        const int64_t left = blob_.size() - at_;
        const int take = int(std::min<int64_t>(left, int64_t(std::min<size_t>(n, 1 << 30))));
        if (take <= 0) return 0;
        blob_.read(buf, take, at_);
        at_ += take;
        return size_t(take);
    }

private:
    std::string columns_;
    sqlite::Blob blob_;
    int64_t at_ = 0;
};
}  // namespace

std::unique_ptr<ResultReader> SqliteStore::read_result(int64_t id) {
    // The blob is opened while the SELECT still holds its read transaction, so both read the
    // same snapshot: a result expired in between cannot make the open fail. results.task_id is
    // the rowid.
    auto s = db_.prepare(
        "SELECT result_columns, 1 FROM tasks WHERE id=?1 AND result_rows IS NOT NULL "
        "UNION ALL SELECT columns, 0 FROM results WHERE task_id=?1 LIMIT 1");
    s.bind(1, id);
    if (!s.step()) return nullptr;
    std::string columns = s.text(0);
    // Schema 8: a small result is in the task's row. Not through kResultOf: reading its rows would
    // load the whole text, which the blob streams.
    const bool in_row = s.i64(1) != 0;
    sqlite::Blob rows = in_row ? sqlite::Blob(db_, "tasks", "result_rows", id) : sqlite::Blob(db_, "results", "rows", id);
    return std::make_unique<SqliteResultReader>(std::move(columns), std::move(rows));
}

std::vector<Task> SqliteStore::changes(int64_t after_id, const std::vector<int64_t>& ids) {
    std::string list = "[";
    for (size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
    list += "]";
    // Three index lookups (tasks_status, then the primary key twice), never a scan of ended tasks.
    auto s = db_.prepare("SELECT " + kListColumns +
                         " FROM tasks WHERE status IN ('queued','running') OR id > ?1"
                         " OR id IN (SELECT value FROM json_each(?2)) ORDER BY id");
    s.bind(1, after_id).bind(2, list);
    std::vector<Task> out;
    while (s.step()) out.push_back(list_row(s));
    return out;
}

std::map<std::string, int64_t> SqliteStore::counts() {
    std::map<std::string, int64_t> out;
    for (Status st : {Status::queued, Status::running, Status::succeeded, Status::failed, Status::cancelled})
        out[to_string(st)] = 0;
    auto s = db_.prepare("SELECT status, count(*) FROM tasks GROUP BY status");
    while (s.step()) out[s.text(0)] = s.i64(1);
    return out;
}

std::vector<int64_t> SqliteStore::to_republish(int64_t unpublished_ms, int64_t stale_ms, QueueIdle idle,
                                               int max_attempts) {
    int64_t now = deps_.clock();
    auto s = db_.prepare(
        "SELECT id FROM tasks WHERE "
        " (status='queued' AND published=0 AND created_at < ?1)"
        " OR (?3 AND status='queued' AND published=1 AND published_at < ?2)"
        " OR (status='running' AND attempts < ?4 AND lease_until < ?2 AND (published_at IS NULL OR published_at < ?2))"
        " ORDER BY id LIMIT 1000");
    s.bind(1, now - unpublished_ms).bind(2, now - stale_ms).bind(3, int64_t(idle == QueueIdle::yes))
        .bind(4, int64_t(max_attempts));
    std::vector<int64_t> ids;
    while (s.step()) ids.push_back(s.i64(0));
    return ids;
}

void SqliteStore::owner_lost(int64_t id, const Owner& owner, const std::string& why) {
    auto w = writing();
    if (db_.prepare("UPDATE tasks SET owner_lost_at=?, lost_reason=? "
                    "WHERE id=? AND status='running' AND owner=? AND owner_pid=? AND owner_start=?")
            .bind(1, deps_.clock()).bind(2, why).bind(3, id).bind(4, owner.name()).bind(5, owner.pid)
            .bind(6, owner.start)
            .run() == 0)
        db_.prepare(std::string("UPDATE tasks SET error=error || ? "
                                "WHERE id=? AND owner=? AND owner_pid=? AND owner_start=? AND ") +
                    engine::kGaveUpWithoutLastSql)
            .bind(1, engine::last_loss_words(why)).bind(2, id).bind(3, owner.name()).bind(4, owner.pid)
            .bind(5, owner.start)
            .run();
}

bool SqliteStore::fail_abandoned(int64_t id, const Owner& owner, const std::string& error) {
    int64_t changed = 0;
    {
        auto w = writing();
        changed = db_.prepare("UPDATE tasks SET status='failed', finished_at=?, error=?, outcomes=outcomes+1, "
                              "lease_until=NULL WHERE id=? AND status='running' AND owner=? AND owner_pid=? "
                              "AND owner_start=?")
                      .bind(1, deps_.clock()).bind(2, error).bind(3, id).bind(4, owner.name()).bind(5, owner.pid)
                      .bind(6, owner.start)
                      .run();
    }
    if (changed) persist();
    return changed != 0;
}

int64_t SqliteStore::expire_results(const Retention& r) {
    int64_t cutoff = deps_.clock() - r.ttl_s * 1000;
    // The tasks whose result goes, each with whether it is kept in the task's row (schema 8).
    using Doomed = std::vector<std::pair<int64_t, bool>>;
    auto doomed = [&](const std::string& sql, int64_t bound) {
        Doomed ids;
        auto s = db_.prepare(sql);
        s.bind(1, bound);
        while (s.step()) ids.emplace_back(s.i64(0), s.i64(1) != 0);
        return ids;
    };
    // Over a cap: the newest results are kept while their running sum (newest first) fits.
    auto over = [&](const char* partition, int64_t cap) {
        if (cap <= 0) return Doomed{};
        return doomed(std::string("SELECT id, in_row FROM (SELECT id, result_rows IS NOT NULL AS in_row, "
                                  "sum(result_bytes) OVER (") + partition +
                          " ORDER BY finished_at DESC, id DESC ROWS UNBOUNDED PRECEDING) AS upto "
                          "FROM tasks WHERE result_ref IS NOT NULL) WHERE upto > ?",
                      cap);
    };
    int64_t n = 0;
    {
        auto w = writing();
        Txn txn(db_);
        n = db_.prepare("DELETE FROM results WHERE created_at < ?").bind(1, cutoff).run();
        auto del = db_.prepare("DELETE FROM results WHERE task_id=?");
        auto unref = db_.prepare("UPDATE tasks SET result_ref=NULL, result_columns=NULL, result_rows=NULL WHERE id=?");
        auto expire = [&](const Doomed& ids) {
            for (auto [id, in_row] : ids) {
                n += del.bind(1, id).run() + (in_row ? 1 : 0);
                unref.bind(1, id).run();
            }
        };
        // Past the retention: one scan of the tasks (finished_at has no index) finds them, each
        // result in its row or in the results table, whose rows past the time went just above.
        expire(doomed("SELECT id, result_rows IS NOT NULL FROM tasks WHERE result_ref IS NOT NULL AND finished_at < ?",
                      cutoff));
        for (const char* partition : {"PARTITION BY submitter", ""})
            expire(over(partition, *partition ? r.max_bytes_per_user : r.max_bytes));
        txn.commit();
    }
    if (n > 0) {
        // Give the freed pages back to the file system (a store made before auto_vacuum was
        // set has none to give: its pages are reused instead).
        auto w = writing();
        db_.exec("PRAGMA incremental_vacuum");
    }
    return n;
}

TaskStore::AuditFigures SqliteStore::audit() {
    AuditFigures f;
    f.by_status = counts();
    int64_t now = deps_.clock();
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
            if (owner_gone({owner_host(s.text(1)), s.i64(2), s.i64(3)}, s.opt_i64(4).value_or(0), now))
                f.stuck_ids.push_back(s.i64(0));
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
