// sqlq: submit SQL tasks and follow them. See docs/architecture.md and `sqlq --help`.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <pwd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "client/commands.h"
#include "config/config.h"
#include "util/cli.h"
#include "util/error.h"

using namespace sqlq;

namespace {
std::string default_user() {
    if (const char* u = std::getenv("SQLQ_USER"); u && *u) return u;
    if (const passwd* pw = getpwuid(getuid())) return pw->pw_name;
    return "unknown";
}
}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"sqlq: submit SQL queries to the sqlq fleet and follow them"};
    app.require_subcommand(1);
    std::string config_opt;
    bool json = false;
    app.add_option("-c,--config", config_opt, "config file (default: $SQLQ_CONFIG, ./etc/sqlq.conf)");
    app.add_flag("--json", json, "machine-readable output (errors too)");
    common_cli_setup(app);  // -c and --json also after the command

    SubmitOptions so;
    so.user = default_user();
    RunOptions ro;
    ro.user = so.user;
    auto* submit = app.add_subcommand("submit", "submit a query; prints its task id");
    submit->add_option("sql", so.sql, "the SQL (default: read from stdin)");
    submit->add_option("-f,--file", so.file, "read the SQL from FILE");
    submit->add_option("--batch", so.batch, "one task per non-empty line of FILE ('-': stdin)");
    submit->add_option("--user", so.user, "who submits (default: $SQLQ_USER or the login name)");

    int64_t id = 0;
    auto* show = app.add_subcommand("show", "show a task");
    show->add_option("id", id, "task id")->required();

    std::string format = "table";
    auto* result = app.add_subcommand("result", "print a task's result");
    result->add_option("id", id, "task id")->required();
    result->add_option("--format", format, "table, csv or json")->check(CLI::IsMember({"table", "csv", "json"}));

    std::string status;
    int64_t limit = 50;
    auto* list = app.add_subcommand("list", "list tasks, newest first");
    list->add_option("--status", status, "only tasks in this status")
        ->check(CLI::IsMember({"queued", "running", "succeeded", "failed", "cancelled"}));
    list->add_option("--limit", limit, "at most N tasks (default 50)")->check(CLI::PositiveNumber);
    std::string list_user;
    list->add_option("--user", list_user, "only tasks submitted by NAME");

    double timeout_s = 0;
    auto* wait = app.add_subcommand("wait", "wait for a task to end; exit 0 only if it succeeded");
    wait->add_option("id", id, "task id")->required();
    wait->add_option("--timeout", timeout_s, "give up after S seconds (exit 12); default: no limit")
        ->check(CLI::NonNegativeNumber);

    bool no_wait = false;
    auto* cancel = app.add_subcommand("cancel", "stop a queued or running task");
    cancel->add_option("id", id, "task id")->required();
    cancel->add_flag("--no-wait", no_wait, "do not wait for a running task to stop");
    cancel->add_option("--user", so.user, "who cancels (default: $SQLQ_USER or the login name)");

    auto* run = app.add_subcommand("run", "submit a query, wait for it and print its result, with wait's exit codes; "
                                          "Ctrl-C cancels it");
    run->add_option("sql", ro.sql, "the SQL (default: read from stdin)");
    run->add_option("-f,--file", ro.file, "read the SQL from FILE");
    run->add_option("--user", ro.user, "who submits (default: $SQLQ_USER or the login name)");
    run->add_option("--format", ro.format, "table, csv or json")->check(CLI::IsMember({"table", "csv", "json"}));
    run->add_option("--timeout", ro.timeout_s, "cancel the task after S seconds (exit 12); default: no limit")
        ->check(CLI::NonNegativeNumber);

    auto* audit = app.add_subcommand("audit", "reconcile the task store with the broker; non-zero when "
                                              "tasks are lost or stuck");

    auto* workers = app.add_subcommand("workers", "every host's workers, as their supervisors last recorded them in "
                                                  "the task store; flags a fleet whose heartbeat stopped");

    if (int code = parse_command_line(app, argc, argv, "sqlq"); code >= 0) return code;

    try {
        Config cfg = find_and_load_config(config_opt);
        Output out{json};
        if (*submit) return cmd_submit(cfg, so, out);
        if (*show) return cmd_show(cfg, id, out);
        if (*result) return cmd_result(cfg, id, json ? "json" : format, out);
        if (*list) return cmd_list(cfg, {status.empty() ? std::nullopt : parse_status(status),
                                         list_user.empty() ? std::nullopt : std::optional(list_user), limit},
                                   out);
        if (*wait) return cmd_wait(cfg, id, timeout_s, out);
        if (*cancel) return cmd_cancel(cfg, id, so.user, no_wait ? TaskService::WaitForStop::no : TaskService::WaitForStop::yes, out);
        if (*audit) return cmd_audit(cfg, out);
        if (*workers) return cmd_workers(cfg, out);
        if (*run) return cmd_run(cfg, ro, out);
    } catch (const Error& e) {
        return report_error("sqlq", e.what(), e.exit_code(), json);
    } catch (const std::exception& e) {
        return report_error("sqlq", e.what(), kExitError, json);
    }
    return kExitUsage;
}
