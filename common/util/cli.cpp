#include "util/cli.h"

#include <cstdio>
#include <cstring>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace sqlq {

std::string exit_codes_help() {
    return "Exit codes (every sqlq program):\n"
           "   0  done; wait: the task succeeded; status: the supervisor runs\n"
           "   1  the operation failed (broker, store, I/O); submit: stored, not yet published;\n"
           "      audit: something is lost or stuck\n"
           "   2  bad command line, config or input\n"
           "   3  status, reload, restart: the supervisor is not running\n"
           "   4  no such task (or its result has expired)\n"
           "   5  the state forbids it (the task already finished; a supervisor already runs)\n"
           "   6  submit: a query is longer than [query] max_sql_bytes; nothing was stored\n"
           "   7  submit, run: the user has [query] max_queued_per_user tasks queued; nothing was stored\n"
           "  10  wait, run: the task failed\n"
           "  11  wait, run: the task was cancelled (run: by its Ctrl-C)\n"
           "  12  wait: timed out; run: timed out, the task cancelled; cancel: still running after the grace\n"
           "      period\n"
           "With --json, an error is one JSON object on stderr: {\"error\":\"...\",\"exit_code\":N}.";
}

void common_cli_setup(CLI::App& app) {
    app.fallthrough();  // subcommands added later inherit it
    app.footer(exit_codes_help());
}

bool argv_wants_json(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--") == 0) return false;
        if (std::strcmp(argv[i], "--json") == 0) return true;
    }
    return false;
}

namespace {

// The first word of argv that is neither an option nor the value of one of the app's own
// options: the command, or "" when there is none.
std::string command_word(const CLI::App& app, int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--") return i + 1 < argc ? argv[i + 1] : "";
        if (a.size() > 1 && a[0] == '-') {
            if (a.find('=') != std::string::npos) continue;
            const CLI::Option* o = app.get_option_no_throw(a);
            // "-cFILE" carries its value; "-c FILE" takes the next word; a flag takes none.
            if (o && o->get_items_expected_min() > 0) ++i;
            continue;
        }
        return a;
    }
    return "";
}

}  // namespace

int parse_command_line(CLI::App& app, int argc, char** argv, const std::string& program) {
    const bool json = argv_wants_json(argc, argv);
    auto subs = app.get_subcommands([](const CLI::App*) { return true; });
    if (!subs.empty()) {
        const std::string word = command_word(app, argc, argv);
        std::string names;
        bool known = false;
        for (const auto* s : subs) {
            names += (names.empty() ? "" : ", ") + s->get_name();
            known = known || s->check_name(word);
        }
        if (!word.empty() && !known)
            return report_error(program, "unknown command '" + word + "'; commands: " + names, kExitUsage, json);
        bool help = false;
        for (int i = 1; i < argc; ++i) help = help || !std::strcmp(argv[i], "-h") || !std::strcmp(argv[i], "--help");
        if (word.empty() && !help) return report_error(program, "no command given; commands: " + names, kExitUsage, json);
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // --help
        return report_error(program, e.what(), kExitUsage, json);
    }
    return -1;
}

int report_error(const std::string& program, const std::string& what, int code, bool json) {
    if (json)
        std::fprintf(stderr, "%s\n", nlohmann::json{{"error", what}, {"exit_code", code}}.dump().c_str());
    else
        std::fprintf(stderr, "%s: %s\n", program.c_str(), what.c_str());
    return code;
}

}  // namespace sqlq
