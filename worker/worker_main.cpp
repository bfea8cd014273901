#include "worker/worker_main.h"

#include <atomic>
#include <csignal>
#include <cstring>
#include <malloc.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "config/config.h"
#include "util/cli.h"
#include "util/error.h"
#include "util/log.h"
#include "worker/worker.h"

namespace sqlq {

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_term(int) { g_stop = true; }
}  // namespace

int worker_main(int argc, char** argv) {
    CLI::App app{"sqlq-worker: runs SQL tasks from the queue, one at a time"};
    std::string config_opt;
    int slot = -1;
    app.add_option("-c,--config", config_opt, "config file (default: $SQLQ_CONFIG, ./etc/sqlq.conf)");
    app.add_option("--slot", slot, "slot number given by the supervisor (for logs)");
    common_cli_setup(app);
    if (int code = parse_command_line(app, argc, argv, "sqlq-worker"); code >= 0) return code;
    std::string name = "sqlq-worker[" + (slot >= 0 ? "slot " + std::to_string(slot) + " " : "") + "pid " +
                       std::to_string(getpid()) + "]";

    // Never outlive the supervisor: die with it, and check it is still the parent now
    // (it may have died before prctl took effect).
    if (const char* sup = std::getenv("SQLQ_SUPERVISOR_PID")) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != static_cast<pid_t>(std::atoi(sup))) return sqlq::kExitError;
    }
    struct sigaction sa {};
    sa.sa_handler = on_term;  // no SA_RESTART: a sleep or poll wakes up and sees the flag
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    // The heap keeps what one task frees for the next. By default glibc gives the top of the heap
    // back once 128 KB of it is free, and serves blocks of 128 KB and up with mmap; a worker's
    // store transactions (SQLite's page cache, refilled after another process commits) then fault
    // in fresh zeroed pages for every task: about 26 per trivial task, a third of the worker's CPU
    // (docs/performance.md, "CPU per task"). The worker gives memory back when it falls idle
    // instead (Target::release_memory: malloc_trim).
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);

    sqlq::init_buffered_log(name);
    try {
        sqlq::Config cfg = sqlq::find_and_load_config(config_opt);
        sqlq::Worker worker(cfg, g_stop);
        worker.run();
        spdlog::info("stopped");
        sqlq::flush_log();
        return sqlq::kExitOk;
    } catch (const sqlq::Error& e) {
        // Through the log, like every other line of the worker: with its time and its name (an
        // error flushes the buffered info lines before it).
        spdlog::error("{}", e.what());
        return e.exit_code();
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        return sqlq::kExitError;
    }
}

}  // namespace sqlq
