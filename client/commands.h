#pragma once
// The `sqlq` subcommands. Each returns the process exit code (util/error.h) and prints either
// human text or, with --json, one JSON document on stdout. Errors go to stderr as one line.
#include <cstdint>
#include <string>

#include "config/config.h"

namespace sqlq {

struct Output {
    bool json = false;
};

struct SubmitOptions {
    std::string sql, file, batch, user;
};

int cmd_submit(const Config& cfg, const SubmitOptions& o, const Output& out);
int cmd_show(const Config& cfg, int64_t id, const Output& out);
int cmd_result(const Config& cfg, int64_t id, const std::string& format, const Output& out);
int cmd_list(const Config& cfg, const std::string& status, int64_t limit, const Output& out);
int cmd_wait(const Config& cfg, int64_t id, double timeout_s, const Output& out);
int cmd_cancel(const Config& cfg, int64_t id, const std::string& by, bool wait, const Output& out);
int cmd_audit(const Config& cfg, const Output& out);

}  // namespace sqlq
