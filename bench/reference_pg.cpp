// sqlq-bench-reference-pg: the design sqlq replaces (bench/reference_consumer.py) on sqlq's
// PostgreSQL task store. One consumer process with prefetch 1 that, for each message, reads the
// task's status in the store, marks it running (its own commit), runs the query on the SQLite
// target, stores the result and the status in one transaction, and only then acks. It is C++
// because the Python one would need psycopg2, which is not among the project's dependencies;
// so beside sqlq it shows the design's cost, not Python's.
//
// Like sqlq at durability "full" (the default), every commit waits for the disk
// (synchronous_commit = on). Each statement is one round trip, as a plain client library makes
// them; the statements are prepared once per process. Runs until killed.
//
//   sqlq-bench-reference-pg --port P --queue Q --store-url URL --db DEMO.db
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <sqlite3.h>
#include <unistd.h>

#include "amqp_min.h"
#include "args.h"
#include "pg/handles.h"

namespace {

namespace pg = sqlq::pg;
using nlohmann::json;

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The task store: one connection, four prepared statements.
class Store {
public:
    explicit Store(const std::string& url) : conn_(PQconnectdb(url.c_str())) {
        if (PQstatus(conn_.get()) != CONNECTION_OK)
            throw std::runtime_error("connect to the task store: " + error());
        command("SET synchronous_commit = on");
        prepare("status", "SELECT status, sql FROM sqlq_tasks WHERE id = $1");
        prepare("running",
                "UPDATE sqlq_tasks SET status = 'running', attempts = attempts + 1, executions = executions + 1, "
                "owner = $2, started_at = $3 WHERE id = $1 AND status IN ('queued', 'running')");
        prepare("result",
                "INSERT INTO sqlq_results(task_id, columns, rows, created_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (task_id) DO UPDATE SET columns = EXCLUDED.columns, rows = EXCLUDED.rows, "
                "created_at = EXCLUDED.created_at");
        prepare("outcome",
                "UPDATE sqlq_tasks SET status = $2, error = $3, row_count = $4, finished_at = $5, "
                "outcomes = outcomes + 1 WHERE id = $1 AND status = 'running'");
    }

    void command(const char* sql) { check(pg::Result(PQexec(conn_.get(), sql)), PGRES_COMMAND_OK, sql); }

    // A prepared statement; a null pointer among the values is SQL NULL.
    pg::Result run(const char* name, const std::vector<const char*>& values, ExecStatusType want = PGRES_COMMAND_OK) {
        return check(pg::Result(PQexecPrepared(conn_.get(), name, int(values.size()), values.data(), nullptr, nullptr,
                                               /*resultFormat=*/0)),
                     want, name);
    }

private:
    std::string error() const { return PQerrorMessage(conn_.get()); }

    void prepare(const char* name, const char* sql) {
        check(pg::Result(PQprepare(conn_.get(), name, sql, 0, nullptr)), PGRES_COMMAND_OK, name);
    }

    pg::Result check(pg::Result r, ExecStatusType want, const std::string& doing) const {
        if (PQresultStatus(r.get()) != want) throw std::runtime_error(doing + ": " + error());
        return r;
    }

    pg::Conn conn_;
};

struct CloseDb {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct Finalize {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};

struct Outcome {
    std::string status;
    std::optional<std::string> error, columns, rows;
    std::optional<int64_t> row_count;
};

// Runs sql on the read-only target; columns and rows encoded as JSON arrays (a blob as sqlq
// encodes one, {"blob_hex": "..."}).
Outcome execute(sqlite3* db, const std::string& sql) {
    sqlite3_stmt* raw = nullptr;
    const int rc = sqlite3_prepare_v2(db, sql.c_str(), int(sql.size()), &raw, nullptr);
    std::unique_ptr<sqlite3_stmt, Finalize> st(raw);
    if (rc != SQLITE_OK) return {"failed", sqlite3_errmsg(db), {}, {}, {}};
    const int n = sqlite3_column_count(st.get());
    json columns = json::array(), rows = json::array();
    for (int i = 0; i < n; ++i) columns.push_back(sqlite3_column_name(st.get(), i));
    int step;
    while ((step = sqlite3_step(st.get())) == SQLITE_ROW) {
        json row = json::array();
        for (int i = 0; i < n; ++i) {
            switch (sqlite3_column_type(st.get(), i)) {
            case SQLITE_INTEGER: row.push_back(int64_t(sqlite3_column_int64(st.get(), i))); break;
            case SQLITE_FLOAT: row.push_back(sqlite3_column_double(st.get(), i)); break;
            case SQLITE_TEXT:
                row.push_back(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st.get(), i)),
                                          size_t(sqlite3_column_bytes(st.get(), i))));
                break;
            case SQLITE_BLOB: {
                static const char digits[] = "0123456789abcdef";
                const auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(st.get(), i));
                std::string hex;
                for (int k = 0; k < sqlite3_column_bytes(st.get(), i); ++k)
                    hex += digits[p[k] >> 4], hex += digits[p[k] & 15];
                row.push_back({{"blob_hex", hex}});
                break;
            }
            default: row.push_back(nullptr);
            }
        }
        rows.push_back(std::move(row));
    }
    if (step != SQLITE_DONE) return {"failed", sqlite3_errmsg(db), {}, {}, {}};
    const auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
    return {"succeeded", {}, dump(columns), dump(rows), int64_t(rows.size())};
}

// One message: the task it names run and recorded (or left alone if it has ended already).
void handle(Store& store, sqlite3* target, const std::string& owner, int64_t task_id) {
    const std::string id = std::to_string(task_id);
    auto r = store.run("status", {id.c_str()}, PGRES_TUPLES_OK);
    if (PQntuples(r.get()) == 0) return;
    const std::string status = PQgetvalue(r.get(), 0, 0), sql = PQgetvalue(r.get(), 0, 1);
    if (status == "succeeded" || status == "failed" || status == "cancelled") return;
    const std::string started = std::to_string(now_ms());
    store.run("running", {id.c_str(), owner.c_str(), started.c_str()});

    const Outcome o = execute(target, sql);

    store.command("BEGIN");
    try {
        const std::string at = std::to_string(now_ms());
        if (o.columns) store.run("result", {id.c_str(), o.columns->c_str(), o.rows->c_str(), at.c_str()});
        const std::string count = o.row_count ? std::to_string(*o.row_count) : "";
        store.run("outcome", {id.c_str(), o.status.c_str(), o.error ? o.error->c_str() : nullptr,
                              o.row_count ? count.c_str() : nullptr, at.c_str()});
        store.command("COMMIT");
    } catch (...) {
        try {
            store.command("ROLLBACK");
        } catch (...) {  // the first error is the one to report
        }
        throw;
    }
}

int64_t task_id_of(const std::string& body) {
    const auto j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("task_id") || !j["task_id"].is_number_integer())
        throw std::runtime_error("a message without a task_id: " + body.substr(0, 200));
    return j["task_id"].get<int64_t>();
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const bench::Args a(argc, argv, 1);
        const std::string queue = a.str("queue", ""), url = a.str("store-url", ""), db = a.str("db", "");
        if (queue.empty() || url.empty() || db.empty())
            throw std::runtime_error("--queue, --store-url and --db are required");

        sqlite3* raw = nullptr;
        const int rc = sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
        std::unique_ptr<sqlite3, CloseDb> target(raw);
        if (rc != SQLITE_OK)
            throw std::runtime_error("open " + db + ": " + (raw ? sqlite3_errmsg(raw) : "out of memory"));

        char host[256] = {};
        gethostname(host, sizeof host - 1);
        const std::string owner = std::string(host) + ":" + std::to_string(getpid());

        // Several of these start at once on a fresh queue, which all of them declare: a declare
        // can fail while another one's is under way, and a consume right after a declare that
        // returned can fail with INTERNAL_ERROR while the quorum queue's process is still
        // starting (seen with RabbitMQ 3.10: {badmatch,{error,noproc}}). Try again, like a
        // service would, for 30 s.
        std::unique_ptr<bench::Conn> broker;
        std::unique_ptr<Store> store;
        for (const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);;) {
            try {
                store = std::make_unique<Store>(url);
                broker = std::make_unique<bench::Conn>("127.0.0.1", int(a.num("port", 5672)));
                broker->declare_task_queue(queue, /*delivery_limit=*/20);
                broker->qos(1);
                broker->consume(queue);
                break;
            } catch (const std::exception& e) {
                if (std::chrono::steady_clock::now() > deadline) throw;
                std::fprintf(stderr, "sqlq-bench-reference-pg[%d]: set-up failed (%s); retrying\n", getpid(), e.what());
                std::this_thread::sleep_for(std::chrono::milliseconds(200));
            }
        }

        for (;;) {
            amqp_maybe_release_buffers(broker->get());
            amqp_envelope_t env;
            broker->check(amqp_consume_message(broker->get(), &env, /*timeout=*/nullptr, 0), "consume");
            const uint64_t tag = env.delivery_tag;
            const std::string body(static_cast<const char*>(env.message.body.bytes), env.message.body.len);
            amqp_destroy_envelope(&env);
            handle(*store, target.get(), owner, task_id_of(body));
            broker->ack(tag);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sqlq-bench-reference-pg[%d]: %s\n", getpid(), e.what());
        return 1;
    }
}
