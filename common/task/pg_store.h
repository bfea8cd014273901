#pragma once
// The task store on PostgreSQL ([store] url): one database shared by the fleets of several
// hosts. Every statement it runs is in pg_store.cpp; the tables are sqlq_tasks and sqlq_results
// (and sqlq_schema, the version), made and migrated at the first start.
//
// Time is the database's: leases, deadlines and the times recorded are read from the server's
// clock (sqlq_now_ms()), so hosts whose clocks disagree neither steal live tasks nor keep dead
// ones. (A test may inject a clock through StoreDeps; then that one is used.) An owner on
// another host is gone when its lease has run out, or at once when its supervisor recorded it
// lost (owner_lost).
//
// One connection per store object, made again after it breaks: a failure of the connection or
// of the server (restart, shutdown, full disk, lock timeout) is a transient StoreError, and the
// next call connects again. A statement whose connection broke may or may not have committed;
// every write is a conditional statement, so trying it again is safe (a finish that did commit
// is then fenced out: the outcome is stored, once).
#include <string>
#include <unordered_map>

#include "pg/conninfo.h"
#include "task/store.h"

namespace sqlq {

namespace pgstore {
class Params;
}

class PgStore final : public TaskStore {
public:
    static constexpr int kSchemaVersion = 4;

    // Connects to cfg.url and migrates the schema. StoreError (transient) when the server cannot
    // be reached; Error when the URL cannot be read.
    PgStore(const StoreConfig& cfg, StoreDeps deps);

    std::vector<int64_t> insert_batch(const std::vector<std::string>& sqls, const std::string& submitter,
                                      const InsertRules& rules) override;
    using TaskStore::insert_batch;
    void mark_published(const std::vector<int64_t>& ids) override;
    using TaskStore::mark_published;
    int64_t task_of_unit(int64_t unit) override;
    void record_fleet(const FleetRecord& r) override;
    void forget_fleet(const std::string& host, const std::string& run_dir) override;
    std::vector<FleetRecord> fleets() override;
    std::map<std::string, int64_t> running_per_user() override;
    Tick tick(int64_t id, int64_t token, Renew renew) override;
    bool finish(int64_t id, int64_t token, const Outcome& outcome) override;
    bool finish_then_claim(int64_t id, int64_t token, const Outcome& outcome, int64_t unit, const Owner& me,
                           const ClaimRules& rules, std::optional<Claim>& next) override;
    FailKind fail_unowned(int64_t id, const std::string& error, const Owner& me) override;
    CancelResult request_cancel(int64_t id, const std::string& by) override;
    std::optional<Task> get(int64_t id) override;
    using TaskStore::list;
    std::vector<Task> list(const ListFilter& filter) override;
    std::optional<ResultData> result(int64_t id) override;
    std::optional<ResultPage> result_page(int64_t id, int64_t offset, int64_t limit) override;
    // The stored text is fetched in one statement (one snapshot) and handed out a block at a time:
    // one copy of it in memory while it is read (SQLite reads its blocks from the file instead).
    std::unique_ptr<ResultReader> read_result(int64_t id) override;
    std::vector<Task> changes(int64_t after_id, const std::vector<int64_t>& ids) override;
    std::map<std::string, int64_t> counts() override;
    std::vector<int64_t> to_republish(int64_t unpublished_ms, int64_t stale_ms, QueueIdle idle,
                                      int max_attempts) override;
    std::vector<int64_t> give_up_stale(int64_t stale_ms, int max_attempts) override;
    void owner_lost(int64_t id, const Owner& owner, const std::string& why) override;
    bool fail_abandoned(int64_t id, const Owner& owner, const std::string& error) override;
    int64_t expire_results(const Retention& r) override;
    using TaskStore::expire_results;
    AuditFigures audit() override;
    // LISTEN/NOTIFY on a connection of its own (task/pg_watch.h); polling when that cannot be made.
    std::unique_ptr<StoreWatch> watch() override;
    std::string where() const override { return where_; }
    int64_t now() override;

private:
    PGconn* connection();
    void drop() noexcept;
    // Runs one statement (prepared once per connection) with text parameters; throws StoreError.
    pg::Result exec(const std::string& sql, const pgstore::Params& params);
    pg::Result exec(const std::string& sql);
    [[noreturn]] void fail(const PGresult* r, const std::string& doing);
    // A transaction on conn_ (BEGIN ... COMMIT), rolled back unless committed.
    class Txn;
    void migrate();
    std::vector<int64_t> insert_rows(const std::vector<std::string>& sqls, const std::string& submitter);
    Claim claim_as(int64_t id, const Owner& me, const ClaimRules& rules, int64_t unit) override;
    Next next_for(int64_t unit, int64_t max_running_per_user) override;
    Claim claim_fairest(const Next& n, const Owner& me, const ClaimRules& rules, int64_t unit) override;
    // A claim's arrow to failed: task `id` from status `from` (quoted SQL) at attempt `attempts`.
    bool fail_claim(int64_t id, const char* from, int64_t attempts, const std::string& error);
    // The injected clock's reading, or NULL: the statement then reads the database's clock.
    std::optional<int64_t> clock() const;
    // Whether the owner recorded in a running task's row is gone (process, record or lease).
    bool owner_gone(const Owner& owner, int64_t lease_until, bool lost, int64_t now) const;

    StoreConfig cfg_;
    StoreDeps deps_;
    std::string where_;  // the URL without its password
    pg::ConnParams params_;
    pg::Conn conn_;
    std::unordered_map<std::string, std::string> prepared_;  // SQL → statement name, on conn_
};

}  // namespace sqlq
