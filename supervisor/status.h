#pragma once
// The body of the `status` control reply (docs/operations.md, "status --json"): the supervisor's
// identity and one object per shown slot. Pure: built from a Fleet and a time, no socket.
#include <cstdint>
#include <string>
#include <sys/types.h>

#include <nlohmann/json.hpp>

#include "supervisor/fleet.h"
#include "supervisor/phase.h"

namespace sqlq::supervisor {

// Facts about the supervisor itself for a status reply.
struct Identity {
    pid_t pid = 0;
    std::string config;
    std::string run_dir;
    std::string broker;  // redacted
    Phase phase = Phase::starting;
    int64_t uptime_ms = 0;
};

// {"pid":...,"phase":...,"target":...,"alive":...,"ready":...,"workers":[{slot,pid,state,...}]};
// control::status_reply() adds "ok".
nlohmann::json status_json(const Identity& id, const Fleet& fleet, int64_t now_ms);

}  // namespace sqlq::supervisor
