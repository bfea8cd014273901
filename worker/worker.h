#pragma once
// sqlq-worker: consume → decode → claim → execute → record → ack, one task at a time (with
// prefetch >= 2, an outcome and the next delivery's claim share a transaction: write_first).
// A delivery is acked only after the task's outcome is committed (or the task is found
// finished), so a worker that dies at any point leaves its message to be redelivered.
#include <atomic>
#include <deque>
#include <exception>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "amqp/connection.h"
#include "config/config.h"
#include "target/target.h"
#include "task/report.h"
#include "task/store.h"

namespace sqlq {

class Worker {
public:
    Worker(const Config& cfg, std::atomic<bool>& stop);
    // Runs until asked to stop (exit 0) or a fatal error (throws).
    void run();

private:
    void serve(amqp::Connection& conn);
    // `pre`: the claim for this delivery, made in the previous task's outcome transaction.
    // `unit`: its message, decoded already (write_first).
    void handle(amqp::Connection& conn, const amqp::Delivery& d, std::optional<TaskStore::Claim> pre,
                std::optional<int64_t> unit = std::nullopt);
    // How claim() ended: with a claim in `out` to act on; with the task failed here because
    // claiming it ran out of memory (logged: ack it); or with the store failing the claim's
    // write (disk full, I/O error, busy) for [store] record_timeout_ms (logged: give the
    // message back, unclaimed, so that the slot is not held by one message forever).
    enum class ClaimEnd { claim, failed_here, give_back };
    // One claim and what follows for a delivery: done (acked, rejected, or left for the channel
    // to give back), or again (its claim was lost: choose another task for the same delivery).
    enum class Step { done, again };
    Step handle_unit(amqp::Connection& conn, const amqp::Delivery& d, int64_t unit,
                     std::optional<TaskStore::Claim>& pre);
    // Settles a delivery; a no-op for one whose channel is gone (tag 0: see next_).
    void ack(amqp::Connection& conn, const amqp::Delivery& d);
    void reject(amqp::Connection& conn, const amqp::Delivery& d, amqp::Connection::Requeue requeue);
    // The task this message's delivery runs (TaskStore::claim_next: not always the one it was
    // published for), waiting while it is held by a live worker or only users at their limit wait.
    ClaimEnd claim(amqp::Connection& conn, int64_t unit, TaskStore::Claim& out);
    // Until the query target can take a query (a server target: connected). False when asked to
    // stop meanwhile.
    bool await_target(amqp::Connection& conn, int64_t id);
    QueryOutcome execute(amqp::Connection& conn, int64_t id, int64_t token, const std::string& sql,
                         bool& fenced, bool& cancelled);
    // False only when stopping with the write still failing (not acked). May change `outcome`:
    // a result the store refuses becomes a failure saying so, and a cancel requested while the
    // write kept failing becomes the outcome. Throws Error when the store could not record for
    // [store] record_timeout_ms: the worker exits and its message is redelivered.
    // `written`: the outcome is in the store (false when this attempt was fenced out or a
    // cancel won the race).
    bool record(amqp::Connection& conn, int64_t id, int64_t token, Outcome& outcome, bool& written);
    // record()'s first write: with the next delivery already in the channel's buffer (prefetch
    // >= 2), its claim goes into the outcome's transaction (TaskStore::finish_then_claim).
    bool write_first(amqp::Connection& conn, int64_t id, int64_t token, const Outcome& outcome);
    TaskStore::ClaimRules rules() const;
    // Tells the supervisor this worker wrote task `id`'s outcome (report.h "done"), for the
    // metrics; -1: does not apply.
    void report_done(int64_t id, Status status, int64_t wait_ms = -1, int64_t run_ms = -1, int64_t cancel_ms = -1);
    // Waits `ms` while keeping the broker connection and the supervisor's watchdog fed.
    void pause(amqp::Connection* conn, int64_t ms);

    const Config& cfg_;
    std::atomic<bool>& stop_;
    Owner me_;
    std::unique_ptr<TaskStore> store_;
    std::unique_ptr<Target> target_;
    Reporter reporter_;
    int64_t tasks_done_ = 0;
    int64_t cancel_requested_at_ = 0;  // of the running task, once its cancel was seen (store clock)
    // The delivery taken from the channel's buffer while the task before it was recorded, with
    // the claim made in that outcome's transaction, if one was. Handled next, before the channel
    // is read again. When the connection is lost its tag becomes 0: a claimed task still runs
    // (this worker holds it; its message, redelivered, finds it held and then finished), but
    // nothing is acked on a channel that is gone.
    struct Carried {
        amqp::Delivery d;
        std::optional<TaskStore::Claim> claim;
        std::optional<int64_t> unit;  // its message, decoded (none: malformed, handle() says so)
    };
    std::optional<Carried> next_;
    std::exception_ptr next_error_;  // the channel's failure met while taking next_, for after the record
    // A delivery whose task's outcome is stored, its ack held back to go in one frame with the
    // next one's (Multiple::yes): only while a claimed delivery follows it (next_), and never once
    // stopping, when a delivery may be left unsettled to go back with the channel. 0: none.
    uint64_t ack_held_ = 0;
    void flush_held_ack(amqp::Connection& conn);
    // With prefetch >= 2, while a query runs past kHandBackAfterMs (or a claim waits for a task
    // that another live worker runs): the consumer is cancelled, so that no more deliveries
    // queue up here, and those already here but not started go back to the queue for a free
    // worker. Each is published again, on relay_, and once that copy is confirmed, acked (a
    // requeue would count toward a quorum queue's delivery limit). The worker consumes again
    // before it next reads the channel. A copy not confirmed in time leaves its delivery here,
    // in kept_, run next as if never handed back. `why` is for the log line.
    void hand_back(amqp::Connection& conn, int64_t id, const std::string& why);
    // The hand-back's own connection, opened at the first one and closed when the worker falls
    // idle: the broker blocks a connection that publishes during a resource alarm, and the
    // consuming one must not be.
    std::unique_ptr<amqp::Connection> relay_;
    std::deque<amqp::Delivery> kept_;
};

}  // namespace sqlq
