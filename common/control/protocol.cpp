#include "control/protocol.h"

#include <initializer_list>
#include <limits>

#include "util/error.h"

namespace sqlq::control {

using nlohmann::json;

namespace {
constexpr const char* kCmd = "cmd";
constexpr const char* kSlot = "slot";
constexpr const char* kTask = "task";
constexpr const char* kOk = "ok";
constexpr const char* kError = "error";
constexpr const char* kTarget = "target";

std::string line_of(const json& j) { return j.dump() + "\n"; }
}  // namespace

const char* to_string(Command c) {
    switch (c) {
    case Command::status: return "status";
    case Command::stop: return "stop";
    case Command::reload: return "reload";
    case Command::restart: return "restart";
    case Command::cancel: return "cancel";
    }
    return "?";
}

std::variant<Request, BadRequest> parse_request(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (line.size() > kMaxRequestBytes) return BadRequest{"request longer than " + std::to_string(kMaxRequestBytes) + " bytes"};
    json j = json::parse(line, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return BadRequest{"not a JSON object"};
    auto cmd = j.find(kCmd);
    if (cmd == j.end() || !cmd->is_string()) return BadRequest{"missing \"cmd\""};
    const std::string name = cmd->get<std::string>();

    // Only the fields a command takes; anything else is a mistake worth telling.
    auto only = [&](std::initializer_list<const char*> allowed) -> std::optional<BadRequest> {
        for (auto it = j.begin(); it != j.end(); ++it) {
            bool ok = it.key() == kCmd;
            for (const char* a : allowed) ok = ok || it.key() == a;
            if (!ok) return BadRequest{"unexpected field \"" + it.key() + "\" for \"" + name + "\""};
        }
        return std::nullopt;
    };

    for (Command simple : {Command::status, Command::stop, Command::reload}) {
        if (name != to_string(simple)) continue;
        if (auto bad = only({})) return *bad;
        return Request{simple, std::nullopt, 0};
    }
    if (name == to_string(Command::restart)) {
        if (auto bad = only({kSlot})) return *bad;
        Request r = Request::restart();
        if (auto s = j.find(kSlot); s != j.end() && !s->is_null()) {
            if (!s->is_number_integer()) return BadRequest{"\"slot\" must be an integer"};
            // A number above INT64_MAX reads as negative: refused all the same.
            const int64_t v = s->get<int64_t>();
            if (v < 1 || v > std::numeric_limits<int>::max()) return BadRequest{"\"slot\" must be 1 or more"};
            r.slot = static_cast<int>(v);
        }
        return r;
    }
    if (name == to_string(Command::cancel)) {
        if (auto bad = only({kTask})) return *bad;
        auto t = j.find(kTask);
        if (t == j.end()) return BadRequest{"\"cancel\" needs \"task\""};
        if (!t->is_number_integer()) return BadRequest{"\"task\" must be an integer"};
        Request r = Request::cancel(t->get<int64_t>());
        if (r.task < 1) return BadRequest{"\"task\" must be 1 or more"};
        return r;
    }
    return BadRequest{"unknown command \"" + name + "\""};
}

std::string format_request(const Request& r) {
    json j;
    j[kCmd] = to_string(r.cmd);
    if (r.cmd == Command::restart && r.slot) j[kSlot] = *r.slot;
    if (r.cmd == Command::cancel) j[kTask] = r.task;
    return line_of(j);
}

// --- replies, supervisor side ---

std::string ok_reply() { return line_of(json{{kOk, true}}); }

std::string reload_reply(int target) { return line_of(json{{kOk, true}, {kTarget, target}}); }

std::string cancel_reply(int slot) { return line_of(json{{kOk, true}, {kSlot, slot}}); }

std::string status_reply(json status) {
    status[kOk] = true;
    return line_of(status);
}

std::string error_reply(const std::string& why) { return line_of(json{{kOk, false}, {kError, why}}); }

// --- replies, client side ---

namespace {
int int_field(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || !it->is_number_integer())
        throw Error(std::string("the supervisor's reply has no integer \"") + key + "\"");
    return it->get<int>();
}
}  // namespace

int Reply::target() const { return int_field(body, kTarget); }

int Reply::slot() const { return int_field(body, kSlot); }

json Reply::status() const {
    json s = body;
    s.erase(kOk);
    return s;
}

std::optional<Reply> parse_reply(std::string_view line) {
    json j = json::parse(line, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    auto ok = j.find(kOk);
    if (ok == j.end() || !ok->is_boolean()) return std::nullopt;
    Reply r;
    r.ok = ok->get<bool>();
    if (!r.ok) {
        auto e = j.find(kError);
        r.error = e != j.end() && e->is_string() ? e->get<std::string>() : "?";
    }
    r.body = std::move(j);
    return r;
}

}  // namespace sqlq::control
