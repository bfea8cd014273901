#pragma once
// Starting one child process (a worker, or sqlq-web) with fork/exec, the way a supervisor must:
//   - its own process group (a ^C at the supervisor's terminal is the supervisor's to handle);
//   - every signal disposition back to default and the supervisor's original signal mask;
//   - stdin from /dev/null; stdout and stderr into a pipe the supervisor logs from;
//   - for a worker, the status pipe's write end on fd 3, named by SQLQ_STATUS_FD, and
//     SQLQ_SUPERVISOR_PID set;
//   - PR_SET_PDEATHSIG=SIGKILL before exec, and getppid() checked after setting it, so a worker
//     never outlives a supervisor that was SIGKILLed between fork and prctl;
//   - every other fd closed; exit 127 when the binary is missing, 126 when it cannot be run.
// Written by hand rather than with Boost.Process, whose child handle reaps on its own (the
// supervisor's reap() must stay the only waitpid): docs/architecture.md has the facts.
#include <csignal>
#include <string>
#include <sys/types.h>
#include <vector>

namespace sqlq::supervisor {

constexpr int kStatusFd = 3;

struct Launched {
    pid_t pid = -1;
    int status_fd = -1;  // read end of the status pipe (non-blocking, close-on-exec), caller owns
    int output_fd = -1;  // read end of the stdout/stderr pipe (same)
};

// Holds back the children forked while it lives: each waits, blocked in read(2) before its
// exec, until the gate is destroyed. The supervisor opens one around a batch of spawns (the start,
// a scale-up): forking a thousand workers took 4-16 s of the supervisor's event loop, because
// every child it had already forked was starting up beside it and the loop got a thousandth of
// the CPU (its own work is 0.4 ms a fork). Held back, they no longer compete with the loop, which
// then forks all of them in well under a second. Without a pipe (pipe2 failed) it holds nothing.
class StartGate {
public:
    StartGate();
    ~StartGate();  // opens the gate: every child waiting on it goes on to its exec
    StartGate(const StartGate&) = delete;
    StartGate& operator=(const StartGate&) = delete;
    int read_fd() const { return read_fd_; }
    int write_fd() const { return write_fd_; }

private:
    int read_fd_ = -1, write_fd_ = -1;
};

// Throws sqlq::Error when the process cannot be created (pipe or fork failed).
// `mask` is the signal mask the child starts with. `args` is the argv, args[0] the binary's path.
// With `gate`, the child waits for it before its exec.
enum class StatusPipe : bool { no, yes };
Launched launch(const std::vector<std::string>& args, const sigset_t& mask, StatusPipe with_status,
                const StartGate* gate = nullptr);
// A worker: `WORKER -c CONFIG --slot N`, with the status pipe.
Launched launch_worker(const std::string& worker, const std::string& config, int slot, const sigset_t& mask,
                       const StartGate* gate = nullptr);

// The worker binary: [supervisor] worker_path, else sqlq-worker next to this binary, else in
// ../worker/ (the build tree), else "sqlq-worker" found on PATH. Throws sqlq::Error naming where it looked.
std::string find_worker(const std::string& configured);
// The program `name`: next to this binary, else in ../BUILD_DIR/ (the build tree), else on PATH.
// Throws sqlq::Error (kExitUsage) naming where it looked, followed by `hint`.
std::string find_program(const std::string& name, const std::string& build_dir, const std::string& hint = "");

}  // namespace sqlq::supervisor
