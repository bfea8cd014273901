#pragma once
// Files that hold users' queries, results or the fleet's control: readable by their owner only,
// whatever the umask. What exists already keeps its mode (an operator may have opened it to a
// group on purpose).
#include <string>
#include <system_error>

namespace sqlq {

// Makes `dir` and its missing parents, each new one 0700. An error when `dir` is not there after.
std::error_code create_private_dirs(const std::string& dir);

// Creates `path` 0600 if it does not exist (its missing directories 0700). Nothing when it exists;
// any other failure shows when the caller opens it.
void create_private_file(const std::string& path);

// Replaces `path` with `content`, whole or not at all: written to PATH.tmp (0600), fsynced, then
// renamed over it. Throws sqlq::Error "PATH: cannot write the WHAT: why".
void replace_private_file(const std::string& path, const std::string& content, const std::string& what);

}  // namespace sqlq
