#include "supervisor/sweeper.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <unordered_set>

#include "amqp/connection.h"
#include "task/message.h"
#include "task/publish.h"
#include "util/clock.h"
#include "util/process.h"

namespace sqlq::supervisor {

Sweeper::Sweeper(const Config& cfg, Post post) : post_(std::move(post)), cfg_(cfg) {}

Sweeper::~Sweeper() { stop(); }

void Sweeper::start() {
    if (thread_.joinable()) return;
    thread_ = std::thread([this] { run(); });
}

void Sweeper::stop() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Sweeper::update(const Config& cfg) {
    std::lock_guard lock(mu_);
    cfg_ = cfg;
}

void Sweeper::owner_lost(int64_t task, const Owner& owner, std::string why, Lost how) {
    {
        std::lock_guard lock(mu_);
        lost_.push_back({task, owner, std::move(why), how});
    }
    cv_.notify_all();
}

void Sweeper::fleet_view(std::string workers_json) {
    std::lock_guard lock(mu_);
    fleet_view_ = std::move(workers_json);
}

void Sweeper::log(int level, std::string line) {
    post_([level, line = std::move(line)] { spdlog::log(static_cast<spdlog::level::level_enum>(level), "{}", line); });
}

void Sweeper::run() {
    int64_t next_sweep = mono_ms();
    {
        std::lock_guard lock(mu_);
        next_sweep += cfg_.supervisor.sweep_interval_ms;
    }
    for (;;) {
        std::deque<LostTask> lost;
        {
            std::unique_lock lock(mu_);
            cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(0, next_sweep - mono_ms())),
                         [&] { return stop_ || !lost_.empty() || mono_ms() >= next_sweep; });
            if (stop_) break;
            lost.swap(lost_);
        }
        for (const auto& [task, owner, why, how] : lost) {
            try {
                if (!store_) {
                    // Opened outside the lock: the event loop takes it to hand over a lost worker,
                    // and an open can take seconds (a busy store, an unreachable server).
                    StoreConfig store_cfg;
                    {
                        std::lock_guard lock(mu_);
                        store_cfg = cfg_.store;
                    }
                    store_ = open_store(store_cfg);
                }
                if (how == Lost::fail_task) {
                    if (store_->fail_abandoned(task, owner, why)) {
                        ++failed_;
                        log(spdlog::level::warn, "task " + std::to_string(task) + ": failed: " + why);
                    }
                } else {
                    store_->owner_lost(task, owner, why);
                }
            } catch (const std::exception& e) {
                store_.reset();
                log(spdlog::level::err, "task " + std::to_string(task) + ": cannot record its lost worker: " + e.what());
            }
        }
        if (failed_ || cancelled_) tell();
        if (mono_ms() >= next_sweep) {
            sweep();
            tell();
            std::lock_guard lock(mu_);
            next_sweep = mono_ms() + cfg_.supervisor.sweep_interval_ms;
        }
    }
    forget_fleet();
}

void Sweeper::record_fleet(const Config& cfg) {
    std::string view;
    {
        std::lock_guard lock(mu_);
        view = fleet_view_;
    }
    try {
        if (!store_) store_ = open_store(cfg.store);
        store_->record_fleet({host_name(), cfg.supervisor.run_dir, int64_t(::getpid()), cfg.supervisor.sweep_interval_ms,
                              std::move(view)});
        recorded_ = true;
    } catch (const std::exception&) {
        store_.reset();  // the sweep that follows tries again, and logs what is wrong
    }
}

void Sweeper::forget_fleet() {
    if (!recorded_) return;
    Config cfg;
    {
        std::lock_guard lock(mu_);
        cfg = cfg_;
    }
    try {
        if (!store_) store_ = open_store(cfg.store);
        store_->forget_fleet(host_name(), cfg.supervisor.run_dir);
    } catch (const std::exception& e) {
        // Its heartbeat stops: `sqlq workers` flags it, as for a supervisor that died.
        spdlog::warn("cannot remove this fleet's record from the task store: {}", e.what());
    }
}

void Sweeper::tell() {
    if (!on_swept_) return;
    Swept s{figures_, failed_, cancelled_};
    failed_ = cancelled_ = 0;
    post_([f = on_swept_, s] { f(s); });
}

void Sweeper::sweep() {
    Config cfg;
    {
        std::lock_guard lock(mu_);
        cfg = cfg_;
    }
    const int64_t started = mono_ms();
    record_fleet(cfg);
    try {
        if (!store_) store_ = open_store(cfg.store);
        if (!conn_ || !conn_->open()) {
            conn_.reset();
            conn_ = std::make_unique<amqp::Connection>(cfg.broker, "sqlq-supervisor sweeper");
            conn_->declare_topology();
            conn_->enable_confirms();
        }
        // "Idle" means no message waits: a queued task whose message went missing is then
        // certainly not just behind others in the queue.
        const amqp::QueueInfo queue = conn_->inspect(cfg.broker.queue);
        const bool idle = queue.messages == 0;
        figures_.swept = true;
        figures_.at_ms = started;
        figures_.broker_up = true;
        figures_.queue_known = true;
        figures_.queue_messages = queue.messages;
        figures_.queue_consumers = queue.consumers;
        figures_.dead_letters = conn_->inspect(cfg.broker.dead_letter_queue()).messages;
        const int64_t after = cfg.supervisor.republish_after_ms;
        const std::vector<int64_t> given_up = store_->give_up_stale(after, cfg.query.max_attempts);
        figures_.store_up = true;
        failed_ += int64_t(given_up.size());
        for (int64_t id : given_up)
            log(spdlog::level::warn, "sweep: task " + std::to_string(id) + " failed: gave up after " +
                                         std::to_string(cfg.query.max_attempts) +
                                         " attempts (query.max_attempts), not republished");
        std::vector<int64_t> ids = store_->to_republish(after, after, idle ? TaskStore::QueueIdle::yes : TaskStore::QueueIdle::no,
                                                        cfg.query.max_attempts);
        if (!ids.empty()) ids = drop_dead_lettered(cfg, std::move(ids));
        if (!ids.empty()) {
            auto p = publish_tasks(*conn_, *store_, cfg.broker.queue, ids, std::max(cfg.broker.connect_timeout_ms, 1000),
                                   ids.size());
            const auto& confirmed = p.confirmed;
            std::string list;
            for (size_t i = 0; i < confirmed.size() && i < 20; ++i)
                list += (list.empty() ? "" : ",") + std::to_string(confirmed[i]);
            const size_t done = confirmed.size();
            if (done > 20) list += ",...";
            log(spdlog::level::info, "sweep: republished " + std::to_string(done) + " of " +
                                         std::to_string(ids.size()) + " tasks (" + list + ") in " +
                                         std::to_string(mono_ms() - started) + " ms");
        }
        if (started >= next_expire_ms_) {
            next_expire_ms_ = started + std::max<int64_t>(60000, cfg.supervisor.sweep_interval_ms);
            int64_t n = store_->expire_results(
                {cfg.store.result_ttl_s, cfg.store.max_result_bytes_per_user, cfg.store.max_result_bytes});
            if (n > 0) log(spdlog::level::info, "sweep: expired " + std::to_string(n) + " results");
        }
        if (!last_error_.empty()) log(spdlog::level::info, "sweep: working again");
        last_error_.clear();
    } catch (const amqp::AmqpError& e) {
        figures_.swept = true;
        figures_.at_ms = started;
        figures_.broker_up = false;
        figures_.queue_known = false;
        conn_.reset();
        if (e.what() != last_error_) log(spdlog::level::err, std::string("sweep: ") + e.what());
        last_error_ = e.what();
    } catch (const std::exception& e) {
        figures_.swept = true;
        figures_.at_ms = started;
        figures_.store_up = false;
        store_.reset();
        if (e.what() != last_error_) log(spdlog::level::err, std::string("sweep: ") + e.what());
        last_error_ = e.what();
    }
}

std::vector<int64_t> Sweeper::drop_dead_lettered(const Config& cfg, std::vector<int64_t> ids) {
    // Why here and only here: a task is stale (no message in the queue, nobody on it) either
    // because its message was lost, or because the broker dead-lettered it (a quorum queue's
    // delivery limit, a policy's TTL or length cap). Republishing the second kind starts the
    // same round again, forever. So before republishing, look for their letters. The
    // dead-letter queue is read without acking, on a connection of its own whose close puts
    // every message back: `sqlq audit` still finds and counts each one, and an operator still
    // sees why it is there. Reading only when something is about to be republished keeps the
    // cost (one read per letter, up to 2,000) off the normal path, and leaves the dead-letter
    // count alone while the fleet is healthy (an audit running during a read sees fewer).
    const std::string dlq = cfg.broker.dead_letter_queue();
    const uint32_t letters = conn_->inspect(dlq).messages;
    if (letters == 0) return ids;
    std::unordered_set<int64_t> stale(ids.begin(), ids.end());
    std::unordered_set<int64_t> ended;
    amqp::Connection reader(cfg.broker, "sqlq-supervisor sweeper (dead letters)");
    for (uint32_t i = 0; i < std::min<uint32_t>(letters, 2000) && ended.size() < stale.size(); ++i) {
        auto m = reader.get(dlq);
        if (!m) break;
        auto decoded = decode_message(m->body);
        const int64_t* unit = std::get_if<int64_t>(&decoded);
        if (!unit) continue;
        // A message is a unit of work: the task its deliveries ran (and killed) may be another
        // than the one it was published for.
        const int64_t id = store_->task_of_unit(*unit);
        if (!stale.count(id) || ended.count(id)) continue;
        const std::string why = m->dead_letter_reason.empty() ? "unknown reason" : m->dead_letter_reason;
        std::string error = "dead-lettered by the broker: " + why;
        if (why == "delivery_limit")
            error += " (its message was delivered more than [broker] delivery_limit = " +
                     std::to_string(cfg.broker.delivery_limit) + " times without an outcome)";
        auto kind = store_->fail_unowned(id, error, Owner{});
        ended.insert(id);  // failed now, or it moved on (finished, or a worker holds it): not republished
        if (kind == TaskStore::FailKind::failed) ++failed_;
        if (kind == TaskStore::FailKind::cancelled) ++cancelled_;
        if (kind == TaskStore::FailKind::failed)
            log(spdlog::level::warn, "sweep: task " + std::to_string(id) + " failed: " + error);
    }
    reader.close();  // the letters go back to the dead-letter queue, unchanged
    std::vector<int64_t> rest;
    for (int64_t id : ids)
        if (!ended.count(id)) rest.push_back(id);
    return rest;
}

}  // namespace sqlq::supervisor
