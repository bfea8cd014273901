// sqlq-web: the SQL console's web server (docs/api.md). `sqlq-web [-c PATH]` serves in the
// foreground until SIGTERM; `sqlq-web adduser NAME [--admin]` adds a user (or sets a user's
// password and role), reading the password from the first line of stdin.
#include <csignal>
#include <iostream>

#include <CLI/CLI.hpp>

#include "config/config.h"
#include "util/cli.h"
#include "util/error.h"
#include "util/log.h"
#include "web/handler.h"
#include "web/hub.h"
#include "web/server.h"
#include "web/users.h"

using namespace sqlq;

namespace {

int adduser(const Config& cfg, const std::string& name, bool admin) {
    if (!web::valid_user_name(name))
        throw Error("adduser: '" + name + "' is not a valid user name (1-64 of A-Z a-z 0-9 . _ @ -)", kExitUsage);
    std::string password;
    if (!std::getline(std::cin, password) || password.empty())
        throw Error("adduser: no password on standard input (the first line is the password)", kExitUsage);
    if (!password.empty() && password.back() == '\r') password.pop_back();
    auto users = web::load_users(cfg.web.users_file);
    const bool existed = users.count(name) > 0;
    users[name] = web::User{name, web::hash_password(password), admin};
    web::save_users(cfg.web.users_file, users);
    std::cout << (existed ? "updated" : "added") << " user " << name << (admin ? " (admin)" : "") << " in "
              << cfg.web.users_file << "\n";
    return kExitOk;
}

int serve(const Config& cfg) {
    init_log("sqlq-web");
    web::Handler handler(cfg);
    web::Hub hub(cfg);
    hub.start();
    handler.set_live_stats([&hub] {
        return nlohmann::json{{"streams", hub.streams()}, {"store_queries", hub.store_queries()}};
    });
    web::Server server(cfg, handler, hub);
    spdlog::info("listening on {} (users: {}, store: {})", server.address(), cfg.web.users_file, cfg.store.path);
    server.run();
    hub.stop();
    handler.sessions().save();  // the last times of use, so that no session expires early after a restart
    spdlog::info("stopped");
    return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"sqlq-web: the SQL console's web server; serves in the foreground until SIGTERM"};
    std::string config_opt;
    bool json = false;
    app.add_option("-c,--config", config_opt, "config file (default: $SQLQ_CONFIG, ./etc/sqlq.conf)");
    app.add_flag("--json", json, "errors as JSON");
    common_cli_setup(app);

    // Serving takes no command word, so `adduser` is declared only when it is asked for: the
    // shared parser (util/cli.h) would otherwise insist on a command.
    app.footer("Commands:\n  adduser NAME [--admin]  add a user, or set a user's password and role; the "
               "password is the first line of stdin\n\n" +
               exit_codes_help());
    bool adding = false;
    for (int i = 1; i < argc; ++i) adding = adding || std::string(argv[i]) == "adduser";
    std::string name;
    bool admin = false;
    CLI::App* add = nullptr;
    if (adding) {
        add = app.add_subcommand("adduser", "add a user, or set a user's password and role; the password is "
                                            "the first line of stdin");
        add->add_option("name", name, "user name")->required();
        add->add_flag("--admin", admin, "the user sees every user's tasks and the fleet");
    }

    if (int code = parse_command_line(app, argc, argv, "sqlq-web"); code >= 0) return code;
    try {
        Config cfg = find_and_load_config(config_opt);
        if (add && *add) return adduser(cfg, name, admin);
        return serve(cfg);
    } catch (const Error& e) {
        return report_error("sqlq-web", e.what(), e.exit_code(), json);
    } catch (const std::exception& e) {
        return report_error("sqlq-web", e.what(), kExitError, json);
    }
}
