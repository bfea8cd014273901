#pragma once
// The client side of the supervisor's control socket (<run_dir>/control.sock): one request
// line, one reply line, in the protocol of control/protocol.h (docs/operations.md).
#include <optional>
#include <string>

#include "control/protocol.h"

namespace sqlq {

std::string control_socket_path(const std::string& run_dir);

// Sends `request` and returns the reply; nullopt when no supervisor listens there.
// Throws sqlq::Error when the supervisor answers garbage or times out.
std::optional<control::Reply> control_request(const std::string& run_dir, const control::Request& request,
                                              int timeout_ms = 10000);

}  // namespace sqlq
