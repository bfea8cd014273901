#include "worker/worker.h"

#include <ctime>

#include "task/message.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/log.h"

namespace sqlq {

Worker::Worker(const Config& cfg, std::atomic<bool>& stop)
    : cfg_(cfg), stop_(stop), me_(Owner::self()), store_(open_store(cfg.store)),
      target_(open_target(cfg.query)) {}

void Worker::pause(amqp::Connection* conn, int64_t ms) {
    int64_t until = mono_ms() + ms;
    while (!stop_ && mono_ms() < until) {
        int64_t step = std::min<int64_t>(until - mono_ms(), 50);
        if (step <= 0) break;
        timespec ts{0, long(step) * 1000000};
        nanosleep(&ts, nullptr);  // SIGTERM interrupts it
        if (conn) conn->pump();
        reporter_.alive();
    }
}

void Worker::run() {
    reporter_.send(Report::starting);
    if (auto w = store_->warning(); !w.empty()) spdlog::warn("{}", w);
    Backoff backoff(100, cfg_.broker.reconnect_max_ms);
    while (!stop_) {
        try {
            amqp::Connection conn(cfg_.broker, "sqlq-worker " + me_.name());
            conn.declare_topology();
            conn.qos(cfg_.broker.prefetch);
            conn.consume(cfg_.broker.queue);
            spdlog::info("consuming from {} on {}", cfg_.broker.queue, amqp::describe(cfg_.broker));
            flush_log();
            reporter_.send(Report::ready);
            backoff.reset();
            serve(conn);
            reporter_.send(Report::stopping);
            // Deliveries prefetched but not started go back to the queue when the channel closes.
            try {
                conn.cancel_consumer();
            } catch (const amqp::AmqpError&) {
            }
            conn.close();
            return;
        } catch (const amqp::AmqpError& e) {
            if (e.fatal()) throw;
            spdlog::warn("{}; reconnecting in {} ms", e.what(), backoff.current());
            reporter_.send(Report::starting);
            pause(nullptr, backoff.next());
        }
    }
}

void Worker::serve(amqp::Connection& conn) {
    // The per-task log lines wait in a buffer while deliveries keep coming (one write to the
    // supervisor's pipe per flush, not per task); they go out within 100 ms, or within 10 ms of
    // the worker falling idle. Warnings and errors never wait.
    int64_t flushed_at = mono_ms();
    bool unflushed = false;
    auto flush = [&] {
        flush_log();
        unflushed = false;
        flushed_at = mono_ms();
    };
    while (!stop_) {
        auto d = conn.next(unflushed ? 10 : 250);
        if (!d) {
            if (unflushed) flush();
            target_->release_memory();  // idle: give back what the last task left (once per lull)
            reporter_.alive();
            continue;
        }
        handle(conn, *d);
        reporter_.send(Report::ready);
        unflushed = true;
        if (mono_ms() - flushed_at >= 100) flush();
    }
    flush_log();
}

void Worker::handle(amqp::Connection& conn, const amqp::Delivery& d) {
    auto decoded = decode_message(d.body);
    if (auto* bad = std::get_if<BadMessage>(&decoded)) {
        spdlog::warn("rejecting a malformed message ({} bytes): {}; it goes to {}", d.body.size(), bad->why,
                     cfg_.broker.dead_letter_queue());
        conn.reject(d.tag, /*requeue=*/false);
        return;
    }
    const int64_t id = std::get<int64_t>(decoded);
    TaskStore::Claim c = claim(conn, id);
    switch (c.kind) {
    case TaskStore::ClaimKind::unknown:
        spdlog::warn("task {}: no such task in {}; the message goes to {}", id, cfg_.store.path,
                     cfg_.broker.dead_letter_queue());
        conn.reject(d.tag, /*requeue=*/false);
        return;
    case TaskStore::ClaimKind::finished:
        spdlog::info("task {}: already {}, skipped{}", id, to_string(c.status), d.redelivered ? " (redelivered)" : "");
        conn.ack(d.tag);
        return;
    case TaskStore::ClaimKind::gave_up:
        spdlog::warn("task {}: failed: too many attempts (query.max_attempts = {})", id, cfg_.query.max_attempts);
        conn.ack(d.tag);
        return;
    case TaskStore::ClaimKind::refused:
        spdlog::warn("task {}: failed: its SQL is longer than query.max_sql_bytes ({}), not run", id,
                     cfg_.query.max_sql_bytes);
        conn.ack(d.tag);
        return;
    case TaskStore::ClaimKind::cancelled_now:
        spdlog::info("task {}: cancelled (its worker was gone), not run", id);
        conn.ack(d.tag);
        return;
    case TaskStore::ClaimKind::held:
        return;  // only when stopping: the message goes back to the queue with the channel
    case TaskStore::ClaimKind::claimed:
        break;
    }

    reporter_.send(Report::busy, id);
    const int64_t t0 = mono_ms();
    bool fenced = false, cancelled = false;
    QueryOutcome q = execute(conn, id, c.token, c.sql, fenced, cancelled);
    if (fenced) {
        spdlog::warn("task {}: attempt {} lost its claim (another worker took the task over); outcome discarded",
                     id, c.token);
        conn.ack(d.tag);
        return;
    }
    Outcome o;
    if (cancelled) {
        o.status = Status::cancelled;
        o.error = "cancelled";
    } else if (q.kind == QueryOutcome::Kind::ok) {
        o.status = Status::succeeded;
        o.row_count = q.rows;
        o.result_bytes = int64_t(q.result.rows_json.size());
        o.result = std::move(q.result);
    } else {
        o.status = Status::failed;
        o.error = q.error;
    }
    if (!record(conn, id, c.token, o)) return;  // stopping with the write still failing: not acked
    spdlog::info("task {}: {} in {} ms (attempt {})", id, to_string(o.status), mono_ms() - t0, c.token);
    conn.ack(d.tag);
    ++tasks_done_;
}

TaskStore::Claim Worker::claim(amqp::Connection& conn, int64_t id) {
    Backoff backoff(50, 2000);
    for (;;) {
        try {
            TaskStore::Claim c = store_->claim(id, me_, {cfg_.query.max_attempts, cfg_.query.max_sql_bytes});
            if (c.kind != TaskStore::ClaimKind::held) return c;
            // Another worker holds the task and looks alive: its own delivery is with it. Wait
            // for it to finish (then we skip) or for its lease to run out (then we take over).
            if (stop_) return c;
            pause(&conn, 50);
        } catch (const StoreError& e) {
            if (!e.transient()) throw;
            spdlog::warn("unable to claim task {}: {}; retrying", id, e.what());
            if (stop_) return {TaskStore::ClaimKind::held};
            pause(&conn, backoff.next());
        }
    }
}

QueryOutcome Worker::execute(amqp::Connection& conn, int64_t id, int64_t token, const std::string& sql,
                             bool& fenced, bool& cancelled) {
    const int64_t renew_every = cfg_.store.lease_ms / 3;
    int64_t last_renew = mono_ms();
    int64_t last_check = 0;
    auto poll = [&]() -> bool {
        int64_t now = mono_ms();
        reporter_.alive();
        try {
            conn.pump();
        } catch (const amqp::AmqpError& e) {
            // Keep running: the outcome is still worth recording; the message will be redelivered
            // and skipped.
            spdlog::warn("task {}: {}", id, e.what());
        }
        if (now - last_check < 50) return false;
        last_check = now;
        try {
            bool renew = now - last_renew >= renew_every;
            auto t = store_->tick(id, token, renew ? TaskStore::Renew::yes : TaskStore::Renew::no);
            if (renew) last_renew = now;
            if (!t.still_owner) return fenced = true;
            if (t.cancel_requested) return cancelled = true;
        } catch (const StoreError& e) {
            spdlog::warn("task {}: cannot renew the lease: {}", id, e.what());
        }
        return false;
    };
    return target_->run(sql, poll);
}

bool Worker::record(amqp::Connection& conn, int64_t id, int64_t token, const Outcome& o) {
    Backoff backoff(50, 2000);
    for (;;) {
        try {
            if (!store_->finish(id, token, o)) {
                // The claim was lost (another attempt took over) or a cancel won the race.
                auto t = store_->get(id);
                spdlog::warn("task {}: outcome {} of attempt {} not recorded: the task is {} (attempt {})", id,
                             to_string(o.status), token, t ? to_string(t->status) : "gone", t ? t->attempts : 0);
            }
            return true;
        } catch (const StoreError& e) {
            if (!e.transient()) throw;
            // Disk full, busy, I/O error: keep the message unacked and try again.
            spdlog::warn("unable to record task {}: {}; retrying in {} ms", id, e.what(), backoff.current());
            if (stop_) return false;
            pause(&conn, backoff.next());
            // Keep the lease while we wait, or another worker will (rightly) take the task over.
            try {
                if (!store_->tick(id, token, TaskStore::Renew::yes).still_owner) return true;
            } catch (const StoreError&) {
            }
        }
    }
}

}  // namespace sqlq
