#pragma once
// One error dialect for every binary: a message that already names what failed and why,
// and the exit code the program should leave with.
#include <stdexcept>
#include <string>

namespace sqlq {

// The exit codes of every sqlq binary (docs/operations.md has the table).
enum ExitCode : int {
    kExitOk = 0,
    kExitError = 1,         // the operation failed (broker, store, I/O)
    kExitUsage = 2,         // bad command line, config or input
    kExitNotRunning = 3,    // LSB status: the supervisor is not running
    kExitNotFound = 4,      // no such task
    kExitConflict = 5,      // the state forbids it: task already finished, supervisor already running
    kExitTaskFailed = 10,   // wait: the task failed
    kExitTaskCancelled = 11,// wait: the task was cancelled
    kExitTimeout = 12,      // wait: timed out before the task ended
};

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what, int exit_code = kExitError)
        : std::runtime_error(what), exit_code_(exit_code) {}
    int exit_code() const noexcept { return exit_code_; }

private:
    int exit_code_;
};

}  // namespace sqlq
