#include "supervisor/status.h"

#include <algorithm>

namespace sqlq::supervisor {

using nlohmann::json;

json status_json(const Identity& id, const Fleet& fleet, int64_t now) {
    json workers = json::array();
    for (const Slot& s : fleet.slots()) {
        if (!s.wanted && s.state == SlotState::exited) continue;  // retired slots are not shown
        json w;
        w["slot"] = s.number;
        w["pid"] = s.has_process() ? json(s.pid) : json(nullptr);
        // A worker holding a task that another one runs (or that the store will not let it
        // claim) is not free for new work: say so.
        const bool waiting = s.state == SlotState::ready && s.waiting_for;
        w["state"] = waiting ? "waiting" : to_string(s.state);
        if (waiting) w["waiting_for"] = s.waiting_for;
        if (waiting && s.waiting_on_target) w["waiting_on"] = "target";
        w["task"] = s.task ? json(s.task) : json(nullptr);
        w["task_ms"] = s.task ? json(now - s.task_since) : json(nullptr);
        w["uptime_ms"] = s.has_process() ? json(now - s.spawned_at) : json(nullptr);
        w["restarts"] = s.restarts;
        w["last_exit"] = s.last_exit.empty() ? json(nullptr) : json(s.last_exit);
        w["failed_starts"] = s.failed_starts;
        w["tasks_done"] = s.tasks_done;
        w["retiring"] = !s.wanted;
        if (s.state == SlotState::backoff) {
            w["retry_in_ms"] = std::max<int64_t>(0, s.deadline - now);
            if (!s.last_words.empty()) w["last_error"] = s.last_words;
        }
        workers.push_back(std::move(w));
    }
    json j;
    j["pid"] = id.pid;
    j["phase"] = to_string(id.phase);
    j["uptime_ms"] = id.uptime_ms;
    j["config"] = id.config;
    j["run_dir"] = id.run_dir;
    j["broker"] = id.broker;
    j["target"] = fleet.target();
    j["alive"] = fleet.alive();
    j["ready"] = fleet.ready();
    j["workers"] = std::move(workers);
    return j;
}

}  // namespace sqlq::supervisor
