#pragma once
// Logging: one line per event, "TIME PROGRAM[INSTANCE] LEVEL: what happened", to stderr
// (the supervisor sends its workers' stderr to its own log). Built on spdlog.
#include <string>

#include <spdlog/spdlog.h>

namespace sqlq {

// Sets the process-wide logger: name is e.g. "sqlq-worker[slot 3]".
void init_log(const std::string& name, const std::string& file = "");

}  // namespace sqlq
