// sqlq-supervisor: keeps N sqlq-worker processes alive and shows and steers them.
// See docs/operations.md.
#include <cstdio>
#include <optional>

#include <CLI/CLI.hpp>

#include "supervisor/commands.h"
#include "util/cli.h"
#include "util/error.h"

using namespace sqlq;

int main(int argc, char** argv) {
    CLI::App app{"sqlq-supervisor: keeps the sqlq workers running, and shows and steers them"};
    app.require_subcommand(1);
    std::string config_opt;
    bool foreground = false, json = false;
    app.add_option("-c,--config", config_opt, "config file (default: $SQLQ_CONFIG, ./etc/sqlq.conf)");
    app.add_flag("--json", json, "machine-readable output (errors too)");
    common_cli_setup(app);  // -c and --json also after the command

    auto* start = app.add_subcommand("start", "start the fleet; returns once every worker is ready");
    start->add_flag("-f,--foreground", foreground, "stay attached and log to stderr (systemd, containers)");

    auto* status = app.add_subcommand("status", "one line per worker slot; exit 0 when running, 3 when not");
    auto* stop = app.add_subcommand("stop", "stop gracefully: running tasks finish (up to stop_timeout_ms)");
    auto* reload = app.add_subcommand("reload", "re-read the config and converge to its worker count");

    std::optional<int> slot;
    auto* restart = app.add_subcommand("restart", "replace the worker of SLOT, or all of them one at a time");
    restart->add_option("slot", slot, "slot number (default: every slot)")->check(CLI::PositiveNumber);

    if (int code = parse_command_line(app, argc, argv, "sqlq-supervisor"); code >= 0) return code;

    const auto format = json ? supervisor::Format::json : supervisor::Format::table;
    try {
        if (*start) return supervisor::cmd_start(
            config_opt, foreground ? supervisor::Attach::foreground : supervisor::Attach::background, format);
        if (*status) return supervisor::cmd_status(config_opt, format);
        if (*stop) return supervisor::cmd_stop(config_opt, format);
        if (*reload) return supervisor::cmd_reload(config_opt, format);
        if (*restart) return supervisor::cmd_restart(config_opt, slot, format);
    } catch (const Error& e) {
        return report_error("sqlq-supervisor", e.what(), e.exit_code(), json);
    } catch (const std::exception& e) {
        return report_error("sqlq-supervisor", e.what(), kExitError, json);
    }
    return kExitUsage;
}
