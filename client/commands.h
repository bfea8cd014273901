#pragma once
// The `sqlq` subcommands. Each returns the process exit code (util/error.h) and prints either
// human text or, with --json, one JSON document on stdout. Errors go to stderr as one line
// (with --json: one JSON object, util/cli.h). Progress, on a terminal only, goes to stderr.
#include <cstdint>
#include <string>

#include "config/config.h"
#include "service/task_service.h"
#include "task/store.h"

namespace sqlq {

struct Output {
    bool json = false;
    // Prints an error in the dialect asked for (text or JSON, on stderr); returns `code`.
    int error(const std::string& what, int code) const;
};

struct SubmitOptions {
    std::string sql, file, batch, user;
};

int cmd_submit(const Config& cfg, const SubmitOptions& o, const Output& out);
int cmd_show(const Config& cfg, int64_t id, const Output& out);
int cmd_result(const Config& cfg, int64_t id, const std::string& format, const Output& out);
int cmd_list(const Config& cfg, const TaskStore::ListFilter& filter, const Output& out);
int cmd_wait(const Config& cfg, int64_t id, double timeout_s, const Output& out);
int cmd_cancel(const Config& cfg, int64_t id, const std::string& by, TaskService::WaitForStop wait, const Output& out);
int cmd_audit(const Config& cfg, const Output& out);
// Every host's fleet, as its supervisor last recorded it in the task store.
int cmd_workers(const Config& cfg, const Output& out);

struct RunOptions {
    std::string sql, file, user;
    std::string format = "table";  // of the result: table, csv or json
    double timeout_s = 0;          // 0: no limit
};
// submit + wait + result: prints the result, or says how the task ended, with wait's exit
// codes. SIGINT or SIGTERM while it runs cancels the task (and says so); so does --timeout.
int cmd_run(const Config& cfg, const RunOptions& o, const Output& out);

}  // namespace sqlq
