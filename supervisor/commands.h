#pragma once
// The sqlq-supervisor subcommands. Each returns the exit code (util/error.h); errors that end a
// command are thrown as sqlq::Error and printed once by main().
#include <optional>
#include <string>

namespace sqlq::supervisor {

// Where `start` runs the supervisor: in this process, logging to stderr (systemd, containers), or
// in a detached child, `start` returning once every worker is ready.
enum class Attach { background, foreground };
// How a command prints: text (for `status`, the table), or one JSON object on stdout (errors:
// one JSON object on stderr, util/cli.h).
enum class Format { table, json };
using StatusFormat = Format;

// start: refuses a second supervisor on the run dir (kExitConflict), checks the broker and the
// store, then runs in the foreground or returns once every worker is ready.
int cmd_start(const std::string& config_opt, Attach attach, Format format = Format::table);
// status: exit 0 when running, kExitNotRunning (3) when not. A config file with an error does
// not stop it (an operator is editing it): it warns, and reads the run directory the file names
// as best it can (config.h, best_effort_run_dir); the queue and task counts are then left out.
int cmd_status(const std::string& config_opt, StatusFormat format);
// stop: returns once the supervisor has exited (its lock is free).
int cmd_stop(const std::string& config_opt, Format format = Format::table);
int cmd_reload(const std::string& config_opt, Format format = Format::table);
int cmd_restart(const std::string& config_opt, std::optional<int> slot, Format format = Format::table);

// The run-dir lock: held (flock) for the supervisor's whole life, by the process that runs the
// loop. The file holds that process's pid, for messages.
class RunLock {
public:
    // Throws sqlq::Error(kExitConflict) naming the holder when another supervisor has it.
    explicit RunLock(const std::string& run_dir);
    ~RunLock();
    RunLock(const RunLock&) = delete;
    RunLock& operator=(const RunLock&) = delete;
    void write_pid(pid_t pid);
    static std::string path(const std::string& run_dir) { return run_dir + "/supervisor.lock"; }
    // True when some process holds the lock of run_dir.
    static bool held(const std::string& run_dir);

private:
    int fd_ = -1;
};

}  // namespace sqlq::supervisor
