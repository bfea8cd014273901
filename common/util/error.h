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
    kExitTooLarge = 6,      // submit: the SQL text is longer than [query] max_sql_bytes; nothing stored
    kExitQueueFull = 7,     // submit: the user has [query] max_queued_per_user tasks queued; nothing stored
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

// A database (the task store, or a query target's server) could not do what was asked. The
// one thing a caller branches on is transient(): the same operation may succeed later (busy,
// disk full, I/O error, connection lost), so a worker keeps its message unacked and retries;
// anything else is not retried. Each engine's own error type derives from this one, so no code
// outside an engine's files names the engine.
//
// resource(): out of memory, or a value bigger than the engine takes (SQLite NOMEM, TOOBIG).
// Not transient: the same write fails the same way; a smaller one (a failed outcome instead of a
// result) may pass. A worker fails the task rather than exiting, so it never crash-loops on it.
class StoreError : public Error {
public:
    enum class Cause { other, resource };
    StoreError(const std::string& what, bool transient, Cause cause = Cause::other)
        : Error(what), transient_(transient), cause_(cause) {}
    bool transient() const noexcept { return transient_; }
    bool resource() const noexcept { return cause_ == Cause::resource; }

private:
    bool transient_;
    Cause cause_;
};

}  // namespace sqlq
