#include "supervisor/control.h"

#include <limits>

namespace sqlq::supervisor {

using nlohmann::json;

std::variant<Request, BadRequest> parse_request(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (line.size() > kMaxRequestBytes) return BadRequest{"request longer than " + std::to_string(kMaxRequestBytes) + " bytes"};
    json j = json::parse(line, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return BadRequest{"not a JSON object"};
    if (!j.is_object()) return BadRequest{"not a JSON object"};
    auto cmd = j.find("cmd");
    if (cmd == j.end() || !cmd->is_string()) return BadRequest{"missing \"cmd\""};
    const std::string name = cmd->get<std::string>();

    // Only the fields a command takes; anything else is a mistake worth telling.
    auto only = [&](std::initializer_list<const char*> allowed) -> std::optional<BadRequest> {
        for (auto it = j.begin(); it != j.end(); ++it) {
            bool ok = it.key() == "cmd";
            for (const char* a : allowed) ok = ok || it.key() == a;
            if (!ok) return BadRequest{"unexpected field \"" + it.key() + "\" for \"" + name + "\""};
        }
        return std::nullopt;
    };

    Request r;
    if (name == "status" || name == "stop" || name == "reload") {
        if (auto bad = only({})) return *bad;
        r.cmd = name == "status" ? Command::status : name == "stop" ? Command::stop : Command::reload;
        return r;
    }
    if (name == "restart") {
        if (auto bad = only({"slot"})) return *bad;
        r.cmd = Command::restart;
        if (auto s = j.find("slot"); s != j.end() && !s->is_null()) {
            if (!s->is_number_integer()) return BadRequest{"\"slot\" must be an integer"};
            int64_t v = s->get<int64_t>();
            if (v < 1 || v > std::numeric_limits<int>::max()) return BadRequest{"\"slot\" must be 1 or more"};
            r.slot = static_cast<int>(v);
        }
        return r;
    }
    if (name == "cancel") {
        if (auto bad = only({"task"})) return *bad;
        r.cmd = Command::cancel;
        auto t = j.find("task");
        if (t == j.end()) return BadRequest{"\"cancel\" needs \"task\""};
        if (!t->is_number_integer()) return BadRequest{"\"task\" must be an integer"};
        r.task = t->get<int64_t>();
        if (r.task < 1) return BadRequest{"\"task\" must be 1 or more"};
        return r;
    }
    return BadRequest{"unknown command \"" + name + "\""};
}

std::string format_request(const Request& r) {
    json j;
    switch (r.cmd) {
    case Command::status: j["cmd"] = "status"; break;
    case Command::stop: j["cmd"] = "stop"; break;
    case Command::reload: j["cmd"] = "reload"; break;
    case Command::restart:
        j["cmd"] = "restart";
        if (r.slot) j["slot"] = *r.slot;
        break;
    case Command::cancel:
        j["cmd"] = "cancel";
        j["task"] = r.task;
        break;
    }
    return j.dump() + "\n";
}

json status_json(const Identity& id, const Fleet& fleet, int64_t now) {
    json workers = json::array();
    for (const Slot& s : fleet.slots()) {
        if (!s.wanted && s.state == SlotState::exited) continue;  // retired slots are not shown
        json w;
        w["slot"] = s.number;
        w["pid"] = s.has_process() ? json(s.pid) : json(nullptr);
        w["state"] = to_string(s.state);
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
    j["ok"] = true;
    j["pid"] = id.pid;
    j["phase"] = id.phase;
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

std::string error_reply(const std::string& why) {
    json j;
    j["ok"] = false;
    j["error"] = why;
    return j.dump() + "\n";
}

}  // namespace sqlq::supervisor
