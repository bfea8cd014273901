#pragma once
// What the command line of every sqlq binary shares, so that the three behave alike: global
// options (-c, --json) accepted before or after the command, the exit-code table in --help, an
// unknown command named as such, and errors as one line: text on stderr, or with --json one
// JSON object {"error":"...","exit_code":N}, also on stderr (stdout only ever carries a result).
#include <string>

namespace CLI {
class App;
}

namespace sqlq {

// The exit codes of util/error.h, as text for --help.
std::string exit_codes_help();

// Call after adding the app's own options and before adding its subcommands: options of the app
// are then also accepted after a subcommand (CLI11 fallthrough, inherited by the subcommands),
// and --help ends with the exit codes.
void common_cli_setup(CLI::App& app);

// Whether argv asks for JSON output (a --json before any "--"), known even when the parse fails.
bool argv_wants_json(int argc, char** argv);

// Parses argv. Returns -1 when the program should go on, else the exit code to leave with,
// having printed what there is to print: --help (exit 0), an unknown command ("unknown command
// 'x'; commands: a, b, ...") or another parse error (exit 2).
int parse_command_line(CLI::App& app, int argc, char** argv, const std::string& program);

// Prints an error as described above and returns `code`.
int report_error(const std::string& program, const std::string& what, int code, bool json);

}  // namespace sqlq
