#include "util/process.h"

#include <climits>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace sqlq {

const std::string& host_name() {
    static const std::string name = [] {
        char buf[HOST_NAME_MAX + 1] = {};
        if (gethostname(buf, sizeof buf - 1) != 0) return std::string("localhost");
        return std::string(buf);
    }();
    return name;
}

namespace {
// Returns the fields after the ")" that closes the command name (it may contain spaces).
bool read_stat(pid_t pid, char& state, uint64_t& start) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line)) return false;
    auto close = line.rfind(')');
    if (close == std::string::npos) return false;
    std::istringstream rest(line.substr(close + 2));
    rest >> state;
    // fields 4..21 then 22 = starttime; we are at field 3 (state)
    std::string skip;
    for (int field = 4; field <= 21; ++field) rest >> skip;
    rest >> start;
    return static_cast<bool>(rest);
}
}  // namespace

uint64_t process_start_time(pid_t pid) {
    char state = 0;
    uint64_t start = 0;
    return read_stat(pid, state, start) ? start : 0;
}

bool process_alive(pid_t pid, uint64_t start_time) {
    char state = 0;
    uint64_t start = 0;
    if (pid <= 0 || !read_stat(pid, state, start)) return false;
    return start == start_time && state != 'Z' && state != 'X';
}

Memory process_memory(pid_t pid) {
    Memory m;
    // The first line is a mapping header ("55e1...-7ffe... ---p 00000000 00:00 0 [rollup]"),
    // then one "Key: value kB" per line: read by line, so the header cannot stop the parse.
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::string key;
        uint64_t value = 0;
        if (!(fields >> key >> value)) continue;
        if (key == "Rss:") m.rss_kib = value;
        if (key == "Pss:") m.pss_kib = value;
        if (key == "Private_Dirty:") m.private_dirty_kib = value;
    }
    return m;
}

std::string self_dir() {
    char buf[PATH_MAX] = {};
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string path(buf, static_cast<size_t>(n));
    auto slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace sqlq
