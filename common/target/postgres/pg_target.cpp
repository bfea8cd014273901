#include "target/postgres/pg_target.h"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <unistd.h>

#include "target/postgres/statement.h"
#include "target/postgres/values.h"
#include "target/row_encoder.h"
#include "util/clock.h"

namespace sqlq::pg {

namespace {
constexpr int kWaitMs = 20;             // the poll callback's cadence (PollFn)
constexpr int64_t kStopWaitMs = 1000;   // how long a stop waits for the server to end the statement

// The session every task runs in. Read-only by default (the task's own transaction is too); the
// server checks every second, while a statement runs, that its client is still there; and the
// values' text forms are the ones values.cpp reads.
constexpr const char* kSessionOptions =
    "-c default_transaction_read_only=on -c client_connection_check_interval=1000 -c DateStyle=ISO "
    "-c IntervalStyle=iso_8601 -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=1";

bool wait_socket(PGconn* c, short events, int ms) {
    pollfd p{PQsocket(c), events, 0};
    if (p.fd < 0) return false;
    int rc = ::poll(&p, 1, ms);
    return rc > 0 || (rc < 0 && errno == EINTR);
}

// A server error as words for the user.
std::string server_error(const PGresult* r, const LimitGuard& guard, QueryOutcome::Kind& kind) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const std::string code = state ? state : "";
    std::string msg = primary ? primary : tidy(PQresultErrorMessage(r));
    kind = QueryOutcome::Kind::error;
    if (code == "57014" && msg.find("statement timeout") != std::string::npos) {
        kind = QueryOutcome::Kind::timeout;
        return guard.timeout_error();
    }
    if (code == "42601" && msg.find("cannot insert multiple commands") != std::string::npos)
        return "refused: one statement per task, and the text holds more than one";
    if (code == "25006") return "refused: " + msg + " (the target is read-only)";
    if (const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL)) msg += std::string(". ") + detail;
    if (const char* hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT)) msg += std::string(" (hint: ") + hint + ")";
    if (const char* pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION)) msg += std::string(" at character ") + pos;
    if (!code.empty()) msg += " (SQLSTATE " + code + ")";
    return msg;
}
}  // namespace

PgTarget::PgTarget(const QueryConfig& cfg) : cfg_(cfg), where_(redact_url(cfg.database)) {
    // Every parameter the URL gives (libpq's URI syntax), then ours: the session options after
    // the URL's (so that the URL cannot turn read-only off), our application_name (the tag a
    // backend is found by).
    try {
        params_ = ConnParams::from_url(cfg.database, "[query] database", kSessionOptions,
                                       "sqlq-worker " + std::to_string(::getpid()));
    } catch (const Error& e) {
        throw TargetError(e.what(), kExitUsage);
    }
    // Now, so that a refused role stops the worker at its start, not at its first task.
    connect([] { return false; });
}

std::string PgTarget::ready(const PollFn& poll) {
    if (conn_) {
        // An idle connection has nothing to read, unless the server closed it or is closing it
        // (a restart sends "terminating connection" to its idle clients): then connect again
        // now, before a task is claimed, rather than fail the task at its BEGIN.
        pollfd p{PQsocket(conn_.get()), POLLIN, 0};
        if (p.fd >= 0 && ::poll(&p, 1, 0) == 0) return "";
        if (p.fd >= 0 && PQconsumeInput(conn_.get()) && PQstatus(conn_.get()) == CONNECTION_OK && !PQisBusy(conn_.get())) {
            // Something else arrived (a notice): drain it and keep the connection.
            while (Result r{PQgetResult(conn_.get())}) {
            }
            if (PQstatus(conn_.get()) == CONNECTION_OK) return "";
        }
    }
    return connect(poll);
}

std::string PgTarget::connect(const PollFn& poll) {
    drop();
    Conn c = params_.start();
    auto failed = [&](std::string why) {
        last_connect_error_ = "cannot connect to " + where_ + ": " + scrub(tidy(std::move(why)), cfg_.database);
        return last_connect_error_;
    };
    if (!c) return failed("out of memory");
    const int64_t deadline = mono_ms() + params_.connect_timeout_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(c.get()) != CONNECTION_BAD) {
        st = PQconnectPoll(c.get());
        if (st == PGRES_POLLING_OK || st == PGRES_POLLING_FAILED) break;
        if (mono_ms() >= deadline)
            return failed("no answer within " + std::to_string(params_.connect_timeout_ms) + " ms (connect_timeout)");
        if (poll()) return failed("stopped while connecting");
        wait_socket(c.get(), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, kWaitMs);
    }
    if (PQstatus(c.get()) != CONNECTION_OK) return failed(PQerrorMessage(c.get()));

    Result who(PQexec(c.get(), "SELECT rolsuper, rolbypassrls, current_user FROM pg_roles WHERE rolname = current_user"));
    if (PQresultStatus(who.get()) != PGRES_TUPLES_OK || PQntuples(who.get()) != 1)
        return failed(std::string("cannot read the role's attributes: ") + PQresultErrorMessage(who.get()));
    const bool super = PQgetvalue(who.get(), 0, 0)[0] == 't';
    const bool bypass = PQgetvalue(who.get(), 0, 1)[0] == 't';
    if ((super || bypass) && !cfg_.allow_superuser)
        throw TargetError(std::string("[query] database: role ") + PQgetvalue(who.get(), 0, 2) + " on " + where_ +
                              (super ? " is a superuser" : " may bypass row-level security") +
                              ": queries would not be kept to what a reader may see; connect as a read-only role "
                              "(docs/operations.md, \"A PostgreSQL target\") or set [query] allow_superuser = true",
                          kExitUsage);
    canceller_.reset(PQgetCancel(c.get()));
    conn_ = std::move(c);
    last_connect_error_.clear();
    return "";
}

void PgTarget::drop() noexcept {
    canceller_.reset();
    conn_.reset();
}

bool PgTarget::exec(const char* sql, std::string* error) {
    Result r(PQexec(conn_.get(), sql));
    const auto st = PQresultStatus(r.get());
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return true;
    if (error) *error = tidy(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn_.get()));
    return false;
}

bool PgTarget::stop_on_server() {
    char err[256];
    if (!canceller_ || !PQcancel(canceller_.get(), err, sizeof err)) {
        drop();
        return false;
    }
    const int64_t deadline = mono_ms() + kStopWaitMs;
    for (;;) {
        while (!PQisBusy(conn_.get())) {
            Result r(PQgetResult(conn_.get()));
            if (!r) return true;  // the statement has ended on the server
        }
        if (mono_ms() >= deadline) break;
        wait_socket(conn_.get(), POLLIN, kWaitMs);
        if (!PQconsumeInput(conn_.get())) break;
    }
    // Not ended in time (or the connection broke): closing it ends the statement too, within
    // client_connection_check_interval.
    drop();
    return false;
}

void PgTarget::reset_session() {
    if (!conn_) return;
    if (PQstatus(conn_.get()) != CONNECTION_OK || !exec("ROLLBACK") || !exec("DISCARD ALL") ||
        PQtransactionStatus(conn_.get()) != PQTRANS_IDLE)
        drop();
}

QueryOutcome PgTarget::run(const std::string& sql, const PollFn& poll) {
    cancel_.store(false, std::memory_order_relaxed);
    QueryOutcome out;
    LimitGuard guard(cfg_, poll, cancel_);
    auto end = [&](QueryOutcome::Kind kind, std::string why) {
        out.kind = kind;
        out.error = std::move(why);
        out.rows = guard.rows();
        out.bytes = guard.bytes();
        return std::move(out);
    };
    if (auto refused = refuse_statement(sql)) return end(QueryOutcome::Kind::error, *refused);

    // The transaction. A kept connection may have died since the last task (the server
    // restarted, an idle timeout): then connect again, once.
    const std::string begin = "BEGIN READ ONLY; SET LOCAL statement_timeout = " + std::to_string(cfg_.timeout_ms);
    std::string why;
    for (int attempt = 0;; ++attempt) {
        if (!conn_) {
            if (auto e = connect([&] { return guard.tick(); }); !e.empty()) {
                if (guard.stop() == LimitGuard::Stop::stopped) return end(QueryOutcome::Kind::stopped, "");
                return end(QueryOutcome::Kind::error, e);
            }
        }
        if (exec(begin.c_str(), &why)) break;
        const bool broken = PQstatus(conn_.get()) != CONNECTION_OK;
        drop();
        if (!broken || attempt > 0)
            return end(QueryOutcome::Kind::error, "cannot start the query's transaction on " + where_ + ": " + why);
    }

    // One statement (the extended protocol refuses more), results as text, one row at a time.
    if (!PQsendQueryParams(conn_.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0)) {
        why = tidy(PQerrorMessage(conn_.get()));
        drop();
        return end(QueryOutcome::Kind::error, "cannot send the query to " + where_ + ": " + why);
    }
    PQsetSingleRowMode(conn_.get());

    RowEncoder rows;
    std::vector<TypeOid> types;
    bool described = false;
    auto describe = [&](const PGresult* r) -> std::optional<std::string> {
        described = true;
        const int n = PQnfields(r);
        for (int i = 0; i < n; ++i) {
            rows.column(PQfname(r, i));
            types.push_back(PQftype(r, i));
        }
        return guard.add_bytes(rows.header_bytes());
    };

    std::optional<std::string> over;      // a cap the result passed
    std::optional<std::string> failure;   // the server's error
    QueryOutcome::Kind failure_kind = QueryOutcome::Kind::error;
    bool lost = false;                    // the connection broke
    bool done = false;
    while (!done) {
        while (!done && !PQisBusy(conn_.get())) {
            Result r(PQgetResult(conn_.get()));
            if (!r) {
                done = true;
                break;
            }
            switch (PQresultStatus(r.get())) {
            case PGRES_SINGLE_TUPLE: {
                if (!described) over = describe(r.get());
                if (!over) over = guard.admit_row();
                if (over) break;
                const int n = int(types.size());
                for (int i = 0; i < n; ++i) {
                    if (PQgetisnull(r.get(), 0, i))
                        rows.null();
                    else
                        encode_value(rows, types[size_t(i)],
                                     std::string_view(PQgetvalue(r.get(), 0, i), size_t(PQgetlength(r.get(), 0, i))));
                }
                if ((over = guard.add_bytes(rows.row_bytes()))) break;
                rows.end_row();
                guard.row_done();
                break;
            }
            case PGRES_TUPLES_OK:  // the end of the rows (or a result with none)
                if (!described) over = describe(r.get());
                break;
            case PGRES_COMMAND_OK:
            case PGRES_EMPTY_QUERY: break;
            default:
                failure = server_error(r.get(), guard, failure_kind);
                break;
            }
            if (over) break;
        }
        if (done) break;
        if (over || guard.tick()) {
            // A cap, a cancel, the deadline or the worker's stop: the server must stop too.
            stop_on_server();
            break;
        }
        wait_socket(conn_.get(), POLLIN, kWaitMs);
        if (!PQconsumeInput(conn_.get())) {
            lost = true;
            why = tidy(PQerrorMessage(conn_.get()));
            drop();
            break;
        }
    }
    reset_session();

    switch (guard.stop()) {
    case LimitGuard::Stop::timeout: return end(QueryOutcome::Kind::timeout, guard.timeout_error());
    case LimitGuard::Stop::stopped: return end(QueryOutcome::Kind::stopped, "");
    case LimitGuard::Stop::none: break;
    }
    if (over) return end(QueryOutcome::Kind::error, *over);
    if (lost) return end(QueryOutcome::Kind::error, "the connection to " + where_ + " was lost while the query ran: " + why);
    if (failure) return end(failure_kind, *failure);
    out.result = std::move(rows).finish();
    return end(QueryOutcome::Kind::ok, "");
}

}  // namespace sqlq::pg
