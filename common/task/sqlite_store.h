#pragma once
// The task store on SQLite: one file on this host, shared by the processes of one fleet. Every
// statement it runs is in sqlite_store.cpp. Writers queue at a writer gate beside the file
// (sqlite/write_gate.h), then take SQLite's lock.
#include <string>
#include <unordered_map>

#include "sqlite/db.h"
#include "sqlite/write_gate.h"
#include "task/store.h"

namespace sqlq {

class SqliteStore final : public TaskStore {
public:
    static constexpr int kSchemaVersion = 8;

    // Opens (creating if needed) the file at cfg.path and migrates the schema.
    SqliteStore(const StoreConfig& cfg, StoreDeps deps);

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
    // The rows' text through an incremental blob handle (sqlite::Blob), 64 KiB at a time.
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
    // inotify on the write-ahead log (task/sqlite_watch.h); polling when that cannot be set up.
    std::unique_ptr<StoreWatch> watch() override;
    std::string where() const override { return db_.path(); }
    int64_t now() override { return deps_.clock(); }
    // Writes go without the writer gate: a slower store, not a broken one.
    std::string warning() const override;

    // For the SQLite store's own tests.
    sqlite::Db& db() { return db_; }
    const std::string& gate_error() const { return gate_error_; }

private:
    void migrate();
    void persist();  // at durability "full": fsync what this connection has committed
    // finish()'s writes, inside a write transaction the caller holds. False: fenced out (the
    // caller rolls back).
    bool write_outcome(int64_t id, int64_t token, const Outcome& o);
    // The statement for `sql`, prepared on first use and kept: a worker runs the same few
    // statements for every task, and parsing them cost more than running them. Returned reset,
    // with no bindings; a caller that reads rows resets it when done (ResetGuard), so that no
    // cached statement keeps a read transaction open between tasks.
    sqlite::Stmt& cached(const std::string& sql);

    // Every write goes through the writer gate first (sqlite/write_gate.h), then SQLite's lock.
    // SQLite's automatic checkpoint (every 1,000 WAL pages) runs inside a COMMIT, so under the
    // gate: moving it out measured slower at durability full (docs/performance.md).
    // Inside a claim scope the gate and the write transaction are already held.
    sqlite::WriteGate::Held writing() {
        return claim_scope_ ? sqlite::WriteGate::Held{} : gate_.lock(cfg_.busy_timeout_ms);
    }
    // claim_next's round as one write transaction: one start of a transaction (SQLite drops a
    // connection's page cache at each start after another process committed, and takes and
    // drops its WAL-index locks) instead of three (the choice's read, the claim's read, its
    // write). The choice is then made under the gate, so no claim loses a race. Not with
    // max_running_per_user: a worker whose users are all at their limit asks again every 100 ms,
    // and a thousand of them would hold the gate against every real write; they read, as before.
    std::unique_ptr<ClaimScope> claim_scope(const ClaimRules& rules) override;
    class Scope;
    Scope* claim_scope_ = nullptr;
    // A row of list() or changes(): the task, with its SQL preview read in place when the row
    // has none stored (a task from before schema version 3).
    Task list_row(const sqlite::Stmt& s);
    Claim claim_as(int64_t id, const Owner& me, const ClaimRules& rules, int64_t unit) override;
    Next next_for(int64_t unit, int64_t max_running_per_user) override;
    Claim try_claim(int64_t id, const Owner& me, const ClaimRules& rules, int64_t unit);
    FailKind try_fail_unowned(int64_t id, const std::string& error, const Owner& me);
    // Whether the owner recorded in a running task's row is gone (process or lease).
    bool owner_gone(const Owner& owner, int64_t lease_until, int64_t now) const;

    StoreConfig cfg_;
    StoreDeps deps_;
    sqlite::Db db_;
    sqlite::WriteGate gate_;
    std::string gate_error_;
    std::unordered_map<std::string, sqlite::Stmt> stmts_;  // declared after db_: finalized before it closes
};

}  // namespace sqlq
