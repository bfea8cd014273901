#pragma once
// Runs one user query against the target database, safely: read-only, one statement, an
// authorizer that refuses writes, ATTACH and state-changing PRAGMAs, no extensions, defensive
// mode, a heap cap, a timeout, and caps on the rows and bytes of the result.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "config/config.h"
#include "sqlite/db.h"
#include "task/store.h"

namespace sqlq {

struct QueryOutcome {
    enum class Kind { ok, error, timeout, stopped } kind = Kind::ok;
    std::string error;   // for error and timeout
    ResultData result;   // for ok
    int64_t rows = 0;
    int64_t bytes = 0;
};

class Executor {
public:
    // Opens the target read-only. `test_hooks` registers fault-injection SQL functions
    // (sqlq_test_hang(ms), sqlq_test_crash()); only the test suites turn them on.
    Executor(const QueryConfig& cfg, bool test_hooks);

    // `poll` is called about every 20 ms while the query runs (and never otherwise); when it
    // returns true the query is interrupted and the outcome is `stopped`.
    QueryOutcome run(const std::string& sql, const std::function<bool()>& poll);

    // Why the authorizer refused the last statement ("" if it did not); set by the callback.
    std::string denied;

private:
    QueryConfig cfg_;
    sqlite::Db db_;
};

}  // namespace sqlq
