#pragma once
// The caps of one query, whatever the engine: rows and bytes counted as the rows are read, a
// deadline, the caller's poll callback at its 20 ms cadence, and a cancel flag. The engine
// calls tick() from its own hook (SQLite: the progress handler) and between rows, and asks
// before and after each row whether a cap is passed. The messages name the config keys, so a
// user reads the same words whichever engine ran the query.
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "config/config.h"
#include "target/target.h"

namespace sqlq {

class LimitGuard {
public:
    // The deadline starts now. `poll` and `cancel` must outlive the guard.
    LimitGuard(const QueryConfig& cfg, const PollFn& poll, const std::atomic<bool>& cancel);

    // True when the query must stop now: cancelled, past the deadline, or the poll callback
    // said so (stop() tells which). Cheap to call often: the cancel flag is read every time,
    // the clock and the callback at most every 20 ms. Once true, stays true.
    bool tick();
    enum class Stop { none, timeout, stopped };
    Stop stop() const noexcept { return stop_; }

    // Before a row is read: why it may not be (one row past query.max_rows), or nothing.
    std::optional<std::string> admit_row() const;
    // After its values are read: counts the row's payload bytes (see RowEncoder::row_bytes);
    // why the result may not take them (past query.max_bytes), or nothing.
    std::optional<std::string> add_bytes(int64_t bytes);
    // The row is in the result.
    void row_done() noexcept { ++rows_; }

    int64_t rows() const noexcept { return rows_; }
    int64_t bytes() const noexcept { return bytes_; }

    // The texts of the caps an engine detects itself.
    std::string timeout_error() const;
    std::string memory_error() const;
    std::string temp_error() const;
    static std::string too_big_error(const std::string& engine_text);

private:
    const QueryConfig& cfg_;
    const PollFn& poll_;
    const std::atomic<bool>& cancel_;
    int64_t deadline_;
    int64_t next_poll_ = 0;  // 0: the first tick polls
    Stop stop_ = Stop::none;
    int64_t rows_ = 0;
    int64_t bytes_ = 0;
};

}  // namespace sqlq
