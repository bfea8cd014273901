#pragma once
// Logging: one line per event, "TIME PROGRAM[INSTANCE] LEVEL: what happened", to stderr
// (the supervisor sends its workers' stderr to its own log). Built on spdlog.
#include <string>

#include <spdlog/spdlog.h>

namespace sqlq {

// Sets the process-wide logger: name is e.g. "sqlq-worker[slot 3]".
void init_log(const std::string& name, const std::string& file = "");

// For a process that logs a line per task (the worker): info lines to stderr are kept in a
// 64 KiB buffer until flush_log(); warnings and errors flush it at once. A crash loses at most
// the unflushed info lines (the task store has every outcome), and the reader of stderr (the
// supervisor) wakes once per flush, not once per line.
void init_buffered_log(const std::string& name);
void flush_log();

}  // namespace sqlq
