#pragma once
// The live updates of every open page, from one loop: each tick (every [web] tick_ms) it asks
// the store once what changed (TaskStore::changes: the tasks not ended, the new ones, and those
// that were not ended at the last look), and hands each change, as one Server-Sent Event, to
// the streams that may see it (the task's submitter's, and every admin's). 500 open pages cost
// the store what one does.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"

namespace sqlq {
class TaskStore;
}

namespace sqlq::web {

class Hub {
public:
    struct Stream {
        std::string user;
        bool admin = false;
        // Called on the hub's thread with one event's text; must not block (it posts).
        std::function<void(const std::string&)> send;
    };
    explicit Hub(const Config& cfg);
    ~Hub();
    Hub(const Hub&) = delete;

    void start();  // opens its store and starts the loop's thread; throws when the store cannot be opened
    void stop();   // ends the thread (idempotent)
    // The hub keeps a weak reference: a stream ends when its owner drops it.
    void add(const std::shared_ptr<Stream>& s);

    int64_t store_queries() const { return queries_; }  // looks at the store so far
    size_t streams();

private:
    void loop();
    void tick();

    Config cfg_;
    std::unique_ptr<TaskStore> store_;
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::vector<std::weak_ptr<Stream>> streams_;
    // The loop's own state (its thread only).
    int64_t after_id_ = 0;
    std::map<int64_t, std::string> unended_;  // id → the last event sent for it
    int64_t last_ping_ = 0;
    std::atomic<int64_t> queries_{0};
};

}  // namespace sqlq::web
