#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace sqlq {

// A task's life: queued → running → succeeded | failed | cancelled; running → running again
// when its owner is gone (a new attempt). Every arrow is one conditional statement in
// task/store.cpp; nothing else writes the status column.
enum class Status { queued, running, succeeded, failed, cancelled };

const char* to_string(Status s);
std::optional<Status> parse_status(const std::string& s);
// The error of a task whose worker ran past the hard deadline and was killed for it; the same
// words whoever records it (the supervisor that killed it, or the worker that finds it dead).
std::string hard_deadline_error(int64_t timeout_ms, int64_t grace_ms);

inline bool terminal(Status s) { return s == Status::succeeded || s == Status::failed || s == Status::cancelled; }

struct Task {
    int64_t id = 0;
    std::string sql;
    std::string submitter;
    Status status = Status::queued;
    bool published = false;
    int64_t attempts = 0;
    int64_t executions = 0;
    std::optional<std::string> owner;  // "host:pid"
    int64_t owner_pid = 0;
    int64_t owner_start = 0;
    std::optional<int64_t> lease_until;
    int64_t created_at = 0;
    std::optional<int64_t> started_at;
    std::optional<int64_t> finished_at;
    std::optional<std::string> error;
    std::optional<int64_t> row_count;
    std::optional<int64_t> result_bytes;
    std::optional<std::string> result_ref;
    std::optional<int64_t> cancel_requested_at;
    std::optional<std::string> cancelled_by;
    int64_t outcomes = 0;
    std::optional<int64_t> recovery_ms;
    int64_t sql_bytes = 0;       // the whole SQL text's length
    bool sql_truncated = false;  // `sql` holds only its beginning (list previews, huge texts)
    // Why a queued task is not running yet beyond the queue's order (TaskService): "user limit"
    // when its user runs [query] max_running_per_user tasks already; "" otherwise.
    std::string waiting_on{};
};

}  // namespace sqlq
