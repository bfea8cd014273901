#pragma once
// The control protocol on <run_dir>/control.sock (mode 0600): the client sends one JSON object
// on one line, the supervisor answers with one JSON object on one line and closes.
//
//   {"cmd":"status"}                 → {"ok":true,"pid":...,"target":...,"alive":...,"workers":[...]}
//   {"cmd":"stop"}                   → {"ok":true}  then the supervisor stops gracefully
//   {"cmd":"reload"}                 → {"ok":true,"target":N} or {"ok":false,"error":"FILE:LINE: ..."}
//   {"cmd":"restart"}                → {"ok":true}  every slot, one at a time
//   {"cmd":"restart","slot":N}       → {"ok":true}  or {"ok":false,"error":"no slot N"}
//   {"cmd":"cancel","task":ID}       → {"ok":true,"slot":N}  (N = 0: no worker runs that task)
//
// A request that is not one of these gets {"ok":false,"error":"..."}. docs/operations.md
// documents the same. The parser never touches a socket, so it is tested on strings.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "supervisor/fleet.h"

namespace sqlq::supervisor {

constexpr size_t kMaxRequestBytes = 4096;

enum class Command { status, stop, reload, restart, cancel };

struct Request {
    Command cmd = Command::status;
    std::optional<int> slot;  // restart: one slot, else all
    int64_t task = 0;         // cancel
};

struct BadRequest {
    std::string why;
};

std::variant<Request, BadRequest> parse_request(std::string_view line);
std::string format_request(const Request& r);  // one line, with the trailing newline

// Facts about the supervisor itself for a status reply.
struct Identity {
    pid_t pid = 0;
    std::string config;
    std::string run_dir;
    std::string broker;     // redacted
    std::string phase;      // "starting", "running", "stopping"
    int64_t uptime_ms = 0;
};

// {"ok":true,"pid":...,"target":...,"alive":...,"ready":...,"workers":[{slot,pid,state,...}]}
nlohmann::json status_json(const Identity& id, const Fleet& fleet, int64_t now_ms);

std::string error_reply(const std::string& why);  // {"ok":false,"error":why}\n

}  // namespace sqlq::supervisor
