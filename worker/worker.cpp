#include "worker/worker.h"

#include <algorithm>
#include <ctime>
#include <new>
#include <set>
#include <vector>

#include "task/message.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/log.h"

namespace sqlq {

namespace {
// How long a query runs before the deliveries held behind it are handed back (with prefetch >=
// 2): the longest a task waits behind another worker's query while a worker is free. The first
// look at the store is at the same time (execute()).
constexpr int64_t kHandBackAfterMs = 50;
// How long the hand-back waits for the broker to confirm the copies; the query waits meanwhile.
constexpr int kHandBackConfirmMs = 250;
}  // namespace

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
            spdlog::info("consuming from {} on {}", cfg_.broker.queue, conn.where());
            flush_log();
            reporter_.send(Report::ready);
            backoff.reset();
            serve(conn);
            reporter_.send(Report::stopping);
            // Deliveries prefetched but not started go back to the queue when the channel closes.
            try {
                flush_held_ack(conn);
                conn.cancel_consumer();
            } catch (const amqp::AmqpError&) {
            }
            conn.close();
            if (relay_) relay_->close();
            return;
        } catch (const amqp::AmqpError& e) {
            // A delivery taken ahead is the lost channel's: one not claimed goes back to the
            // queue with it; a claimed task is still run, its outcome recorded, nothing acked.
            if (next_ && !next_->claim) next_.reset();
            if (next_) next_->d.tag = 0;
            kept_.clear();  // not started: they go back to the queue with the lost channel
            next_error_ = nullptr;
            ack_held_ = 0;  // the lost channel's: its redelivery finds the task finished
            if (e.fatal()) throw;
            if (e.kind() == amqp::AmqpError::Kind::consumer_timeout)
                // The outcome is recorded already (the broker only notices at its next check), so
                // the redelivery is skipped as finished; but until then another worker waits for it.
                spdlog::warn("{}: the broker took a delivery back because it stayed unacked longer than its "
                             "consumer_timeout (rabbitmq.conf; 30 min by default): raise it above [query] "
                             "timeout_ms = {} ms; reconnecting",
                             e.what(), cfg_.query.timeout_ms);
            else
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
    for (;;) {
        std::optional<amqp::Delivery> d;
        std::optional<TaskStore::Claim> pre;
        std::optional<int64_t> unit;
        if (next_ && (next_->claim || !stop_)) {
            // Taken ahead (write_first): handled before the channel is read again; with its claim
            // made, even when stopping (this worker holds its task).
            d = std::move(next_->d);
            pre = std::move(next_->claim);
            unit = next_->unit;
            next_.reset();
        } else if (!kept_.empty() && !stop_) {
            d = std::move(kept_.front());  // held through a hand-back whose copy was not confirmed
            kept_.pop_front();
        } else {
            next_.reset();  // stopping: an unclaimed one goes back to the queue with the channel
            if (stop_) break;
            if (!conn.consuming()) conn.consume(cfg_.broker.queue);  // after a hand-back
            const bool short_poll = unflushed;
            // Idle, a worker wakes only to say "alive" (kAliveIntervalMs): SIGTERM interrupts the
            // wait, and rabbitmq-c answers heartbeats inside it. Waking every 250 ms, as it did, a
            // thousand idle workers kept a sixth of a core busy (docs/performance.md, "A thousand
            // workers on one host").
            d = conn.next(short_poll ? 10 : static_cast<int>(kAliveIntervalMs));
            if (!d) {
                if (unflushed) flush();
                // Idle for real (the short poll after a task found nothing, then a long one did not
                // either): give back what the last task left, once per lull. Not at the first short
                // gap: under load the next task comes within milliseconds, and releasing there (a new
                // target connection, malloc_trim) cost 30 % of the trivial-task throughput.
                if (!short_poll) {
                    if (relay_) {  // opened again at the next hand-back
                        relay_->close();
                        relay_.reset();
                    }
                    target_->release_memory();
                }
                reporter_.alive();
                continue;
            }
        }
        handle(conn, *d, std::move(pre), unit);
        // A task claimed with this one's outcome runs next: its "busy" carries this "ready" (and
        // the "done" before it), one write and one wake-up of the supervisor for both.
        if (next_ && next_->claim) reporter_.defer(ReportLine{Report::ready});
        else reporter_.send(Report::ready);
        unflushed = true;
        if (mono_ms() - flushed_at >= 100) flush();
    }
    flush_log();
}

void Worker::ack(amqp::Connection& conn, const amqp::Delivery& d) {
    if (d.tag == 0) return;
    // Under a stream of tasks (a claimed delivery next) every second ack covers two deliveries:
    // half the ack frames, syscalls and broker settlements. Every delivery before this one was
    // settled or is the one held: they are handled in order, and only a stopping worker leaves
    // one unsettled (then nothing is held back any more).
    if (stop_) {
        flush_held_ack(conn);
        conn.ack(d.tag);
    } else if (ack_held_ == 0 && next_ && next_->claim && next_->d.tag > d.tag) {
        ack_held_ = d.tag;
    } else {
        conn.ack(d.tag, ack_held_ ? amqp::Connection::Multiple::yes : amqp::Connection::Multiple::no);
        ack_held_ = 0;
    }
}

void Worker::flush_held_ack(amqp::Connection& conn) {
    if (ack_held_) conn.ack(std::exchange(ack_held_, 0));
}

void Worker::reject(amqp::Connection& conn, const amqp::Delivery& d, amqp::Connection::Requeue requeue) {
    if (d.tag == 0) return;
    flush_held_ack(conn);
    conn.reject(d.tag, requeue);
}

void Worker::handle(amqp::Connection& conn, const amqp::Delivery& d, std::optional<TaskStore::Claim> pre,
                    std::optional<int64_t> decoded_unit) {
    if (!decoded_unit) {
        auto decoded = decode_message(d.body);
        if (auto* bad = std::get_if<BadMessage>(&decoded)) {
            spdlog::warn("rejecting a malformed message ({} bytes): {}; it goes to {}", d.body.size(), bad->why,
                         cfg_.broker.dead_letter_queue());
            reject(conn, d, amqp::Connection::Requeue::no);
            return;
        }
        decoded_unit = std::get<int64_t>(decoded);
    }
    // The message is a unit of work: its delivery runs the task claim_next chooses (fairness
    // between users), which is the one it was published for only when that one is next.
    const int64_t unit = *decoded_unit;
    // A delivery whose claim was lost (fenced: another delivery took the task over) or whose outcome
    // another writer beat did not spend its unit of work: it chooses again, and is acked only once
    // it has recorded an outcome (or found nothing to run). Acking it would leave a queued task
    // without a message.
    while (handle_unit(conn, d, unit, pre) == Step::again)
        // Unacked: the message goes back with the channel. A delivery of a channel that is gone
        // has no more work to do: its message, redelivered, does it.
        if (stop_ || d.tag == 0) return;
}

Worker::Step Worker::handle_unit(amqp::Connection& conn, const amqp::Delivery& d, int64_t unit,
                                 std::optional<TaskStore::Claim>& pre) {
    TaskStore::Claim c;
    ClaimEnd end = ClaimEnd::claim;
    if (pre) {
        c = std::move(*pre);  // made with the previous task's outcome (write_first)
        pre.reset();
    } else {
        // Claim only what can run now: while the target cannot be reached the task stays queued
        // (unclaimed, its message held here), instead of failing for want of a server.
        if (!await_target(conn, unit)) return Step::done;  // stopping: the message goes back with the channel
        end = claim(conn, unit, c);
    }
    const int64_t id = c.id;
    switch (end) {
    case ClaimEnd::failed_here:
        report_done(id, Status::failed);  // claiming it ran out of memory: failed, as the log says
        ack(conn, d);
        return Step::done;
    case ClaimEnd::give_back:
        reject(conn, d, amqp::Connection::Requeue::yes);  // the store refuses writes: unclaimed, it waits in the queue
        return Step::done;
    case ClaimEnd::claim:
        break;
    }
    const int64_t t0 = mono_ms();
    switch (c.kind) {
    case TaskStore::ClaimKind::unknown:
        spdlog::warn("task {}: no such task in {}; the message goes to {}", id, store_->where(),
                     cfg_.broker.dead_letter_queue());
        reject(conn, d, amqp::Connection::Requeue::no);
        return Step::done;
    case TaskStore::ClaimKind::none:
        // Nothing is queued: every task waiting has a message of its own still to come, so this
        // one's work was done (its own task ended, or runs under another message).
        if (terminal(c.status))
            spdlog::info("task {}: already {}, skipped{}", unit, to_string(c.status), d.redelivered ? " (redelivered)" : "");
        else
            spdlog::info("task {}: {} under another message, nothing else queued: skipped", unit, to_string(c.status));
        ack(conn, d);
        return Step::done;
    case TaskStore::ClaimKind::finished:
        spdlog::info("task {}: already {}, skipped{}", id, to_string(c.status), d.redelivered ? " (redelivered)" : "");
        ack(conn, d);
        return Step::done;
    case TaskStore::ClaimKind::gave_up:
        spdlog::warn("task {}: failed: too many attempts (query.max_attempts = {})", id, cfg_.query.max_attempts);
        report_done(id, Status::failed);
        ack(conn, d);
        return Step::done;
    case TaskStore::ClaimKind::past_deadline:
        spdlog::warn("task {}: failed: its worker ran past query.timeout_ms + deadline_grace_ms and was killed; not "
                     "run again", id);
        report_done(id, Status::failed);
        ack(conn, d);
        return Step::done;
    case TaskStore::ClaimKind::refused:
        spdlog::warn("task {}: failed: its SQL is longer than query.max_sql_bytes ({}), not run", id,
                     cfg_.query.max_sql_bytes);
        report_done(id, Status::failed);
        ack(conn, d);
        return Step::done;
    case TaskStore::ClaimKind::cancelled_now:
        spdlog::info("task {}: cancelled (its worker was gone), not run", id);
        report_done(id, Status::cancelled, -1, -1,
                    c.cancel_requested_at > 0 ? std::max<int64_t>(0, c.claimed_at - c.cancel_requested_at) : -1);
        ack(conn, d);
        return Step::done;
    case TaskStore::ClaimKind::held:
    case TaskStore::ClaimKind::limited:
    case TaskStore::ClaimKind::no_memory:  // never: claim() fails that task itself
        return Step::done;  // only when stopping: the message goes back to the queue with the channel
    case TaskStore::ClaimKind::claimed:
        break;
    }

    reporter_.send(Report::busy, id);
    bool fenced = false, cancelled = false;
    cancel_requested_at_ = 0;
    QueryOutcome q = execute(conn, id, c.token, c.sql, fenced, cancelled);
    if (fenced) {
        spdlog::warn("task {}: attempt {} lost its claim (another worker took the task over); outcome discarded",
                     id, c.token);
        return Step::again;
    }
    Outcome o;
    if (cancelled) {
        o.status = Status::cancelled;
        o.error = "cancelled";
    } else if (q.kind == QueryOutcome::Kind::ok) {
        o.status = Status::succeeded;
        o.row_count = q.rows;
        // What the store keeps for it, column names included: the result caps
        // ([store] max_result_bytes*) add these up.
        o.result_bytes = int64_t(q.result.columns_json.size() + q.result.rows_json.size());
        o.result = std::move(q.result);
    } else {
        o.status = Status::failed;
        o.error = q.error;
    }
    bool written = false;
    if (!record(conn, id, c.token, o, written)) return Step::done;  // stopping with the write still failing: not acked
    if (next_error_) std::rethrow_exception(std::exchange(next_error_, nullptr));  // the channel is gone: nothing to ack on
    const int64_t run_ms = mono_ms() - t0;
    spdlog::info("task {}: {} in {} ms (attempt {})", id, to_string(o.status), run_ms, c.token);
    if (written) {
        // Wait: submit → the first claim only; a take-over's wait would measure a recovery.
        const int64_t wait_ms = c.token == 1 && c.created_at > 0 ? std::max<int64_t>(0, c.claimed_at - c.created_at) : -1;
        // Cancel: its request (the store's clock) → now, in the store's clock too: the claim's
        // reading of it plus the time since, by this host's monotonic clock. This host's wall
        // clock may be minutes off the store's (a PostgreSQL store shared by hosts).
        const int64_t store_now = c.claimed_at + (mono_ms() - t0);
        const int64_t cancel_ms = o.status == Status::cancelled && cancel_requested_at_ > 0
                                      ? std::max<int64_t>(0, store_now - cancel_requested_at_)
                                      : -1;
        report_done(id, o.status, wait_ms, run_ms, cancel_ms);
    }
    if (!written) return Step::again;  // another attempt (or the supervisor) ended it: not this unit's work
    ack(conn, d);
    ++tasks_done_;
    return Step::done;
}

bool Worker::await_target(amqp::Connection& conn, int64_t id) {
    Backoff backoff(100, cfg_.broker.reconnect_max_ms);
    bool said = false;
    for (;;) {
        const std::string why = target_->ready([&] {
            reporter_.alive();
            conn.pump();
            return stop_.load();
        });
        if (why.empty()) {
            if (said) spdlog::info("the query target {} answers again", target_->describe());
            return true;
        }
        if (!said) {
            spdlog::warn("task {}: {}; not claimed, waiting for the target (retrying with backoff)", id, why);
            reporter_.send(Report::target, id);  // the supervisor shows this slot waiting on the target
            said = true;
        }
        if (stop_) return false;
        pause(&conn, backoff.next());
    }
}

Worker::ClaimEnd Worker::claim(amqp::Connection& conn, int64_t unit, TaskStore::Claim& out) {
    Backoff backoff(50, 2000);
    int64_t said_waiting = -1;  // the task the supervisor was last told this slot waits for
    int64_t failing_since = -1;  // when the claim's write began to fail (mono ms), -1: it has not
    const TaskStore::ClaimRules rules = this->rules();
    auto waiting = [&](int64_t id) {
        // The supervisor shows this slot as waiting for the task, not as idle.
        if (said_waiting != id) reporter_.send(Report::waiting, id);
        said_waiting = id;
    };
    auto held = [&] {
        out = TaskStore::Claim{TaskStore::ClaimKind::held};
        out.id = unit;
        return ClaimEnd::claim;
    };
    for (;;) {
        std::string no_memory;
        int64_t culprit = unit;
        try {
            TaskStore::Claim c = store_->claim_next(unit, me_, rules);
            failing_since = -1;
            if (c.kind == TaskStore::ClaimKind::no_memory) {
                no_memory = c.why;
                culprit = c.id;
            } else {
                out = std::move(c);
                const bool wait = out.kind == TaskStore::ClaimKind::held || out.kind == TaskStore::ClaimKind::limited;
                if (!wait || stop_) return ClaimEnd::claim;
                // held: another worker holds this message's task and looks alive (its own
                // delivery of it is with it): wait for it to finish, or for its lease to run out
                // (then we take over). limited: only users at max_running_per_user wait: wait
                // for one of their tasks to end, or for another user's task.
                waiting(out.id);
                // Held for as long as that worker runs it: what this one holds behind it goes
                // to a free worker meanwhile.
                if (out.kind == TaskStore::ClaimKind::held && cfg_.broker.prefetch >= 2 && conn.consuming())
                    hand_back(conn, out.id, "run by another live worker, waiting");
                pause(&conn, out.kind == TaskStore::ClaimKind::held ? 50 : 100);
                continue;
            }
        } catch (const StoreError& e) {
            if (!e.transient() && !e.resource()) throw;
            if (e.resource()) {
                no_memory = e.what();
            } else {
                // Disk full, I/O error, busy: retry, but not forever. Past record_timeout_ms the
                // message goes back to the queue (its task stays as it was: queued, or running
                // with its gone owner) and this worker takes the next one.
                const int64_t now = mono_ms();
                if (failing_since < 0) failing_since = now;
                if (now - failing_since >= cfg_.store.record_timeout_ms) {
                    spdlog::warn("task {}: giving its message back: the store {} could not record its claim for {} ms "
                                 "([store] record_timeout_ms): {}",
                                 unit, store_->where(), now - failing_since, e.what());
                    out.id = unit;
                    return ClaimEnd::give_back;
                }
                spdlog::warn("unable to claim task {}: {}; retrying", unit, e.what());
                if (stop_) return held();
                waiting(unit);
                pause(&conn, backoff.next());
                continue;
            }
        } catch (const std::bad_alloc&) {
            no_memory = "out of memory";
        }
        // Claiming it again would fail the same way, and a worker that exits on it would get its
        // message back, over and over: fail the task (a short write) and go on.
        const std::string why = "not run: claiming it failed: " + no_memory;
        switch (store_->fail_unowned(culprit, why, me_)) {
        case TaskStore::FailKind::failed:
            spdlog::warn("task {}: failed: {}", culprit, why);
            out.id = culprit;
            return ClaimEnd::failed_here;
        case TaskStore::FailKind::held:  // another worker has it after all: choose again
            if (stop_) return held();
            waiting(culprit);
            pause(&conn, backoff.next());
            continue;
        case TaskStore::FailKind::cancelled:
        case TaskStore::FailKind::finished:
        case TaskStore::FailKind::unknown:
            continue;  // it ended meanwhile: choose again
        }
    }
}

TaskStore::ClaimRules Worker::rules() const {
    return {cfg_.query.max_attempts, cfg_.query.max_sql_bytes, cfg_.query.timeout_ms,
            cfg_.supervisor.deadline_grace_ms, cfg_.query.max_running_per_user};
}

QueryOutcome Worker::execute(amqp::Connection& conn, int64_t id, int64_t token, const std::string& sql,
                             bool& fenced, bool& cancelled) {
    const int64_t renew_every = cfg_.store.lease_ms / 3;
    const int64_t started = mono_ms();
    int64_t last_renew = started;
    // The store is first asked 50 ms into the query, not at its first tick: the claim has just
    // read the task, and a query that ends sooner (most of them) costs no read of the store for
    // nothing (a read transaction per task, with the page cache refilled: 10-20 % of a trivial
    // task's CPU). A cancel requested meanwhile is seen 50 ms in.
    int64_t last_check = last_renew;
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
        if (cfg_.broker.prefetch >= 2 && conn.consuming() && !stop_ && now - started >= kHandBackAfterMs)
            hand_back(conn, id, "still running after " + std::to_string(kHandBackAfterMs) + " ms");
        try {
            bool renew = now - last_renew >= renew_every;
            auto t = store_->tick(id, token, renew ? TaskStore::Renew::yes : TaskStore::Renew::no);
            if (renew) last_renew = now;
            if (!t.still_owner) return fenced = true;
            if (t.cancel_requested) {
                cancel_requested_at_ = t.cancel_requested_at;
                return cancelled = true;
            }
        } catch (const StoreError& e) {
            spdlog::warn("task {}: cannot renew the lease: {}", id, e.what());
        }
        return false;
    };
    try {
        return target_->run(sql, poll);
    } catch (const std::bad_alloc&) {
        // The rows being encoded (or the engine's own buffers) did not fit: the query's problem,
        // not the worker's. Unwinding freed what it held.
        QueryOutcome q;
        q.kind = QueryOutcome::Kind::error;
        q.error = "out of memory while running the query or reading its result (query.max_bytes = " +
                  std::to_string(cfg_.query.max_bytes) + ", query.memory_limit_mb = " +
                  std::to_string(cfg_.query.memory_limit_mb) + ")";
        return q;
    }
}

void Worker::hand_back(amqp::Connection& conn, int64_t id, const std::string& why) {
    const int64_t t0 = mono_ms();
    auto failed = [&](const amqp::AmqpError& e) {
        spdlog::warn("task {}: handing back the deliveries held behind it: {}", id, e.what());
    };
    std::vector<amqp::Delivery> held;
    try {
        conn.cancel_consumer();
        // Every delivery sent before the cancel-ok was read with it: take them all.
        for (int i = 0; conn.frames_queued() && i < 100000; ++i)
            if (auto d = conn.next(0)) held.push_back(std::move(*d));
    } catch (const amqp::AmqpError& e) {
        // The channel is gone: what it held goes back to the queue with it. The query runs on;
        // its outcome is recorded, and the reconnect follows (handle_unit).
        failed(e);
        return;
    }
    if (held.empty()) return;
    // The copies go out on a connection of their own: a broker in a resource alarm blocks a
    // connection that publishes, and this one must go on acking and consuming.
    std::vector<uint64_t> copies;
    std::set<uint64_t> confirmed;
    try {
        if (!relay_) {
            BrokerConfig b = cfg_.broker;
            b.heartbeat_s = 0;  // idle between hand-backs; a dead one fails its next publish
            b.connect_timeout_ms = std::min(b.connect_timeout_ms, kHandBackConfirmMs * 4);
            relay_ = std::make_unique<amqp::Connection>(b, "sqlq-worker " + me_.name() + " (hand-back)",
                                                        /*frame_max=*/4096);
            relay_->enable_confirms();
        }
        for (const auto& d : held) copies.push_back(relay_->publish(cfg_.broker.queue, d.body));
        confirmed = relay_->wait_confirms(copies.front(), copies.back(), kHandBackConfirmMs);
    } catch (const amqp::AmqpError& e) {
        failed(e);
    }
    // Not all confirmed (a broker too slow, an alarm, a dead connection): a new one next time.
    if (confirmed.size() < held.size()) relay_.reset();
    size_t handed = 0;
    try {
        for (size_t i = 0; i < held.size(); ++i) {
            if (i < copies.size() && confirmed.count(copies[i])) {
                conn.ack(held[i].tag);
                ++handed;
            } else {
                kept_.push_back(std::move(held[i]));
            }
        }
    } catch (const amqp::AmqpError& e) {
        // As above: the channel is gone with what it held (kept_ is cleared with it).
        failed(e);
        return;
    }
    spdlog::info("task {}: {}: {} of the {} deliveries held behind it went back to the queue in {} ms{}", id, why,
                 handed, held.size(), mono_ms() - t0,
                 handed < held.size() ? " (the others' copies were not confirmed in time: they run here next)" : "");
}

bool Worker::write_first(amqp::Connection& conn, int64_t id, int64_t token, const Outcome& o) {
    // Under a steady stream of tasks the next delivery is already here (prefetch >= 2): its
    // claim goes into this outcome's transaction. Taking it now rather than after the ack
    // changes nothing else: it is the next one handled either way.
    if (!next_ && cfg_.broker.prefetch >= 2 && !stop_) {
        try {
            if (auto d = conn.next(0)) next_ = Carried{std::move(*d), std::nullopt, std::nullopt};
        } catch (const amqp::AmqpError&) {
            // The channel is gone: record the outcome all the same, then reconnect (handle_unit).
            next_error_ = std::current_exception();
        }
    }
    if (next_ && !next_->claim && next_->d.tag != 0 && !stop_) {
        if (!next_->unit) {
            const auto decoded = decode_message(next_->d.body);
            if (const auto* unit = std::get_if<int64_t>(&decoded)) next_->unit = *unit;
        }
        // Claimed only when it can run now, as await_target() would have it (a server target
        // whose connection needs making is left to it).
        if (next_->unit && target_->ready([] { return true; }).empty())
            return store_->finish_then_claim(id, token, o, *next_->unit, me_, rules(), next_->claim);
    }
    return store_->finish(id, token, o);
}

void Worker::report_done(int64_t id, Status status, int64_t wait_ms, int64_t run_ms, int64_t cancel_ms) {
    ReportLine r;
    r.what = Report::done;
    r.task_id = id;
    r.status = status;
    r.wait_ms = wait_ms;
    r.run_ms = run_ms;
    r.cancel_ms = cancel_ms;
    reporter_.defer(r);  // sent with the "ready" that follows every task
}

bool Worker::record(amqp::Connection& conn, int64_t id, int64_t token, Outcome& o, bool& written) {
    Backoff backoff(50, 2000);
    const int64_t started = mono_ms();
    for (bool first = true;; first = false) {
        std::string refused;  // why the store will never take this outcome
        try {
            written = first ? write_first(conn, id, token, o) : store_->finish(id, token, o);
            if (!written) {
                // The claim was lost (another attempt took over) or a cancel won the race.
                auto t = store_->get(id);
                spdlog::warn("task {}: outcome {} of attempt {} not recorded: the task is {} (attempt {})", id,
                             to_string(o.status), token, t ? to_string(t->status) : "gone", t ? t->attempts : 0);
            }
            return true;
        } catch (const StoreError& e) {
            if (!e.transient()) {
                if (!o.result) throw;  // not even a failure fits: the store itself is broken
                refused = e.what();
            } else {
                // Disk full, busy, I/O error: keep the message unacked and try again, for a while.
                const int64_t waited = mono_ms() - started;
                if (waited >= cfg_.store.record_timeout_ms)
                    throw Error("task " + std::to_string(id) + ": giving it up: the store " + store_->where() +
                                " could not record its outcome for " + std::to_string(waited) +
                                " ms ([store] record_timeout_ms): " + e.what() +
                                "; exiting without an ack, the task runs again once the store can be written");
                spdlog::warn("unable to record task {}: {}; retrying in {} ms", id, e.what(), backoff.current());
                if (stop_) return false;
                pause(&conn, backoff.next());
                // Keep the lease while we wait, or another worker will (rightly) take the task over.
                try {
                    auto t = store_->tick(id, token, TaskStore::Renew::yes);
                    if (!t.still_owner) return true;
                    if (t.cancel_requested && o.status != Status::cancelled) {
                        cancel_requested_at_ = t.cancel_requested_at;
                        // A cancel asked while the outcome could not be written wins the race, as
                        // it would have during the query; and a cancel without a result is the
                        // smallest write there is.
                        spdlog::info("task {}: cancel requested while its outcome could not be recorded: "
                                     "recording cancelled instead",
                                     id);
                        o = Outcome{Status::cancelled, std::string("cancelled"), {}, {}, {}};
                    }
                } catch (const StoreError&) {
                }
                continue;
            }
        } catch (const std::bad_alloc&) {
            if (!o.result) throw;
            refused = "out of memory";
        }
        // The result is too big for the store (or for memory): the task fails, saying so, and
        // the worker goes on. Retrying would fail the same way, and so would every redelivery.
        std::string err = "the result could not be stored: " + refused + " (query.max_bytes = " +
                          std::to_string(cfg_.query.max_bytes) + ", " + std::to_string(o.result_bytes.value_or(0)) +
                          " bytes)";
        spdlog::warn("task {}: failed: {}", id, err);
        o = Outcome{Status::failed, err, {}, {}, {}};
    }
}

}  // namespace sqlq
