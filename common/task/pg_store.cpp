#include "task/pg_store.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unistd.h>

#include "task/engine_rules.h"
#include "task/pg_watch.h"
#include "util/process.h"

namespace sqlq {

using engine::gave_up_error;
using engine::owner_host;
using engine::queue_full;
using engine::too_long_error;

namespace pgstore {

// Text parameters of one statement; std::nullopt is SQL NULL.
class Params {
public:
    Params& operator<<(int64_t v) { return add(std::to_string(v)); }
    Params& operator<<(int v) { return add(std::to_string(v)); }
    Params& operator<<(bool v) { return add(v ? "true" : "false"); }
    Params& operator<<(const std::string& v) { return add(v); }
    Params& operator<<(const char* v) { return add(v); }
    Params& operator<<(std::nullopt_t) {
        values_.emplace_back();
        return *this;
    }
    template <class T>
    Params& operator<<(const std::optional<T>& v) {
        return v ? (*this << *v) : (*this << std::nullopt);
    }
    int size() const { return int(values_.size()); }
    std::vector<const char*> pointers() const {
        std::vector<const char*> out;
        for (const auto& v : values_) out.push_back(v ? v->c_str() : nullptr);
        return out;
    }

private:
    Params& add(std::string v) {
        // libpq's text parameters end at a NUL byte: refuse one rather than store a cut text.
        if (v.find('\0') != std::string::npos)
            throw StoreError("a text holds a NUL byte, which a PostgreSQL text cannot", false);
        values_.emplace_back(std::move(v));
        return *this;
    }
    std::vector<std::optional<std::string>> values_;
};

}  // namespace pgstore

using pgstore::Params;

namespace {

// The database's clock in ms since the epoch (clock_timestamp: the time of the statement, not of
// its transaction's start). Every time the store compares or records is this, unless a test
// injects its own clock (then the statements are given it and do not call this).
constexpr const char* kSchemaV1 = R"SQL(
CREATE FUNCTION sqlq_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
CREATE TABLE sqlq_tasks (
    id                  bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sql                 text    NOT NULL,
    submitter           text    NOT NULL,
    status              text    NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued','running','succeeded','failed','cancelled')),
    published           boolean NOT NULL DEFAULT false,  -- the broker confirmed a message for it
    published_at        bigint,                          -- ms since the epoch, like every time here
    attempts            integer NOT NULL DEFAULT 0,      -- claims so far; the current one fences writes
    executions          integer NOT NULL DEFAULT 0,      -- times the query was started
    owner               text,                            -- "host:pid" of the worker of the current attempt
    owner_pid           bigint,
    owner_start         bigint,                          -- that process's start time, against pid reuse
    owner_lost_at       bigint,                          -- when its supervisor saw that worker die
    lost_reason         text,
    lease_until         bigint,                          -- the owner renews it while it works
    created_at          bigint  NOT NULL,
    started_at          bigint,
    finished_at         bigint,
    error               text,
    row_count           bigint,
    result_bytes        bigint,
    result_ref          text,                            -- 'results/<id>'; NULL when none or expired
    cancel_requested_at bigint,
    cancelled_by        text,
    outcomes            integer NOT NULL DEFAULT 0,      -- terminal writes; never above 1
    recovery_ms         bigint,                          -- owner's death -> the task running again
    sql_bytes           bigint  NOT NULL
);
-- The tasks not ended yet, which every claim, sweep and live view looks at: a small index
-- whatever the history's size.
CREATE INDEX sqlq_tasks_active ON sqlq_tasks (status, id) WHERE status IN ('queued', 'running');
CREATE INDEX sqlq_tasks_submitter ON sqlq_tasks (submitter, id);
CREATE TABLE sqlq_results (
    task_id    bigint PRIMARY KEY REFERENCES sqlq_tasks(id),
    columns    text   NOT NULL,
    rows       text   NOT NULL,
    created_at bigint NOT NULL
);
-- Waiters (sqlq wait, run, cancel; the web console's live view) LISTEN on sqlq_tasks: a status
-- change or a cancel request wakes them. One notification per statement, with no payload.
CREATE FUNCTION sqlq_tasks_notify() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_notify('sqlq_tasks', ''); RETURN NULL; END $$;
CREATE TRIGGER sqlq_tasks_notify AFTER INSERT OR UPDATE OF status, cancel_requested_at ON sqlq_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION sqlq_tasks_notify();
)SQL";

// Fairness (docs/architecture.md): the message whose delivery runs a task (its unit of work);
// when each user was last served (the claim of one of their queued tasks); and the indexes the
// choice of the next task reads: the waiting users one by one with their oldest task, their
// running counts, a message's running task.
constexpr const char* kSchemaV2 = R"SQL(
ALTER TABLE sqlq_tasks ADD COLUMN unit bigint;
CREATE SEQUENCE sqlq_served;
CREATE TABLE sqlq_users (
    name   text   PRIMARY KEY,
    served bigint NOT NULL
);
CREATE INDEX sqlq_tasks_queue ON sqlq_tasks (submitter, id) WHERE status = 'queued';
CREATE INDEX sqlq_tasks_running ON sqlq_tasks (submitter) WHERE status = 'running';
CREATE INDEX sqlq_tasks_unit ON sqlq_tasks (unit);
)SQL";

// Claims that run at once, from many workers and hosts, must not queue behind each other:
// - when a user was last served is the claim's mark on the task row it takes (`served`, read as
//   the user's greatest through sqlq_tasks_served), not a row per user that every claim of that
//   user would update and hold until its commit;
// - waiters are told of what they wait for only: a task ending (a row trigger; notifications of
//   one transaction are merged into one). A notifying commit holds a lock of the whole database
//   through its flush, so notifying on claims and submits as well queued every one of them.
constexpr const char* kSchemaV4 = R"SQL(
ALTER TABLE sqlq_tasks ADD COLUMN served bigint;
UPDATE sqlq_tasks t SET served = u.served FROM sqlq_users u
    WHERE t.id = (SELECT max(id) FROM sqlq_tasks x WHERE x.submitter = u.name);
DROP TABLE sqlq_users;
CREATE INDEX sqlq_tasks_served ON sqlq_tasks (submitter, served) WHERE served IS NOT NULL;
DROP TRIGGER sqlq_tasks_notify ON sqlq_tasks;
CREATE TRIGGER sqlq_tasks_ended AFTER UPDATE OF status ON sqlq_tasks FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION sqlq_tasks_notify();
)SQL";

// "coalesce($N::bigint, sqlq_now_ms())": the injected clock when there is one, else the server's.
std::string now_sql(int n) { return "coalesce($" + std::to_string(n) + "::bigint, sqlq_now_ms())"; }

// The claim of a queued task (queued -> running), whichever way it was chosen: $1 the clock, $2-$4
// the owner, $5 lease_ms, $`unit_n` the message; `executions`, what the count becomes. The user's
// turn, for fairness, is this claim's mark.
std::string claim_queued_sql(int unit_n, const std::string& executions) {
    return "UPDATE sqlq_tasks SET status='running', attempts=attempts+1, executions=" + executions +
           ", owner=$2, owner_pid=$3, owner_start=$4, started_at=" + now_sql(1) + ", lease_until=" + now_sql(1) +
           " + $5, unit=$" + std::to_string(unit_n) + ", served=nextval('sqlq_served') ";
}

std::string task_columns(int64_t sql_chars) {
    return "id, substr(sql, 1, " + std::to_string(sql_chars) +
           "), submitter, status, published, attempts, executions, owner, owner_pid, owner_start, lease_until, "
           "created_at, started_at, finished_at, error, row_count, result_bytes, result_ref, cancel_requested_at, "
           "cancelled_by, outcomes, recovery_ms, sql_bytes";
}
const std::string kTaskColumns = task_columns(1 << 20);  // get()
const std::string kListColumns = task_columns(1000);     // list(): a preview per task

// One row of a result.
struct Row {
    const PGresult* r;
    int i;
    bool null(int c) const { return PQgetisnull(r, i, c) != 0; }
    std::string text(int c) const { return std::string(PQgetvalue(r, i, c), size_t(PQgetlength(r, i, c))); }
    int64_t i64(int c) const { return null(c) ? 0 : std::strtoll(PQgetvalue(r, i, c), nullptr, 10); }
    bool boolean(int c) const { return !null(c) && PQgetvalue(r, i, c)[0] == 't'; }
    std::optional<std::string> opt_text(int c) const { return null(c) ? std::nullopt : std::optional(text(c)); }
    std::optional<int64_t> opt_i64(int c) const { return null(c) ? std::nullopt : std::optional(i64(c)); }
};

Task task_from_row(const Row& s) {
    Task t;
    t.id = s.i64(0);
    t.sql = s.text(1);
    t.submitter = s.text(2);
    t.status = parse_status(s.text(3)).value_or(Status::queued);
    t.published = s.boolean(4);
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
    // substr counts characters, sql_bytes bytes: the text is whole when its bytes are all there.
    t.sql_truncated = int64_t(t.sql.size()) < t.sql_bytes;
    return t;
}

std::vector<Task> tasks_of(const PGresult* r) {
    std::vector<Task> out;
    for (int i = 0; i < PQntuples(r); ++i) out.push_back(task_from_row(Row{r, i}));
    return out;
}


// A PostgreSQL array literal of bigints: {1,2,3}.
std::string int_array(const std::vector<int64_t>& ids) {
    std::string out = "{";
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? "," : "") + std::to_string(ids[i]);
    return out + "}";
}

// A PostgreSQL array literal of texts: {"a","b\"c"}.
std::string text_array(const std::vector<std::string>& texts) {
    std::string out = "{";
    for (size_t i = 0; i < texts.size(); ++i) {
        if (i) out += ',';
        out += '"';
        for (char c : texts[i]) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
        out += '"';
    }
    return out + "}";
}

// The session of the store's connections: commits wait for the disk at durability "full" only;
// a row lock is waited for at most busy_timeout_ms; times are UTC.
std::string session_options(const StoreConfig& cfg) {
    return std::string("-c synchronous_commit=") + (cfg.durability == "full" ? "on" : "off") +
           " -c lock_timeout=" + std::to_string(std::max(cfg.busy_timeout_ms, 1)) + " -c TimeZone=UTC";
}

}  // namespace

PgStore::PgStore(const StoreConfig& cfg, StoreDeps deps)
    : cfg_(cfg), deps_(std::move(deps)), where_(redact_url(cfg.url)),
      params_(pg::ConnParams::from_url(cfg.url, "[store] url", session_options(cfg),
                                       std::string(program_invocation_short_name) + " " + std::to_string(::getpid()))) {
    // No clock given: the database's (see now_sql). Owners: this host's processes are looked up,
    // the others' leases say.
    if (!deps_.owner_alive) deps_.owner_alive = StoreDeps::local_process;
    migrate();
}

std::optional<int64_t> PgStore::clock() const {
    if (deps_.clock) return deps_.clock();
    return std::nullopt;
}

void PgStore::drop() noexcept {
    conn_.reset();
    prepared_.clear();
}

PGconn* PgStore::connection() {
    if (conn_ && PQstatus(conn_.get()) == CONNECTION_OK) return conn_.get();
    drop();
    std::string why;
    conn_ = params_.connect(cfg_.url, why);
    if (!conn_) throw StoreError("cannot connect to the task store " + where_ + ": " + why, true);
    return conn_.get();
}

void PgStore::fail(const PGresult* r, const std::string& doing) {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    const std::string code = state ? state : "";
    std::string msg = pg::scrub(pg::tidy(r ? PQresultErrorMessage(r) : PQerrorMessage(conn_.get())), cfg_.url);
    if (msg.empty() && conn_) msg = pg::scrub(pg::tidy(PQerrorMessage(conn_.get())), cfg_.url);
    const bool broken = !conn_ || PQstatus(conn_.get()) != CONNECTION_OK;
    if (broken) drop();
    // Transient: the connection or the server (08, 57P0x: shut down, restarting), a conflict
    // (40001, 40P01), insufficient resources (53: disk full, too many connections), a lock not
    // had in time (55P03). Out of memory (53200) is the task's (Cause::resource).
    const bool transient = broken || code.rfind("08", 0) == 0 || code.rfind("57P0", 0) == 0 || code == "40001" ||
                           code == "40P01" || code.rfind("53", 0) == 0 || code == "55P03";
    const auto cause = code == "53200" ? StoreError::Cause::resource : StoreError::Cause::other;
    throw StoreError("task store " + where_ + ": " + doing + ": " + msg + (code.empty() ? "" : " (SQLSTATE " + code + ")"),
                     transient && cause != StoreError::Cause::resource, cause);
}

pg::Result PgStore::exec(const std::string& sql, const Params& params) {
    PGconn* c = connection();
    auto it = prepared_.find(sql);
    if (it == prepared_.end()) {
        std::string name = "sqlq_" + std::to_string(prepared_.size());
        pg::Result r(PQprepare(c, name.c_str(), sql.c_str(), params.size(), nullptr));
        if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) fail(r.get(), "preparing a statement");
        it = prepared_.emplace(sql, std::move(name)).first;
    }
    const auto values = params.pointers();
    pg::Result r(PQexecPrepared(c, it->second.c_str(), params.size(), values.data(), nullptr, nullptr, 0));
    const auto st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail(r.get(), "a statement failed");
    return r;
}

pg::Result PgStore::exec(const std::string& sql) {
    pg::Result r(PQexec(connection(), sql.c_str()));
    const auto st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail(r.get(), "a statement failed");
    return r;
}

class PgStore::Txn {
public:
    explicit Txn(PgStore& s) : s_(s) { s_.exec("BEGIN"); }
    ~Txn() {
        // Error ignored: a destructor. A connection that was lost has rolled it back already.
        if (open_ && s_.conn_) pg::Result(PQexec(s_.conn_.get(), "ROLLBACK"));
    }
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    void commit() {
        s_.exec("COMMIT");
        open_ = false;
    }

private:
    PgStore& s_;
    bool open_ = true;
};

void PgStore::migrate() {
    auto version = [&] {
        // The name is only looked up once the table exists (a statement naming a table that does
        // not exist fails at parse time, whatever branch would run).
        if (Row{exec("SELECT to_regclass('sqlq_schema') IS NOT NULL").get(), 0}.boolean(0) == false) return int64_t(0);
        return Row{exec("SELECT coalesce(max(version), 0) FROM sqlq_schema").get(), 0}.i64(0);
    };
    auto newer = [&](int64_t v) {
        return Error(where_ + ": task store schema version " + std::to_string(v) + " is newer than this sqlq (" +
                     std::to_string(kSchemaVersion) + ")");
    };
    if (int64_t v = version(); v >= kSchemaVersion) {
        if (v > kSchemaVersion) throw newer(v);
        return;
    }
    // One migrator at a time (the fleets of every host may start at once): the others wait for
    // this transaction, then find the schema made.
    Txn txn(*this);
    exec("SELECT pg_advisory_xact_lock(7466315600000001)");
    exec("CREATE TABLE IF NOT EXISTS sqlq_schema (version integer NOT NULL)");
    int64_t v = version();
    if (v > kSchemaVersion) throw newer(v);
    if (v < 1) {
        exec(kSchemaV1);
        exec("INSERT INTO sqlq_schema(version) VALUES (1)");
    }
    if (v < 2) {
        exec(kSchemaV2);
        exec("INSERT INTO sqlq_schema(version) VALUES (2)");
    }
    if (v < 3) {
        // The fleet-wide view: each supervisor's record of itself and its workers (sqlq workers).
        exec("CREATE TABLE sqlq_fleets (host text NOT NULL, run_dir text NOT NULL, pid bigint NOT NULL, "
             "interval_ms bigint NOT NULL, workers text NOT NULL, heartbeat_at bigint NOT NULL, "
             "PRIMARY KEY (host, run_dir))");
        exec("INSERT INTO sqlq_schema(version) VALUES (3)");
    }
    if (v < 4) {
        exec(kSchemaV4);
        exec("INSERT INTO sqlq_schema(version) VALUES (4)");
    }
    txn.commit();
}

std::vector<int64_t> PgStore::insert_batch(const std::vector<std::string>& sqls, const std::string& submitter,
                                           const InsertRules& rules) {
    if (rules.max_queued_per_user > 0) {
        // The user's count and the insert in one transaction, behind a lock of the user's own, so
        // that two submits at once (from any host) cannot both pass the limit: each statement of
        // the transaction reads what committed before it, the lock holder's insert included.
        Txn txn(*this);
        exec("SELECT pg_advisory_xact_lock(74663156, hashtext($1))", Params() << submitter);
        const int64_t queued =
            Row{exec("SELECT count(*) FROM sqlq_tasks WHERE status='queued' AND submitter=$1", Params() << submitter)
                    .get(),
                0}
                .i64(0);
        if (queued + int64_t(sqls.size()) > rules.max_queued_per_user)
            throw queue_full(submitter, queued, int64_t(sqls.size()), rules.max_queued_per_user);
        auto ids = insert_rows(sqls, submitter);
        txn.commit();
        return ids;
    }
    return insert_rows(sqls, submitter);
}

std::vector<int64_t> PgStore::insert_rows(const std::vector<std::string>& sqls, const std::string& submitter) {
    // One statement: all of them are stored, or none. Identities are drawn in the order of the
    // rows inserted (ORDER BY n), so the ids sorted are the texts' ids in order.
    auto r = exec("INSERT INTO sqlq_tasks(sql, submitter, status, created_at, sql_bytes) "
                  "SELECT s, $2, 'queued', " + now_sql(3) + ", octet_length(s) "
                  "FROM unnest($1::text[]) WITH ORDINALITY AS t(s, n) ORDER BY n RETURNING id",
                  Params() << text_array(sqls) << submitter << clock());
    std::vector<int64_t> ids;
    for (int i = 0; i < PQntuples(r.get()); ++i) ids.push_back(Row{r.get(), i}.i64(0));
    std::sort(ids.begin(), ids.end());
    return ids;
}

void PgStore::mark_published(const std::vector<int64_t>& ids) {
    exec("UPDATE sqlq_tasks SET published=true, published_at=" + now_sql(2) + " WHERE id = ANY($1::bigint[])",
         Params() << int_array(ids) << clock());
}

bool PgStore::owner_gone(const Owner& owner, int64_t lease_until, bool lost, int64_t now) const {
    // Its supervisor saw it die (an owner on another host), else as every engine decides.
    return lost || engine::owner_gone(deps_, owner, lease_until, now);
}

TaskStore::Claim PgStore::claim_as(int64_t id, const Owner& me, const ClaimRules& rules, int64_t unit) {
    for (int round = 0;; ++round) {
        // The SQL text is read here only for a queued task within max_sql_bytes; a running one's
        // once its takeover has won (a worker waiting for a live owner looks every 50 ms).
        auto sel = exec("SELECT status, attempts, owner, owner_pid, owner_start, lease_until, cancel_requested_at, "
                        "sql_bytes, lost_reason, started_at, "
                        "CASE WHEN status = 'queued' AND sql_bytes <= $2 THEN sql END, created_at, "
                        "owner_lost_at IS NOT NULL, " + now_sql(3) + " FROM sqlq_tasks WHERE id=$1",
                        Params() << id << rules.max_sql_bytes << clock());
        if (PQntuples(sel.get()) == 0) return {ClaimKind::unknown};
        const Row row{sel.get(), 0};
        const Status status = parse_status(row.text(0)).value_or(Status::failed);
        const int64_t attempts = row.i64(1);
        const Owner owner{owner_host(row.text(2)), row.i64(3), row.i64(4)};
        const int64_t lease = row.i64(5);
        const bool cancel_pending = !row.null(6);
        const int64_t cancel_requested_at = row.i64(6);
        const int64_t sql_bytes = row.i64(7);
        const std::optional<std::string> lost_reason = row.opt_text(8);
        const int64_t now = row.i64(13);
        const int64_t started_at = row.opt_i64(9).value_or(now);
        std::string sql = row.null(10) ? std::string() : row.text(10);
        const int64_t created_at = row.i64(11);
        const bool lost = row.boolean(12);
        sel.reset();

        if (terminal(status)) return {ClaimKind::finished, 0, status};
        const bool too_long = sql_bytes > rules.max_sql_bytes;
        // Each arrow: one conditional statement, fenced by the status and attempt read above.
        auto fail_now = [&](const char* from, const std::string& err) { return fail_claim(id, from, attempts, err); };
        auto refuse = [&](const char* from) { return fail_now(from, too_long_error(sql_bytes, rules.max_sql_bytes)); };
        // Ours: returns the claim with the times the update wrote.
        auto take = [&](const std::string& update) -> std::optional<Claim> {
            auto r = exec(update, Params() << clock() << me.name() << me.pid << me.start << cfg_.lease_ms << id
                                           << attempts << unit);
            if (PQntuples(r.get()) == 0) return std::nullopt;
            Claim c{ClaimKind::claimed, attempts + 1, Status::running, Row{r.get(), 0}.i64(1), std::move(sql)};
            c.created_at = created_at;
            c.claimed_at = Row{r.get(), 0}.i64(0);
            c.lease_until = 0;
            return c;
        };

        if (status == Status::queued) {
            if (too_long) {
                if (refuse("'queued'")) return {ClaimKind::refused, 0, Status::failed};
            } else if (auto c = take(claim_queued_sql(8, "executions+1") +
                                     "WHERE id=$6 AND status='queued' AND attempts=$7 RETURNING started_at, lease_until")) {
                return *c;
            }
        } else {
            // running: is its owner gone? On this host we can tell at once; elsewhere its
            // supervisor's record or the lease says.
            if (!engine::same_owner(me, owner) && !owner_gone(owner, lease, lost, now))
                return {ClaimKind::held, 0, status, lease};
            if (cancel_pending) {
                auto r = exec("UPDATE sqlq_tasks SET status='cancelled', finished_at=" + now_sql(1) +
                                  ", outcomes=outcomes+1, lease_until=NULL "
                                  "WHERE id=$2 AND status='running' AND attempts=$3 RETURNING finished_at",
                              Params() << clock() << id << attempts);
                if (PQntuples(r.get()) > 0) {
                    Claim c{ClaimKind::cancelled_now, 0, Status::cancelled};
                    c.created_at = created_at;
                    c.claimed_at = Row{r.get(), 0}.i64(0);
                    c.cancel_requested_at = cancel_requested_at;
                    return c;
                }
            } else if (rules.timeout_ms > 0 && now - started_at >= rules.timeout_ms + rules.deadline_grace_ms) {
                if (fail_now("'running'", hard_deadline_error(rules.timeout_ms, rules.deadline_grace_ms)))
                    return {ClaimKind::past_deadline, 0, Status::failed};
            } else if (attempts >= rules.max_attempts) {
                if (fail_now("'running'", gave_up_error(attempts, lost_reason)))
                    return {ClaimKind::gave_up, 0, Status::failed};
            } else if (too_long) {
                if (refuse("'running'")) return {ClaimKind::refused, 0, Status::failed};
            } else if (auto c = take("UPDATE sqlq_tasks SET attempts=attempts+1, executions=executions+1, "
                                     "owner=$2, owner_pid=$3, owner_start=$4, started_at=" + now_sql(1) +
                                     ", lease_until=" + now_sql(1) + " + $5, "
                                     "recovery_ms=CASE WHEN owner_lost_at IS NULL THEN recovery_ms "
                                     "ELSE greatest(0, " + now_sql(1) + " - owner_lost_at) END, "
                                     "owner_lost_at=NULL, lost_reason=NULL, unit=$8 "
                                     "WHERE id=$6 AND status='running' AND attempts=$7 "
                                     "RETURNING started_at, lease_until")) {
                c->sql = Row{exec("SELECT sql FROM sqlq_tasks WHERE id=$1", Params() << id).get(), 0}.text(0);
                return *c;
            }
        }
        // Someone else moved the task between our read and our write: look again.
        if (round > 100) throw Error("task " + std::to_string(id) + ": claim keeps losing races");
    }
}

// Step 3's choice, the fairest waiting user (`chosen`: name, head): the waiting users are found
// one by one through sqlq_tasks_queue (a skip scan: what it costs grows with the users waiting,
// not with their tasks), each with their oldest task, running count and last turn; then fewest
// running, least recently served, oldest. $L: max_running_per_user (0: none); $C: the clock.
std::string fairest_user_sql(int limit_n, int clock_n) {
    const std::string limit = "$" + std::to_string(limit_n) + "::bigint";
    return "WITH RECURSIVE waiting(name) AS ("
           "  SELECT (SELECT min(submitter) FROM sqlq_tasks WHERE status='queued')"
           "  UNION ALL"
           "  SELECT (SELECT min(submitter) FROM sqlq_tasks WHERE status='queued' AND submitter > waiting.name)"
           "  FROM waiting WHERE waiting.name IS NOT NULL),"
           " candidates AS ("
           "  SELECT waiting.name,"
           "         (SELECT min(id) FROM sqlq_tasks WHERE status='queued' AND submitter=waiting.name) AS head,"
           "         (SELECT count(*) FROM sqlq_tasks WHERE status='running' AND submitter=waiting.name"
           "          AND lease_until >= " + now_sql(clock_n) + " AND owner_lost_at IS NULL) AS running,"
           "         coalesce((SELECT max(served) FROM sqlq_tasks WHERE submitter=waiting.name AND served IS NOT NULL),"
           "                  0) AS served"
           "  FROM waiting WHERE waiting.name IS NOT NULL),"
           " chosen AS (SELECT name, head FROM candidates WHERE " + limit + " = 0 OR running < " + limit +
           "  ORDER BY running, served, head LIMIT 1) ";
}

TaskStore::Next PgStore::next_for(int64_t unit, int64_t) {
    // Steps 1 and 2 in one statement (one row, whether the message's task exists or not):
    // 1. the task an earlier delivery of this message runs (or ran, its worker now gone);
    // 2. the task it was published for, running with its owner gone: the sweeper republished it.
    auto r = exec("SELECT (SELECT id FROM sqlq_tasks WHERE unit=$1 AND status='running' LIMIT 1), t.status, t.owner, "
                  "t.owner_pid, t.owner_start, t.lease_until, t.owner_lost_at IS NOT NULL, " + now_sql(2) +
                  " FROM (VALUES (1)) AS one LEFT JOIN sqlq_tasks t ON t.id=$1",
                  Params() << unit << clock());
    const Row row{r.get(), 0};
    if (!row.null(0)) return {Next::Kind::task, row.i64(0), true};
    if (row.null(1)) return {Next::Kind::unknown};
    const Status own_status = parse_status(row.text(1)).value_or(Status::failed);
    if (own_status == Status::running &&
        owner_gone({owner_host(row.text(2)), row.i64(3), row.i64(4)}, row.i64(5), row.boolean(6), row.i64(7)))
        return {Next::Kind::task, unit};
    // 3. The fairest queued task: chosen and claimed in one statement by claim_fairest.
    Next n{Next::Kind::task, 0, false, own_status};
    n.fairest = true;
    return n;
}

bool PgStore::fail_claim(int64_t id, const char* from, int64_t attempts, const std::string& error) {
    return PQntuples(exec(std::string("UPDATE sqlq_tasks SET status='failed', finished_at=") + now_sql(1) +
                              ", error=$2, outcomes=outcomes+1, lease_until=NULL "
                              "WHERE id=$3 AND status=" + from + " AND attempts=$4 RETURNING 1",
                          Params() << clock() << error << id << attempts)
                         .get()) > 0;
}

TaskStore::Claim PgStore::claim_fairest(const Next& n, const Owner& me, const ClaimRules& rules, int64_t unit) {
    // The choice and the claim in one statement: the chosen user's oldest queued task.
    // - Without a running limit, the oldest that no other claim is taking (SKIP LOCKED): workers
    //   claiming at once take a task each instead of waiting for one another's commit.
    // - With one, the chosen head exactly: one user's claims meet on its row, and the one that
    //   waited finds it taken (no row), then chooses again counting the winner, so two claims at
    //   once cannot both pass the limit. (Not FOR UPDATE in the subquery: a row found taken after
    //   the wait is skipped for the next one, chosen on a count from before the wait.)
    const bool limit = rules.max_running_per_user > 0;
    auto r = exec(fairest_user_sql(8, 1) + claim_queued_sql(6, "executions + (sql_bytes <= $7)::int") +
                      "WHERE id=" + (limit ? "(SELECT head FROM chosen)"
                                           : "(SELECT id FROM sqlq_tasks WHERE status='queued' AND "
                                             "submitter=(SELECT name FROM chosen) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)") +
                      " AND status='queued' "
                      "RETURNING id, attempts, started_at, created_at, sql_bytes, CASE WHEN sql_bytes <= $7 THEN sql END",
                  Params() << clock() << me.name() << me.pid << me.start << cfg_.lease_ms << unit
                           << rules.max_sql_bytes << rules.max_running_per_user);
    if (PQntuples(r.get()) == 0) {
        r.reset();
        // Nothing claimed: taken by another claim meanwhile (choose again), or nothing to run.
        auto q = exec(fairest_user_sql(1, 2) +
                          "SELECT (SELECT head FROM chosen), EXISTS (SELECT 1 FROM sqlq_tasks WHERE status='queued')",
                      Params() << rules.max_running_per_user << clock());
        const Row row{q.get(), 0};
        if (!row.null(0)) return {ClaimKind::held};
        Claim c{row.boolean(1) ? ClaimKind::limited : ClaimKind::none, 0, n.status};
        c.id = unit;
        return c;
    }
    const Row row{r.get(), 0};
    const int64_t id = row.i64(0);
    const int64_t attempts = row.i64(1);
    if (row.null(5)) {
        // Too long to load: failed unrun, by this claim's own attempt.
        const bool failed = fail_claim(id, "'running'", attempts, too_long_error(row.i64(4), rules.max_sql_bytes));
        Claim c{failed ? ClaimKind::refused : ClaimKind::held, 0, Status::failed};
        c.id = id;
        return c;
    }
    Claim c{ClaimKind::claimed, attempts, Status::running, 0, row.text(5)};
    c.created_at = row.i64(3);
    c.claimed_at = row.i64(2);
    c.id = id;
    return c;
}

void PgStore::record_fleet(const FleetRecord& r) {
    exec("INSERT INTO sqlq_fleets(host, run_dir, pid, interval_ms, workers, heartbeat_at) "
         "VALUES ($1, $2, $3, $4, $5, " + now_sql(6) + ") "
         "ON CONFLICT (host, run_dir) DO UPDATE SET pid=excluded.pid, interval_ms=excluded.interval_ms, "
         "workers=excluded.workers, heartbeat_at=excluded.heartbeat_at",
         Params() << r.host << r.run_dir << r.pid << r.interval_ms << r.workers_json << clock());
}

void PgStore::forget_fleet(const std::string& host, const std::string& run_dir) {
    exec("DELETE FROM sqlq_fleets WHERE host=$1 AND run_dir=$2", Params() << host << run_dir);
}

std::vector<TaskStore::FleetRecord> PgStore::fleets() {
    auto r = exec("SELECT host, run_dir, pid, interval_ms, workers, heartbeat_at, " + now_sql(1) +
                      " - heartbeat_at FROM sqlq_fleets ORDER BY host, run_dir",
                  Params() << clock());
    std::vector<FleetRecord> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
        const Row row{r.get(), i};
        out.push_back({row.text(0), row.text(1), row.i64(2), row.i64(3), row.text(4), row.i64(5), row.i64(6)});
    }
    return out;
}

int64_t PgStore::now() {
    auto r = exec("SELECT " + now_sql(1), Params() << clock());
    return Row{r.get(), 0}.i64(0);
}

int64_t PgStore::task_of_unit(int64_t unit) {
    // The task its deliveries ran last, ended or not (a letter for a task given up since maps to
    // that one, never to the innocent task the message was first published for).
    auto r = exec("SELECT id FROM sqlq_tasks WHERE unit=$1 ORDER BY status='running' DESC, started_at DESC LIMIT 1",
                  Params() << unit);
    return PQntuples(r.get()) > 0 ? Row{r.get(), 0}.i64(0) : unit;
}

std::map<std::string, int64_t> PgStore::running_per_user() {
    auto r = exec("SELECT submitter, count(*) FROM sqlq_tasks WHERE status='running' AND lease_until >= " + now_sql(1) +
                  " AND owner_lost_at IS NULL GROUP BY submitter",
                  Params() << clock());
    std::map<std::string, int64_t> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) out[Row{r.get(), i}.text(0)] = Row{r.get(), i}.i64(1);
    return out;
}

TaskStore::Tick PgStore::tick(int64_t id, int64_t token, Renew renew) {
    Tick t;
    auto r = renew == Renew::yes
                 ? exec("UPDATE sqlq_tasks SET lease_until=" + now_sql(1) + " + $2 "
                        "WHERE id=$3 AND status='running' AND attempts=$4 RETURNING true, cancel_requested_at",
                        Params() << clock() << cfg_.lease_ms << id << token)
                 : exec("SELECT status='running' AND attempts=$2, cancel_requested_at FROM sqlq_tasks WHERE id=$1",
                        Params() << id << token);
    if (PQntuples(r.get()) == 0) {
        t.still_owner = false;
        return t;
    }
    const Row row{r.get(), 0};
    t.still_owner = row.boolean(0);
    t.cancel_requested = !row.null(1);
    t.cancel_requested_at = row.i64(1);
    return t;
}

bool PgStore::finish(int64_t id, int64_t token, const Outcome& o) {
    // One statement: the status and the result together, or neither (fenced out).
    auto r = exec("WITH done AS (UPDATE sqlq_tasks SET status=$3, finished_at=" + now_sql(1) +
                      ", error=$4, row_count=$5, result_bytes=$6, "
                      "result_ref=CASE WHEN $7::boolean THEN 'results/' || id END, outcomes=outcomes+1, "
                      "lease_until=NULL WHERE id=$2 AND status='running' AND attempts=$10 RETURNING id, finished_at), "
                      "kept AS (INSERT INTO sqlq_results(task_id, columns, rows, created_at) "
                      "SELECT id, $8, $9, finished_at FROM done WHERE $7::boolean "
                      "ON CONFLICT (task_id) DO UPDATE SET columns=excluded.columns, rows=excluded.rows, "
                      "created_at=excluded.created_at) "
                      "SELECT count(*) FROM done",
                  Params() << clock() << id << to_string(o.status) << o.error << o.row_count << o.result_bytes
                           << bool(o.result) << (o.result ? o.result->columns_json : std::string())
                           << (o.result ? o.result->rows_json : std::string()) << token);
    return Row{r.get(), 0}.i64(0) > 0;
}

bool PgStore::finish_then_claim(int64_t id, int64_t token, const Outcome& o, int64_t unit, const Owner& me,
                                const ClaimRules& rules, std::optional<Claim>& next) {
    next.reset();
    // With a per-user limit a claim may wait on the chosen head's row (claim_fairest): not while
    // this transaction holds the outcome's row.
    if (rules.max_running_per_user > 0) return finish(id, token, o);
    std::optional<Claim> c;
    {
        Txn txn(*this);
        if (!finish(id, token, o)) return false;  // fenced out: rolled back, nothing claimed
        try {
            c = claim_next(unit, me, rules);
            txn.commit();  // one WAL flush for both
        } catch (const std::exception&) {
            // The claim's trouble (a failed statement aborts the whole transaction), or the
            // COMMIT lost with its connection, gone in or not: the outcome is written again alone
            // (false, as if fenced out, when it had gone in). A claim that went in is this
            // worker's and unknown to it: its delivery's own claim takes it over (same_owner).
            c.reset();
        }
    }
    if (!c) return finish(id, token, o);
    if (handed_over(c->kind)) next = std::move(c);
    return true;
}

TaskStore::FailKind PgStore::fail_unowned(int64_t id, const std::string& error, const Owner& me) {
    for (int round = 0;; ++round) {
        auto sel = exec("SELECT status, attempts, owner, owner_pid, owner_start, lease_until, cancel_requested_at, "
                        "owner_lost_at IS NOT NULL, " + now_sql(2) + " FROM sqlq_tasks WHERE id=$1",
                        Params() << id << clock());
        if (PQntuples(sel.get()) == 0) return FailKind::unknown;
        const Row row{sel.get(), 0};
        const Status status = parse_status(row.text(0)).value_or(Status::failed);
        const int64_t attempts = row.i64(1);
        const Owner owner{owner_host(row.text(2)), row.i64(3), row.i64(4)};
        const int64_t lease = row.i64(5);
        const bool cancel_pending = !row.null(6);
        const bool lost = row.boolean(7);
        const int64_t now = row.i64(8);
        if (terminal(status)) return FailKind::finished;
        if (status == Status::running) {
            if (!engine::same_owner(me, owner) && !owner_gone(owner, lease, lost, now)) return FailKind::held;
        }
        const bool cancel = status == Status::running && cancel_pending;
        auto r = exec("UPDATE sqlq_tasks SET status=$2, finished_at=" + now_sql(1) +
                          ", error=$3, outcomes=outcomes+1, lease_until=NULL "
                          "WHERE id=$4 AND status=$5 AND attempts=$6 RETURNING 1",
                      Params() << clock() << (cancel ? "cancelled" : "failed")
                               << (cancel ? std::optional<std::string>() : std::optional<std::string>(error)) << id
                               << to_string(status) << attempts);
        if (PQntuples(r.get()) > 0) return cancel ? FailKind::cancelled : FailKind::failed;
        if (round > 100) throw Error("task " + std::to_string(id) + ": failing it keeps losing races");
    }
}

std::vector<int64_t> PgStore::give_up_stale(int64_t stale_ms, int max_attempts) {
    auto r = exec("SELECT id, attempts FROM sqlq_tasks WHERE status='running' AND attempts >= $1 "
                  "AND lease_until < " + now_sql(3) + " - $2 ORDER BY id LIMIT 1000",
                  Params() << max_attempts << stale_ms << clock());
    std::vector<int64_t> failed;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
        const Row row{r.get(), i};
        if (fail_unowned(row.i64(0), gave_up_error(row.i64(1), std::nullopt), Owner{}) == FailKind::failed)
            failed.push_back(row.i64(0));
    }
    return failed;
}

TaskStore::CancelResult PgStore::request_cancel(int64_t id, const std::string& by) {
    // Queued: cancelled at once, its message will be skipped.
    if (PQntuples(exec("UPDATE sqlq_tasks SET status='cancelled', cancel_requested_at=" + now_sql(1) +
                           ", cancelled_by=$2, finished_at=" + now_sql(1) +
                           ", outcomes=outcomes+1 WHERE id=$3 AND status='queued' RETURNING 1",
                       Params() << clock() << by << id)
                      .get()) > 0)
        return {CancelKind::cancelled, Status::cancelled};
    // Running: ask its worker, which stops the query and records the cancel.
    if (PQntuples(exec("UPDATE sqlq_tasks SET cancel_requested_at=coalesce(cancel_requested_at, " + now_sql(1) +
                           "), cancelled_by=coalesce(cancelled_by, $2) WHERE id=$3 AND status='running' RETURNING 1",
                       Params() << clock() << by << id)
                      .get()) > 0)
        return {CancelKind::requested, Status::running};
    auto t = get(id);
    if (!t) return {CancelKind::unknown};
    return {CancelKind::already_finished, t->status};  // states only move forward
}

std::optional<Task> PgStore::get(int64_t id) {
    auto r = exec("SELECT " + kTaskColumns + " FROM sqlq_tasks WHERE id=$1", Params() << id);
    if (PQntuples(r.get()) == 0) return std::nullopt;
    return task_from_row(Row{r.get(), 0});
}

std::vector<Task> PgStore::list(const ListFilter& f) {
    auto r = exec("SELECT " + kListColumns +
                      " FROM sqlq_tasks WHERE ($1::text IS NULL OR status=$1) AND ($3::text IS NULL OR submitter=$3)"
                      " ORDER BY id DESC LIMIT $2",
                  Params() << (f.status ? std::optional<std::string>(to_string(*f.status)) : std::nullopt) << f.limit
                           << f.submitter);
    return tasks_of(r.get());
}

std::optional<ResultData> PgStore::result(int64_t id) {
    auto r = exec("SELECT columns, rows FROM sqlq_results WHERE task_id=$1", Params() << id);
    if (PQntuples(r.get()) == 0) return std::nullopt;
    const Row row{r.get(), 0};
    return ResultData{row.text(0), row.text(1)};
}

std::optional<TaskStore::ResultPage> PgStore::result_page(int64_t id, int64_t offset, int64_t limit) {
    // The server walks the stored text; only the page's rows travel, each as it was stored.
    auto r = exec("SELECT columns, json_array_length(rows::json), "
                  " '[' || coalesce((SELECT string_agg(e.v::text, ',' ORDER BY e.n) FROM "
                  "   json_array_elements(rows::json) WITH ORDINALITY AS e(v, n) WHERE e.n > $3 AND e.n <= $3 + $2), "
                  "   '') || ']' "
                  "FROM sqlq_results WHERE task_id=$1",
                  Params() << id << std::max<int64_t>(limit, 0) << std::max<int64_t>(offset, 0));
    if (PQntuples(r.get()) == 0) return std::nullopt;
    const Row row{r.get(), 0};
    return ResultPage{row.text(0), row.text(2), row.i64(1)};
}

namespace {
class PgResultReader final : public ResultReader {
public:
    explicit PgResultReader(pg::Result r)
        : r_(std::move(r)), columns_(PQgetvalue(r_.get(), 0, 0), size_t(PQgetlength(r_.get(), 0, 0))),
          rows_(PQgetvalue(r_.get(), 0, 1)), size_(size_t(PQgetlength(r_.get(), 0, 1))) {}
    const std::string& columns_json() const override { return columns_; }
    size_t read(char* buf, size_t n) override {
        n = std::min(n, size_ - at_);
        std::memcpy(buf, rows_ + at_, n);
        at_ += n;
        return n;
    }

private:
    pg::Result r_;  // holds the text rows_ points into
    std::string columns_;
    const char* rows_;
    size_t size_, at_ = 0;
};
}  // namespace

std::unique_ptr<ResultReader> PgStore::read_result(int64_t id) {
    auto r = exec("SELECT columns, rows FROM sqlq_results WHERE task_id=$1", Params() << id);
    if (PQntuples(r.get()) == 0) return nullptr;
    return std::make_unique<PgResultReader>(std::move(r));
}

std::vector<Task> PgStore::changes(int64_t after_id, const std::vector<int64_t>& ids) {
    auto r = exec("SELECT " + kListColumns +
                      " FROM sqlq_tasks WHERE status IN ('queued','running') OR id > $1 OR id = ANY($2::bigint[])"
                      " ORDER BY id",
                  Params() << after_id << int_array(ids));
    return tasks_of(r.get());
}

std::map<std::string, int64_t> PgStore::counts() {
    std::map<std::string, int64_t> out;
    for (Status st : {Status::queued, Status::running, Status::succeeded, Status::failed, Status::cancelled})
        out[to_string(st)] = 0;
    auto r = exec("SELECT status, count(*) FROM sqlq_tasks GROUP BY status");
    for (int i = 0; i < PQntuples(r.get()); ++i) out[Row{r.get(), i}.text(0)] = Row{r.get(), i}.i64(1);
    return out;
}

std::vector<int64_t> PgStore::to_republish(int64_t unpublished_ms, int64_t stale_ms, QueueIdle idle,
                                           int max_attempts) {
    auto r = exec("WITH now AS (SELECT " + now_sql(5) + " AS ms) SELECT id FROM sqlq_tasks, now WHERE "
                  " (status='queued' AND NOT published AND created_at < now.ms - $1)"
                  " OR ($3 AND status='queued' AND published AND published_at < now.ms - $2)"
                  " OR (status='running' AND attempts < $4 AND lease_until < now.ms - $2"
                  "     AND (published_at IS NULL OR published_at < now.ms - $2))"
                  " ORDER BY id LIMIT 1000",
                  Params() << unpublished_ms << stale_ms << (idle == QueueIdle::yes) << max_attempts << clock());
    std::vector<int64_t> ids;
    for (int i = 0; i < PQntuples(r.get()); ++i) ids.push_back(Row{r.get(), i}.i64(0));
    return ids;
}

void PgStore::owner_lost(int64_t id, const Owner& owner, const std::string& why) {
    auto r = exec("UPDATE sqlq_tasks SET owner_lost_at=" + now_sql(1) + ", lost_reason=$2 "
                  "WHERE id=$3 AND status='running' AND owner=$4 AND owner_pid=$5 AND owner_start=$6 RETURNING 1",
                  Params() << clock() << why << id << owner.name() << owner.pid << owner.start);
    if (PQntuples(r.get()) == 0)
        exec(std::string("UPDATE sqlq_tasks SET error=error || $1 "
                         "WHERE id=$2 AND owner=$3 AND owner_pid=$4 AND owner_start=$5 AND ") +
                 engine::kGaveUpWithoutLastSql,
             Params() << engine::last_loss_words(why) << id << owner.name() << owner.pid << owner.start);
}

bool PgStore::fail_abandoned(int64_t id, const Owner& owner, const std::string& error) {
    auto r = exec("UPDATE sqlq_tasks SET status='failed', finished_at=" + now_sql(1) +
                      ", error=$2, outcomes=outcomes+1, lease_until=NULL "
                      "WHERE id=$3 AND status='running' AND owner=$4 AND owner_pid=$5 AND owner_start=$6 RETURNING 1",
                  Params() << clock() << error << id << owner.name() << owner.pid << owner.start);
    return PQntuples(r.get()) > 0;
}

int64_t PgStore::expire_results(const Retention& ret) {
    // One statement: the results past their time, then those over the per-user cap and over the
    // global cap (the newest are kept while their running sum, newest first, fits).
    auto r = exec(
        "WITH now AS (SELECT " + now_sql(1) + " AS ms), "
        "ranked AS (SELECT id, "
        "  sum(result_bytes) OVER (PARTITION BY submitter ORDER BY finished_at DESC, id DESC ROWS UNBOUNDED PRECEDING) AS user_upto, "
        "  sum(result_bytes) OVER (ORDER BY finished_at DESC, id DESC ROWS UNBOUNDED PRECEDING) AS all_upto "
        "  FROM sqlq_tasks WHERE result_ref IS NOT NULL), "
        "doomed AS (SELECT task_id AS id FROM sqlq_results, now WHERE created_at < now.ms - $2 * 1000 "
        "  UNION SELECT id FROM ranked WHERE ($3 > 0 AND user_upto > $3) OR ($4 > 0 AND all_upto > $4)), "
        "gone AS (DELETE FROM sqlq_results WHERE task_id IN (SELECT id FROM doomed) RETURNING task_id), "
        "unref AS (UPDATE sqlq_tasks SET result_ref=NULL WHERE result_ref IS NOT NULL AND "
        "  (id IN (SELECT id FROM doomed) OR finished_at < (SELECT ms FROM now) - $2 * 1000)) "
        "SELECT count(*) FROM gone",
        Params() << clock() << ret.ttl_s << ret.max_bytes_per_user << ret.max_bytes);
    return Row{r.get(), 0}.i64(0);
}

TaskStore::AuditFigures PgStore::audit() {
    AuditFigures f;
    f.by_status = counts();
    {
        auto r = exec("SELECT count(*) FILTER (WHERE NOT published AND status IN ('queued','running')),"
                      " count(*) FILTER (WHERE outcomes > 1),"
                      " coalesce(sum(greatest(executions - 1, 0)), 0) FROM sqlq_tasks");
        const Row row{r.get(), 0};
        f.unpublished = row.i64(0);
        f.duplicate_outcomes = row.i64(1);
        f.reexecuted = row.i64(2);
    }
    {
        auto r = exec("SELECT id, owner, owner_pid, owner_start, lease_until, owner_lost_at IS NOT NULL, " +
                          now_sql(1) + " FROM sqlq_tasks WHERE status='running' ORDER BY id",
                      Params() << clock());
        for (int i = 0; i < PQntuples(r.get()); ++i) {
            const Row row{r.get(), i};
            if (owner_gone({owner_host(row.text(1)), row.i64(2), row.i64(3)}, row.i64(4), row.boolean(5), row.i64(6)))
                f.stuck_ids.push_back(row.i64(0));
        }
        f.stuck = int64_t(f.stuck_ids.size());
    }
    {
        auto r = exec("SELECT count(*) FROM sqlq_tasks WHERE status='queued' "
                      "AND coalesce(published_at, created_at) < " + now_sql(1) + " - 5000",
                      Params() << clock());
        f.queued_stale = Row{r.get(), 0}.i64(0);
    }
    {
        auto r = exec("SELECT recovery_ms FROM sqlq_tasks WHERE recovery_ms IS NOT NULL ORDER BY recovery_ms");
        for (int i = 0; i < PQntuples(r.get()); ++i) f.recovery_ms.push_back(Row{r.get(), i}.i64(0));
    }
    return f;
}

std::unique_ptr<StoreWatch> PgStore::watch() {
    try {
        return std::make_unique<PgWatch>(params_, cfg_.url);
    } catch (const Error&) {
        return std::make_unique<PollingWatch>();  // the server cannot be reached now: poll
    }
}

}  // namespace sqlq
