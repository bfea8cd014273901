#include "service/task_service.h"

#include <algorithm>
#include <ctime>
#include <unordered_set>

#include "amqp/connection.h"
#include "task/message.h"
#include "task/publish.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/control.h"
#include "util/error.h"

namespace sqlq {

using json = nlohmann::json;

namespace {

constexpr int kConfirmTimeoutMs = 10000;

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

}  // namespace

int exit_for(Status s) {
    switch (s) {
    case Status::succeeded: return kExitOk;
    case Status::failed: return kExitTaskFailed;
    case Status::cancelled: return kExitTaskCancelled;
    default: return kExitTimeout;
    }
}

std::optional<int64_t> elapsed_ms(const Task& t, int64_t now) {
    if (!t.started_at) return std::nullopt;
    const int64_t end = terminal(t.status) && t.finished_at ? *t.finished_at : now;
    return std::max<int64_t>(0, end - *t.started_at);  // a wall clock may step back
}

json task_json(const Task& t, TaskService& svc) {
    return task_json(t, terminal(t.status) && t.finished_at ? *t.finished_at : svc.now());
}

json task_json(const Task& t, int64_t now) {
    auto opt = [](const auto& v) { return v ? json(*v) : json(nullptr); };
    json j = {{"id", t.id},
              {"sql", t.sql},
              {"submitter", t.submitter},
              {"status", to_string(t.status)},
              {"published", t.published},
              {"attempts", t.attempts},
              {"executions", t.executions},
              {"owner", opt(t.owner)},
              {"created_at", t.created_at},
              {"started_at", opt(t.started_at)},
              {"finished_at", opt(t.finished_at)},
              {"elapsed_ms", opt(elapsed_ms(t, now))},
              {"error", opt(t.error)},
              {"rows", opt(t.row_count)},
              {"result_bytes", opt(t.result_bytes)},
              {"result_ref", opt(t.result_ref)},
              {"cancel_requested_at", opt(t.cancel_requested_at)},
              {"cancelled_by", opt(t.cancelled_by)},
              {"outcomes", t.outcomes},
              {"sql_bytes", t.sql_bytes},
              {"sql_truncated", t.sql_truncated},
              {"waiting_on", t.waiting_on.empty() ? json(nullptr) : json(t.waiting_on)}};
    if (t.status == Status::cancelled && t.cancel_requested_at && t.finished_at)
        j["stop_ms"] = *t.finished_at - *t.cancel_requested_at;
    else
        j["stop_ms"] = nullptr;
    return j;
}

TaskService::TaskService(const Config& cfg) : TaskService(cfg, open_store(cfg.store)) {}

TaskService::TaskService(const Config& cfg, std::unique_ptr<TaskStore> store) : cfg_(cfg), store_(std::move(store)) {}

TaskService::Submitted TaskService::submit(const std::vector<std::string>& sqls, const std::string& user,
                                           const PublishProgress& progress) {
    if (sqls.empty()) throw Error("submit: no SQL given", kExitUsage);
    for (size_t i = 0; i < sqls.size(); ++i) {
        const std::string where = sqls.size() == 1 ? "submit" : "submit: task " + std::to_string(i + 1) + " of " + std::to_string(sqls.size());
        if (blank(sqls[i])) throw Error(where + ": empty SQL", kExitUsage);
        if (int64_t(sqls[i].size()) > cfg_.query.max_sql_bytes)
            throw Error(where + ": the SQL is " + std::to_string(sqls[i].size()) + " bytes, more than " +
                            std::to_string(cfg_.query.max_sql_bytes) + " ([query] max_sql_bytes); nothing was stored",
                        kExitTooLarge);
    }
    Submitted out;
    out.ids = store_->insert_batch(sqls, user, {cfg_.query.max_queued_per_user});
    // The rows are durable: whatever is not confirmed stays unpublished, for the sweeper. A
    // connection that fails mid-way (a kept one gone stale, its node killed, the channel closed)
    // leaves the rest unconfirmed: they are published again on a new connection, which starts at
    // another node of a cluster (amqp::Connection). A message that went out unconfirmed before
    // the failure may then be in the queue twice; the claim skips the second. No new try when
    // no node could be reached at all (the Connection tried each already), nor for a fatal error.
    // In a cluster, publishes whose confirms did not come in time (a queue whose leader just
    // died can keep them for longer) get one more try, on another node.
    Published p;
    std::vector<int64_t> left = out.ids;
    const size_t tries = cfg_.broker.urls.size() + 1;
    bool retried_unconfirmed = cfg_.broker.urls.size() < 2;
    auto not_confirmed = [&] {
        std::unordered_set<int64_t> done(p.confirmed.begin(), p.confirmed.end());
        std::vector<int64_t> rest;
        for (int64_t id : left)
            if (!done.count(id)) rest.push_back(id);
        return rest;
    };
    for (size_t attempt = 1;; ++attempt) {
        const size_t base = out.ids.size() - left.size();
        PublishProgress step;
        if (progress) step = [&, base](size_t done, size_t) { progress(base + done, out.ids.size()); };
        bool connected = false;
        try {
            amqp::Connection& conn = publisher();
            connected = true;
            publish_tasks(p, conn, *store_, cfg_.broker.queue, left, kConfirmTimeoutMs, 500, step);
            conn_used_ = mono_ms();
            if (p.confirmed.size() == out.ids.size()) {
                out.problem.clear();
                break;
            }
            out.problem = "the broker did not confirm every publish";
            conn.leave_node();
            conn_.reset();
            if (retried_unconfirmed || attempt >= tries) break;
            retried_unconfirmed = true;
            left = not_confirmed();
        } catch (const amqp::AmqpError& e) {
            conn_.reset();
            out.problem = e.what();
            if (e.fatal() || !connected || attempt >= tries) break;
            left = not_confirmed();
        }
    }
    out.published = p.confirmed.size();
    return out;
}

amqp::Connection& TaskService::publisher() {
    // Without traffic, rabbitmq-c sends no heartbeats: past two intervals the broker has
    // dropped the connection, so one idle that long is not worth a failed publish.
    const int64_t idle_limit = cfg_.broker.heartbeat_s > 0 ? int64_t(cfg_.broker.heartbeat_s) * 1000 : INT64_MAX;
    if (conn_ && (!conn_->open() || mono_ms() - conn_used_ > idle_limit)) conn_.reset();
    if (!conn_) {
        auto c = std::make_unique<amqp::Connection>(cfg_.broker, "sqlq submit");
        c->declare_topology();
        c->enable_confirms();
        conn_ = std::move(c);
        conn_used_ = mono_ms();
    }
    return *conn_;
}

void TaskService::close() noexcept {
    if (conn_) conn_->close();
    conn_.reset();
}

Task TaskService::show(int64_t id) {
    auto t = store_->get(id);
    if (!t) throw Error("no task " + std::to_string(id), kExitNotFound);
    std::vector<Task> one{std::move(*t)};
    mark_waiting(*store_, cfg_.query.max_running_per_user, one);
    return std::move(one.front());
}

std::vector<Task> TaskService::list(const TaskStore::ListFilter& filter) {
    auto tasks = store_->list(filter);
    mark_waiting(*store_, cfg_.query.max_running_per_user, tasks);
    return tasks;
}

void mark_waiting(TaskStore& store, int64_t max_running_per_user, std::vector<Task>& tasks) {
    if (max_running_per_user <= 0 ||
        std::none_of(tasks.begin(), tasks.end(), [](const Task& t) { return t.status == Status::queued; }))
        return;
    const auto running = store.running_per_user();
    for (auto& t : tasks) {
        auto it = running.find(t.submitter);
        if (t.status == Status::queued && it != running.end() && it->second >= max_running_per_user)
            t.waiting_on = "user limit";
    }
}

namespace {
void require_result(const Task& t) {
    if (t.status == Status::succeeded) return;
    std::string why = "task " + std::to_string(t.id) + " is " + to_string(t.status);
    if (t.error) why += ": " + *t.error;
    throw Error(why + "; it has no result", terminal(t.status) ? exit_for(t.status) : kExitConflict);
}
Error expired(int64_t id) {
    return Error("task " + std::to_string(id) + ": its result has expired ([store] result_ttl_s, or a max_result_bytes cap)", kExitNotFound);
}
}  // namespace

ResultData TaskService::result(int64_t id) {
    require_result(show(id));
    auto r = store_->result(id);
    if (!r) throw expired(id);
    return *r;
}

TaskStore::ResultPage TaskService::result_page(int64_t id, int64_t offset, int64_t limit) {
    if (offset < 0 || limit < 0) throw Error("offset and limit must not be negative", kExitUsage);
    require_result(show(id));
    auto r = store_->result_page(id, offset, limit);
    if (!r) throw expired(id);
    return *r;
}

std::unique_ptr<ResultReader> TaskService::read_result(int64_t id) {
    require_result(show(id));
    auto r = store_->read_result(id);
    if (!r) throw expired(id);
    return r;
}

std::unique_ptr<StoreWatch> TaskService::watch() {
    if (cfg_.store.notify == "off") return std::make_unique<PollingWatch>();
    return store_->watch();
}

void TaskService::done_waiting() {
    if (!watch_) return;
    watch_->unwatch();
    unwatched_ = std::move(watch_);
}

StoreWatch& TaskService::waiting_watch() {
    if (!watch_) watch_ = watch();
    return *watch_;
}

namespace {
// How long to wait before the next look: with a live watch, until it reports a change or the
// fallback cap passes (a lost notification costs at most that); without one, a backoff up to it.
struct Pacer {
    StoreWatch& watch;
    Backoff backoff;
    int64_t deadline;
    void pause() {
        const int64_t step = watch.live() ? backoff.current() : backoff.next();
        watch.wait(std::min<int64_t>(step, std::max<int64_t>(deadline - mono_ms(), 1)));
    }
};
}  // namespace

TaskService::Waited TaskService::wait(int64_t id, int64_t timeout_ms, const std::function<void(const Task&)>& polled,
                                      const std::function<bool()>& stop) {
    const int64_t deadline = timeout_ms > 0 ? mono_ms() + timeout_ms : INT64_MAX;
    // The watch before the first look: a commit between the two is then reported, not missed.
    // (A kept watch may also report what happened before: one more look.)
    StoreWatch& w = waiting_watch();
    w.new_wait();  // a long-lived client's tasks one after the other are not a busy store
    const int64_t cap = cfg_.store.wait_poll_ms;
    Pacer pace{w, w.live() ? Backoff(cap, cap) : Backoff(std::min<int64_t>(5, cap), cap), deadline};
    for (;;) {
        Task t = show(id);
        if (terminal(t.status)) return {std::move(t), false, false};
        if (stop && stop()) return {std::move(t), false, true};
        if (mono_ms() >= deadline) return {std::move(t), true, false};
        if (polled) polled(t);
        pace.pause();
    }
}

TaskService::Cancelled TaskService::cancel(int64_t id, const std::string& by, WaitForStop wait) {
    using Kind = Cancelled::Kind;
    auto r = store_->request_cancel(id, by);
    switch (r.kind) {
    case TaskStore::CancelKind::unknown: throw Error("no task " + std::to_string(id), kExitNotFound);
    case TaskStore::CancelKind::already_finished: return {Kind::already_finished, r.status};
    case TaskStore::CancelKind::cancelled: return {Kind::cancelled_queued, Status::cancelled};
    case TaskStore::CancelKind::requested: break;
    }
    // Running: its worker sees the request within tens of ms. Tell the supervisor too, so that
    // it kills a worker that does not stop within cancel_grace_ms.
    try {
        control_request(cfg_.supervisor.run_dir, control::Request::cancel(id), 2000);
    } catch (const Error&) {
        // No supervisor, or a busy one: the worker stops the query on its own all the same.
    }
    if (wait == WaitForStop::no) return {Kind::requested, Status::running};
    const int64_t deadline = mono_ms() + cfg_.supervisor.cancel_grace_ms + cfg_.store.lease_ms + 10000;
    StoreWatch& w = waiting_watch();  // made before the first look, as in wait()
    w.new_wait();
    // Without notifications, look every 10 ms as before: a cancel is over within the grace period.
    const int64_t cap = w.live() ? cfg_.store.wait_poll_ms : 10;
    Pacer pace{w, Backoff(cap, cap), deadline};
    for (;;) {
        Task t = show(id);
        if (t.status == Status::cancelled) {
            int64_t took = t.finished_at && t.cancel_requested_at ? *t.finished_at - *t.cancel_requested_at : 0;
            return {Kind::stopped, t.status, took};
        }
        if (terminal(t.status)) return {Kind::finished_first, t.status};
        if (mono_ms() > deadline) return {Kind::still_running, t.status};
        pace.pause();
    }
}

std::optional<int64_t> TaskService::Audit::recovery_percentile(double p) const {
    const auto& v = store.recovery_ms;
    if (v.empty()) return std::nullopt;
    return v[std::min(v.size() - 1, size_t(p * double(v.size())))];
}

bool TaskService::Audit::bad() const {
    return lost > 0 || store.stuck > 0 || store.duplicate_outcomes > 0 || !broker_error.empty();
}

std::vector<TaskService::Fleet> TaskService::fleets() {
    std::vector<Fleet> out;
    for (auto& r : store_->fleets()) {
        const bool stale = r.age_ms > 3 * r.interval_ms + 2000;
        out.push_back({std::move(r), stale});
    }
    return out;
}

TaskService::Audit TaskService::audit() {
    Audit a;
    a.store = store_->audit();
    try {
        amqp::Connection conn(cfg_.broker, "sqlq audit");
        conn.declare_topology();
        auto q = conn.inspect(cfg_.broker.queue);
        auto d = conn.inspect(cfg_.broker.dead_letter_queue());
        a.queue_left = q.messages;
        a.consumers = q.consumers;
        a.dead_lettered = d.messages;
        // Read (without acking) what lies in the dead-letter queue and say why each got there:
        // closing the channel puts every message back.
        for (uint32_t i = 0; i < std::min<uint32_t>(d.messages, 2000); ++i) {
            auto m = conn.get(cfg_.broker.dead_letter_queue());
            if (!m) break;
            auto decoded = decode_message(m->body);
            std::string why = m->dead_letter_reason.empty() ? "unknown" : m->dead_letter_reason;
            if (auto* bad = std::get_if<BadMessage>(&decoded)) why += ": " + bad->why;
            else if (!store_->get(std::get<int64_t>(decoded))) why += ": unknown task id";
            else why += ": a valid task";
            ++a.dead_letter_reasons[why];
        }
        conn.close();
    } catch (const amqp::AmqpError& e) {
        a.broker_error = e.what();
    }
    // Lost: not terminal, no message waiting for it and no live worker on it. Queued tasks can
    // only be judged when the queue is empty (else their message may be in it).
    a.lost = a.queue_left == 0 ? a.store.queued_stale : 0;
    for (auto& [status, n] : a.store.by_status) a.submitted += n;
    return a;
}

}  // namespace sqlq
