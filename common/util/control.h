#pragma once
// The client side of the supervisor's control socket (<run_dir>/control.sock): one JSON request
// line, one JSON reply line. The supervisor documents the requests in docs/operations.md.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace sqlq {

std::string control_socket_path(const std::string& run_dir);

// Sends `request` and returns the reply; nullopt when no supervisor listens there.
// Throws sqlq::Error when the supervisor answers garbage or times out.
std::optional<nlohmann::json> control_request(const std::string& run_dir, const nlohmann::json& request,
                                              int timeout_ms = 10000);

}  // namespace sqlq
