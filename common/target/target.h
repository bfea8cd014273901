#pragma once
// A query target: the database that user queries run against, read-only. The worker sees only
// this interface and open_target(); each engine lives in its own folder under common/target/
// (sqlite/, postgres/) and is the only code that names its library.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "config/config.h"
#include "task/result.h"
#include "util/error.h"

namespace sqlq {

// How one query ended. Limits that are hit (rows, bytes, memory) are errors with a text that
// names the config key; only the time limit has a kind of its own.
struct QueryOutcome {
    enum class Kind {
        ok,       // `result` holds the columns and rows
        error,    // refused, failed or over a cap: `error` says why, in words for the user
        timeout,  // ran longer than query.timeout_ms: `error` says so
        stopped,  // the poll callback returned true, or cancel() was called
    } kind = Kind::ok;
    std::string error;   // for error and timeout
    ResultData result;   // for ok
    int64_t rows = 0;    // rows read so far
    int64_t bytes = 0;   // payload bytes read so far (the measure query.max_bytes caps)
};

// Called about every 20 ms while a query runs, on the thread that runs it (never otherwise).
// Returning true stops the query: run() returns `stopped`.
using PollFn = std::function<bool()>;

// Opening a target failed (missing file, refused login, unknown engine). The message names the
// target; exit_code() is kExitUsage when the config is wrong, kExitError otherwise.
class TargetError : public Error {
public:
    using Error::Error;
};

class Target {
public:
    virtual ~Target() = default;
    Target() = default;
    Target(const Target&) = delete;
    Target& operator=(const Target&) = delete;

    // Runs exactly one read-only statement under the caps of the QueryConfig the target was
    // opened with (timeout_ms, max_rows, max_bytes, memory_limit_mb) and returns how it ended.
    // Errors of the query are outcomes, not exceptions. The result's JSON is the same for
    // every engine (see row_encoder.h).
    virtual QueryOutcome run(const std::string& sql, const PollFn& poll) = 0;

    // Asks the query now running to stop; run() then returns `stopped` soon (an engine checks
    // at least as often as it polls). Safe from another thread or a signal handler. A request
    // made while no query runs is dropped when the next run() starts.
    virtual void cancel() noexcept = 0;

    // Makes sure the target can take a query now: a server target connects when it has no
    // connection (calling `poll` about every 20 ms meanwhile; true gives up). Returns why it
    // cannot ("" when it can), for the worker to wait on and show. A file target always can.
    virtual std::string ready(const PollFn& poll) {
        (void)poll;
        return "";
    }

    // The target as it may be shown: a path, or a URL without its password.
    virtual std::string describe() const = 0;

    // Called when the worker falls idle after work: gives back the memory the engine kept for
    // later queries (caches), so an idle worker stays small. The next run() works as before.
    virtual void release_memory() noexcept {}
};

// Opens the target that `[query] database` names: a path is a SQLite database file, a
// postgresql:// (or postgres://) URL a PostgreSQL database. Throws TargetError when the target
// cannot be opened (a server that cannot be reached yet is not an error: see ready()).
std::unique_ptr<Target> open_target(const QueryConfig& cfg);

}  // namespace sqlq
