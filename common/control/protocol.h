#pragma once
// The control protocol on <run_dir>/control.sock (mode 0600), defined once for both sides:
// `sqlq-supervisor status|stop|reload|restart` and `sqlq cancel` build a Request and read a
// Reply; the supervisor parses the Request and answers with one of the reply builders below.
// The client sends one JSON object on one line, the supervisor answers with one JSON object on
// one line and closes.
//
//   {"cmd":"status"}                 → {"ok":true,"pid":...,"target":...,"alive":...,"workers":[...]}
//   {"cmd":"stop"}                   → {"ok":true}  then the supervisor stops gracefully
//   {"cmd":"reload"}                 → {"ok":true,"target":N} or {"ok":false,"error":"FILE:LINE: ..."}
//   {"cmd":"restart"}                → {"ok":true}  every slot, one at a time
//   {"cmd":"restart","slot":N}       → {"ok":true}  or {"ok":false,"error":"no slot N"}
//   {"cmd":"cancel","task":ID}       → {"ok":true,"slot":N}  (N = 0: no worker runs that task)
//
// A request that is not one of these gets {"ok":false,"error":"..."}. docs/operations.md
// documents the same. Nothing here touches a socket, so all of it is tested on strings
// (tests/supervisor/control.tests.cpp).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

namespace sqlq::control {

// A request line longer than this (without its newline) is refused.
constexpr size_t kMaxRequestBytes = 4096;

enum class Command { status, stop, reload, restart, cancel };
const char* to_string(Command c);  // the "cmd" value: "status", "stop", ...

struct Request {
    Command cmd = Command::status;
    std::optional<int> slot;  // restart: one slot (1 or more), else every slot
    int64_t task = 0;         // cancel: the task (1 or more)

    static Request status() { return {Command::status, std::nullopt, 0}; }
    static Request stop() { return {Command::stop, std::nullopt, 0}; }
    static Request reload() { return {Command::reload, std::nullopt, 0}; }
    static Request restart(std::optional<int> slot = std::nullopt) { return {Command::restart, slot, 0}; }
    static Request cancel(int64_t task) { return {Command::cancel, std::nullopt, task}; }
};

struct BadRequest {
    std::string why;  // one line for the client, e.g. `unknown command "x"`
};

// One request line (a trailing "\n" or "\r\n" is allowed). Every field a command does not take,
// a missing or mistyped field, an unknown command is a BadRequest saying which.
std::variant<Request, BadRequest> parse_request(std::string_view line);
// One line, with the trailing newline; parse_request() reads it back to the same Request.
std::string format_request(const Request& r);

// --- replies: built by the supervisor, one line each, with the trailing newline ---

std::string ok_reply();                          // {"ok":true}: stop, restart
std::string reload_reply(int target);            // {"ok":true,"target":N}
std::string cancel_reply(int slot);              // {"ok":true,"slot":N}, 0: no worker runs the task
std::string status_reply(nlohmann::json status); // the status object with "ok":true added
std::string error_reply(const std::string& why); // {"ok":false,"error":why}

// --- replies: as the client reads them ---

struct Reply {
    bool ok = false;
    std::string error;     // why, when !ok
    nlohmann::json body;   // the whole reply object, "ok" included

    // reload: the worker count now wanted; cancel: the slot whose worker runs the task (0: none).
    // Throw sqlq::Error when the field is missing or not an integer.
    int target() const;
    int slot() const;
    // status: the status object without "ok" (docs/operations.md lists its keys).
    nlohmann::json status() const;
};

// nullopt when the line is not a JSON object with a boolean "ok".
std::optional<Reply> parse_reply(std::string_view line);

}  // namespace sqlq::control
