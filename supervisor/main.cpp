// sqlq-supervisor: keeps N sqlq-worker processes alive and shows and steers them.
// See docs/operations.md.
#include <cstdio>
#include <optional>

#include <CLI/CLI.hpp>

#include "supervisor/commands.h"
#include "util/error.h"

using namespace sqlq;

int main(int argc, char** argv) {
    CLI::App app{"sqlq-supervisor: keeps the sqlq workers running, and shows and steers them"};
    app.require_subcommand(1);
    std::string config_opt;
    app.add_option("-c,--config", config_opt, "config file (default: $SQLQ_CONFIG, ./etc/sqlq.conf)");

    bool foreground = false, json = false;
    auto* start = app.add_subcommand("start", "start the fleet; returns once every worker is ready");
    start->add_option("-c,--config", config_opt, "config file");
    start->add_flag("-f,--foreground", foreground, "stay attached and log to stderr (systemd, containers)");

    auto* status = app.add_subcommand("status", "one line per worker slot; exit 0 when running, 3 when not");
    status->add_option("-c,--config", config_opt, "config file");
    status->add_flag("--json", json, "machine-readable output");

    auto* stop = app.add_subcommand("stop", "stop gracefully: running tasks finish (up to stop_timeout_ms)");
    stop->add_option("-c,--config", config_opt, "config file");

    auto* reload = app.add_subcommand("reload", "re-read the config and converge to its worker count");
    reload->add_option("-c,--config", config_opt, "config file");

    std::optional<int> slot;
    auto* restart = app.add_subcommand("restart", "replace the worker of SLOT, or all of them one at a time");
    restart->add_option("-c,--config", config_opt, "config file");
    restart->add_option("slot", slot, "slot number (default: every slot)")->check(CLI::PositiveNumber);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        std::fprintf(stderr, "sqlq-supervisor: %s\n", e.what());
        return kExitUsage;
    }

    try {
        if (*start) return supervisor::cmd_start(
            config_opt, foreground ? supervisor::Attach::foreground : supervisor::Attach::background);
        if (*status) return supervisor::cmd_status(
            config_opt, json ? supervisor::StatusFormat::json : supervisor::StatusFormat::table);
        if (*stop) return supervisor::cmd_stop(config_opt);
        if (*reload) return supervisor::cmd_reload(config_opt);
        if (*restart) return supervisor::cmd_restart(config_opt, slot);
    } catch (const Error& e) {
        std::fprintf(stderr, "sqlq-supervisor: %s\n", e.what());
        return e.exit_code();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sqlq-supervisor: %s\n", e.what());
        return kExitError;
    }
    return kExitUsage;
}
