#pragma once
// What a worker tells its supervisor, one short line per write on a pipe (fd SQLQ_STATUS_FD):
//   "starting"          connecting to the broker
//   "ready"             consumer registered, idle
//   "busy <task_id>"    running a task
//   "waiting <task_id>" holding a delivery of a task it cannot run yet: another live worker
//                       runs it (a redelivery), or the store refuses the claim (disk full)
//   "target <task_id>"  holding a delivery, not claimed: the query target cannot be reached
//   "alive"             liveness, every kAliveIntervalMs while nothing else is said, also from
//                       inside a long query
//   "stopping"          no new messages; finishing up
//   "done <task_id> <status> <wait_ms> <run_ms> <cancel_ms>"
//                       this worker wrote the task's outcome (status succeeded, failed or
//                       cancelled): how long it waited from submit to its claim, ran from claim to
//                       outcome, and took from the cancel request to the outcome; -1 where it
//                       does not apply. Sent before the "ready" that follows; only for metrics.
// Writes are non-blocking and each under PIPE_BUF, so they are atomic and never stall a worker.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "task/task.h"

namespace sqlq {

enum class Report { starting, ready, busy, alive, stopping, waiting, target, done };

// How often a worker says "alive" (when it says nothing else). [supervisor] watchdog_ms must be
// well above it (config.cpp refuses less than twice), or healthy idle workers are killed.
constexpr int64_t kAliveIntervalMs = 500;

struct ReportLine {
    Report what = Report::alive;
    int64_t task_id = 0;  // busy, waiting, target and done only
    // done only:
    Status status = Status::succeeded;
    int64_t wait_ms = -1;
    int64_t run_ms = -1;
    int64_t cancel_ms = -1;
};

std::string format_report(const ReportLine& r);
std::optional<ReportLine> parse_report(std::string_view line);

// The worker side: writes to the fd named by SQLQ_STATUS_FD, or nowhere when unset.
class Reporter {
public:
    Reporter();  // reads SQLQ_STATUS_FD
    void send(Report what, int64_t task_id = 0);
    void send(const ReportLine& r);
    // Written with the next line sent (one write, one wake-up of the supervisor): a "done",
    // which the worker's "ready" always follows, and that "ready" when the "busy" of a task
    // already claimed follows it.
    void defer(const ReportLine& r);
    // "alive" at most every interval_ms.
    void alive(int64_t interval_ms = kAliveIntervalMs);

private:
    int fd_ = -1;
    int64_t last_ms_ = 0;
    std::string deferred_;
};

}  // namespace sqlq
