#include "web/hub.h"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "service/task_service.h"
#include "task/store.h"
#include "util/clock.h"
#include "util/log.h"

namespace sqlq::web {

using json = nlohmann::json;

namespace {
constexpr int64_t kPingMs = 15000;  // a comment line: proxies keep the stream, dead peers show up
}

Hub::Hub(const Config& cfg) : cfg_(cfg) {}

Hub::~Hub() { stop(); }

void Hub::start() {
    store_ = open_store(cfg_.store);
    // Start from now: what ended before the hub started is not news.
    auto newest = store_->list(TaskStore::ListFilter{std::nullopt, std::nullopt, 1});
    after_id_ = newest.empty() ? 0 : newest.front().id;
    for (const auto& t : store_->changes(after_id_, {})) unended_[t.id] = "";
    last_ping_ = mono_ms();
    thread_ = std::thread([this] { loop(); });
}

void Hub::stop() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Hub::add(const std::shared_ptr<Stream>& s) {
    std::lock_guard lock(mu_);
    streams_.push_back(s);
}

size_t Hub::streams() {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (auto& w : streams_) n += !w.expired();
    return n;
}

void Hub::loop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
        // A timed wait, not a sleep: stop() wakes it at once.
        cv_.wait_for(lock, std::chrono::milliseconds(cfg_.web.tick_ms), [this] { return stopping_; });
        if (stopping_) break;
        lock.unlock();
        try {
            tick();
        } catch (const std::exception& e) {
            // A busy or broken store: the pages miss nothing, the next tick looks again.
            spdlog::warn("live updates: cannot read the task store: {}", e.what());
        }
        lock.lock();
    }
}

void Hub::tick() {
    std::vector<int64_t> ids;
    for (auto& [id, _] : unended_) ids.push_back(id);
    auto tasks = store_->changes(after_id_, ids);
    mark_waiting(*store_, cfg_.query.max_running_per_user, tasks);
    ++queries_;
    // The store's clock (the page counts elapsed times from it), read only when a task is to be
    // described: on PostgreSQL it is a round trip, and most ticks find nothing.
    const int64_t now = tasks.empty() ? 0 : store_->now();
    struct Event {
        std::string submitter;
        std::string text;
    };
    std::vector<Event> events;
    for (const auto& t : tasks) {
        after_id_ = std::max(after_id_, t.id);
        json j = task_json(t, now);
        j.erase("elapsed_ms");  // changes every tick; the page counts it from started_at
        std::string key = j.dump(-1, ' ', false, json::error_handler_t::replace);
        auto it = unended_.find(t.id);
        const bool changed = it == unended_.end() || it->second != key;
        if (terminal(t.status)) {
            if (it != unended_.end()) unended_.erase(it);
        } else {
            unended_[t.id] = key;
        }
        if (!changed) continue;
        json ev = {{"task", task_json(t, now)}, {"now", now}};
        events.push_back({t.submitter, "event: task\ndata: " + ev.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"});
    }
    const bool ping = mono_ms() - last_ping_ >= kPingMs;
    if (ping) last_ping_ = mono_ms();
    if (events.empty() && !ping) return;
    std::vector<std::shared_ptr<Stream>> live;
    {
        std::lock_guard lock(mu_);
        std::vector<std::weak_ptr<Stream>> kept;
        for (auto& w : streams_)
            if (auto s = w.lock()) {
                live.push_back(s);
                kept.push_back(w);
            }
        streams_.swap(kept);
    }
    for (auto& s : live) {
        std::string out;
        for (const auto& e : events)
            if (s->admin || s->user == e.submitter) out += e.text;
        if (ping) out += ": ping\n\n";
        if (!out.empty()) s->send(out);
    }
}

}  // namespace sqlq::web
