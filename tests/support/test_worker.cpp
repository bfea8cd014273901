// sqlq-test-worker: sqlq-worker plus fault-injection SQL functions, for the test suites
// only. It is built with the tests and never installed, so no production binary carries a way
// to hang or crash a worker, however its environment is set.
//   sqlq_test_hang(ms)  sleeps in native code, never returning to SQLite's VM: no progress
//                       handler, no cancel, no heartbeat; what a query stuck in a C library
//                       looks like. Returns ms.
//   sqlq_test_crash()   dies of SIGSEGV, every time it runs: a poison task.
//   sqlq_test_limit_memory(mb)
//                       caps the process's address space (soft RLIMIT_AS) at its current size
//                       plus `mb` MiB, so that a big result runs the worker out of memory
//                       (std::bad_alloc) while it encodes the rows; 0 lifts the cap. Returns mb.
//   sqlq_test_grow(mb)  allocates `mb` MiB, touches every page and keeps it for the rest of
//                       the process's life: a worker that really grows (a leak, a fragmented
//                       heap), for recycling by max_worker_rss_mb. Returns mb.
//   sqlq_test_launch_state()
//                       what this process was started with, as its supervisor's launcher left
//                       it, read at the top of main() before the worker does anything: a JSON
//                       object {"pid", "pgid", "sid", "ppid", "pdeathsig", "sigblk", "sigign"
//                       (the hex masks of /proc/self/status), "fds": {"N": readlink target}}.
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <string>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <sqlite3.h>

#include "target/sqlite/readonly.h"
#include "worker/worker_main.h"

namespace {

std::string launch_state;  // set once, first thing in main(); read by sqlq_test_launch_state()

std::string read_launch_state() {
    nlohmann::json j;
    j["pid"] = ::getpid();
    j["pgid"] = ::getpgid(0);
    j["sid"] = ::getsid(0);
    j["ppid"] = ::getppid();
    int pdeathsig = 0;
    ::prctl(PR_GET_PDEATHSIG, &pdeathsig);
    j["pdeathsig"] = pdeathsig;
    std::ifstream status("/proc/self/status");  // closed below, before the fds are listed
    for (std::string line; std::getline(status, line);) {
        for (const char* key : {"SigBlk", "SigIgn"}) {
            const std::string prefix = std::string(key) + ":";
            if (line.rfind(prefix, 0) == 0) {
                std::string v = line.substr(prefix.size());
                v.erase(0, v.find_first_not_of(" \t"));
                std::string name = key;
                for (auto& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
                j[name] = v;
            }
        }
    }
    status.close();
    // Every open fd but the one that lists them.
    j["fds"] = nlohmann::json::object();
    if (DIR* d = ::opendir("/proc/self/fd")) {
        const int own = ::dirfd(d);
        while (dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.' || std::atoi(e->d_name) == own) continue;
            char target[512];
            ssize_t n = ::readlink((std::string("/proc/self/fd/") + e->d_name).c_str(), target, sizeof target - 1);
            j["fds"][e->d_name] = n < 0 ? std::string("?") : std::string(target, size_t(n));
        }
        ::closedir(d);
    }
    return j.dump();
}

void test_launch_state(sqlite3_context* ctx, int, sqlite3_value**) {
    sqlite3_result_text(ctx, launch_state.c_str(), int(launch_state.size()), SQLITE_TRANSIENT);
}

void test_hang(sqlite3_context* ctx, int, sqlite3_value** argv) {
    int64_t ms = sqlite3_value_int64(argv[0]);
    timespec ts{time_t(ms / 1000), long((ms % 1000) * 1000000)};
    while (nanosleep(&ts, &ts) != 0) {
    }
    sqlite3_result_int64(ctx, ms);
}

void test_crash(sqlite3_context*, int, sqlite3_value**) {
    std::signal(SIGSEGV, SIG_DFL);
    std::raise(SIGSEGV);
}

void test_grow(sqlite3_context* ctx, int, sqlite3_value** argv) {
    const int64_t mb = sqlite3_value_int64(argv[0]);
    if (mb > 0) {
        // Kept on purpose, and reachable, so that the compiler cannot drop the allocation.
        static std::vector<std::unique_ptr<char[]>> kept;
        kept.emplace_back(new char[size_t(mb) << 20]);
        std::memset(kept.back().get(), 1, size_t(mb) << 20);
    }
    sqlite3_result_int64(ctx, mb);
}

void test_limit_memory(sqlite3_context* ctx, int, sqlite3_value** argv) {
    int64_t mb = sqlite3_value_int64(argv[0]);
    rlimit lim{};
    getrlimit(RLIMIT_AS, &lim);
    if (mb <= 0) {
        lim.rlim_cur = lim.rlim_max;
    } else {
        // VmSize, in kB, from /proc/self/status.
        std::ifstream in("/proc/self/status");
        std::string key;
        uint64_t kb = 0;
        while (in >> key) {
            if (key == "VmSize:") {
                in >> kb;
                break;
            }
        }
        lim.rlim_cur = rlim_t(kb * 1024 + uint64_t(mb) * 1024 * 1024);
    }
    setrlimit(RLIMIT_AS, &lim);
    sqlite3_result_int64(ctx, mb);
}

// An automatic extension: SQLite runs it for every connection this process opens, so the
// query target gets the functions without the worker knowing (the task store gets them too,
// and never calls them).
int register_hooks(sqlite3* db, const char** /*error*/, const sqlite3_api_routines*) {
    int rc = sqlite3_create_function(db, "sqlq_test_hang", 1, SQLITE_UTF8, nullptr, test_hang, nullptr, nullptr);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "sqlq_test_crash", 0, SQLITE_UTF8, nullptr, test_crash, nullptr, nullptr);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "sqlq_test_limit_memory", 1, SQLITE_UTF8, nullptr, test_limit_memory, nullptr,
                                     nullptr);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "sqlq_test_grow", 1, SQLITE_UTF8, nullptr, test_grow, nullptr, nullptr);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "sqlq_test_launch_state", 0, SQLITE_UTF8, nullptr, test_launch_state,
                                     nullptr, nullptr);
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    launch_state = read_launch_state();
    // sqlite3_auto_extension takes void(*)(void), the one function type any other converts to
    // without a warning; SQLite calls it with the real signature.
    if (sqlite3_auto_extension(reinterpret_cast<void (*)()>(register_hooks)) != SQLITE_OK) return 1;
    // The target allows only the functions on its list (readonly.cpp), and these five are ours.
    const sqlq::sqlite::AllowedFunction hang("sqlq_test_hang"), crash("sqlq_test_crash"),
        limit_memory("sqlq_test_limit_memory"), grow("sqlq_test_grow"), launch("sqlq_test_launch_state");
    return sqlq::worker_main(argc, argv);
}
