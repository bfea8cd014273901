#pragma once
// The PostgreSQL query target, on libpq. One connection per worker, kept between tasks and made
// again when it breaks. Each task:
//
//   BEGIN READ ONLY; SET LOCAL statement_timeout = <query.timeout_ms>
//   the task's statement, alone, by the extended protocol (which takes exactly one statement),
//     its rows streamed one at a time (single-row mode) under the caps of LimitGuard
//   ROLLBACK; DISCARD ALL   (nothing of the task's session state reaches the next task)
//
// Before it is sent, the statement must be a query (statement.h). A stop (cancel, timeout, a cap)
// sends a cancel request to the server and waits, up to a second, for the server to end the
// statement, so that "stopped" means stopped on the server too; past that the connection is
// closed. The session's settings (connection options) make the server end a statement whose
// client is gone within a second (client_connection_check_interval), so a worker killed
// mid-query does not leave its query running.
#include <atomic>
#include <string>
#include <vector>

#include "config/config.h"
#include "target/limit_guard.h"
#include "pg/conninfo.h"
#include "target/target.h"

namespace sqlq::pg {

class PgTarget final : public Target {
public:
    // Checks the URL (TargetError, kExitUsage, when libpq cannot read it) and connects once; a
    // server that cannot be reached now is not an error here (ready() says so, and retries). A
    // role that is a superuser or bypasses row security is refused (TargetError, kExitUsage)
    // unless [query] allow_superuser.
    explicit PgTarget(const QueryConfig& cfg);

    QueryOutcome run(const std::string& sql, const PollFn& poll) override;
    void cancel() noexcept override { cancel_.store(true, std::memory_order_relaxed); }
    std::string ready(const PollFn& poll) override;
    std::string describe() const override { return where_; }

private:
    // Connects (non-blocking, calling `poll` every 20 ms; true gives up). "" or why not.
    std::string connect(const PollFn& poll);
    // Runs a short statement of ours. False when it failed (why in `error`).
    bool exec(const char* sql, std::string* error = nullptr);
    // Sends a cancel request and waits for the statement to end, draining its results. False when
    // it did not end in time or the connection broke: the connection is closed.
    bool stop_on_server();
    // Ends the task's transaction and resets the session; closes the connection when that fails.
    void reset_session();
    void drop() noexcept;

    const QueryConfig cfg_;
    std::string where_;                   // the URL without its password
    ConnParams params_;
    Conn conn_;
    Cancel canceller_;
    std::string last_connect_error_;
    static_assert(std::atomic<bool>::is_always_lock_free);
    std::atomic<bool> cancel_{false};
};

}  // namespace sqlq::pg
