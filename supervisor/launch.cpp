#include "supervisor/launch.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/prctl.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include "util/error.h"
#include "util/process.h"

extern char** environ;

namespace sqlq::supervisor {

namespace fs = std::filesystem;

namespace {

// Closes an fd when the scope ends unless released: the parent's copies of the pipe ends.
struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
    int release() { return std::exchange(fd, -1); }
};

void make_pipe(Fd& read_end, Fd& write_end, const char* what) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw Error(std::string("cannot create the ") + what + " pipe: " + std::strerror(errno));
    // Above the fds the child sets up (0-3), so its dup2()s never clobber a source.
    for (int i = 0; i < 2; ++i) {
        int high = ::fcntl(p[i], F_DUPFD_CLOEXEC, 10);
        if (high < 0) {
            int e = errno;
            ::close(p[0]);
            ::close(p[1]);
            throw Error(std::string("cannot create the ") + what + " pipe: " + std::strerror(e));
        }
        ::close(p[i]);
        p[i] = high;
    }
    read_end.fd = p[0];
    write_end.fd = p[1];
    ::fcntl(read_end.fd, F_SETFL, ::fcntl(read_end.fd, F_GETFL) | O_NONBLOCK);
}

// Async-signal-safe: the child of a multi-threaded process may call nothing else before exec.
void write_str(int fd, const char* s) {
    ssize_t n = ::write(fd, s, std::strlen(s));
    (void)n;
}

[[noreturn]] void child_fail(const char* what, const char* path, int err) {
    // "sqlq-supervisor: cannot execute PATH: errno N" without strerror (not async-signal-safe).
    char num[16];
    int i = sizeof num - 1;
    num[i] = '\0';
    int e = err;
    do num[--i] = char('0' + e % 10), e /= 10;
    while (e > 0 && i > 0);
    write_str(2, "sqlq-supervisor: ");
    write_str(2, what);
    if (path) {
        write_str(2, " ");
        write_str(2, path);
    }
    write_str(2, ": errno ");
    write_str(2, num + i);
    write_str(2, "\n");
    ::_exit(err == ENOENT ? 127 : 126);
}

}  // namespace

StartGate::StartGate() {
    Fd r, w;
    try {
        make_pipe(r, w, "start gate");
    } catch (const Error&) {
        return;  // no gate: children go straight on, as without one
    }
    // Blocking: the children wait in read() (make_pipe made the read end non-blocking, for the
    // event loop).
    ::fcntl(r.fd, F_SETFL, ::fcntl(r.fd, F_GETFL) & ~O_NONBLOCK);
    read_fd_ = r.release();
    write_fd_ = w.release();
}

StartGate::~StartGate() {
    // Each child closed its own copy of the write end at once, so this close is the last one:
    // their read()s return 0.
    if (write_fd_ >= 0) ::close(write_fd_);
    if (read_fd_ >= 0) ::close(read_fd_);
}

Launched launch_worker(const std::string& worker, const std::string& config, int slot, const sigset_t& mask,
                       const StartGate* gate) {
    return launch({worker, "-c", config, "--slot", std::to_string(slot)}, mask, StatusPipe::yes, gate);
}

Launched launch(const std::vector<std::string>& args, const sigset_t& mask, StatusPipe with_status,
                const StartGate* gate) {
    const int gate_r = gate ? gate->read_fd() : -1, gate_w = gate ? gate->write_fd() : -1;
    // Everything the child needs is built before fork: after it, only async-signal-safe calls.
    const pid_t parent = ::getpid();
    const bool status_pipe = with_status == StatusPipe::yes;
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    const std::string fd_var = "SQLQ_STATUS_FD=" + std::to_string(kStatusFd);
    const std::string pid_var = "SQLQ_SUPERVISOR_PID=" + std::to_string(parent);
    std::vector<const char*> envp;
    for (char** e = environ; *e; ++e)
        if (std::strncmp(*e, "SQLQ_STATUS_FD=", 15) != 0 && std::strncmp(*e, "SQLQ_SUPERVISOR_PID=", 20) != 0)
            envp.push_back(*e);
    if (status_pipe) {
        envp.push_back(fd_var.c_str());
        envp.push_back(pid_var.c_str());
    }
    envp.push_back(nullptr);

    Fd status_r, status_w, out_r, out_w, devnull;
    if (status_pipe) make_pipe(status_r, status_w, "status");
    make_pipe(out_r, out_w, "output");
    devnull.fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull.fd < 0) throw Error(std::string("cannot open /dev/null: ") + std::strerror(errno));

    pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("cannot fork ") + args.front() + ": " + std::strerror(errno));
    if (pid == 0) {
        ::setpgid(0, 0);
        // Handlers are reset by exec anyway; ignored signals (SIGPIPE) would stay ignored.
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
        ::sigprocmask(SIG_SETMASK, &mask, nullptr);
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail("cannot set PR_SET_PDEATHSIG", nullptr, errno);
        // The supervisor may have died before prctl: then nobody would ever kill us.
        if (::getppid() != parent) ::_exit(1);
        if (gate_r >= 0) {
            // Wait for the rest of the batch to be forked. Our copy of the write end goes first,
            // or the read would wait for ourselves. A supervisor that dies meanwhile kills us
            // (PR_SET_PDEATHSIG above).
            if (gate_w >= 0) ::close(gate_w);
            char c;
            while (::read(gate_r, &c, 1) < 0 && errno == EINTR) {
            }
        }
        if (::dup2(devnull.fd, 0) < 0 || ::dup2(out_w.fd, 1) < 0 || ::dup2(out_w.fd, 2) < 0 ||
            (status_pipe && ::dup2(status_w.fd, kStatusFd) < 0))
            child_fail("cannot set up the child's fds", nullptr, errno);
        // Whatever else is open (the sweeper's sockets, the log file) stays ours.
        ::close_range(status_pipe ? kStatusFd + 1 : kStatusFd, ~0U, 0);
        ::execve(argv[0], const_cast<char* const*>(argv.data()), const_cast<char* const*>(envp.data()));
        child_fail("cannot execute", argv[0], errno);
    }
    Launched l;
    l.pid = pid;
    l.status_fd = status_pipe ? status_r.release() : -1;
    l.output_fd = out_r.release();
    return l;
}

std::string find_worker(const std::string& configured) {
    if (!configured.empty()) {
        auto runnable = ::access(configured.c_str(), X_OK) == 0 && !fs::is_directory(configured);
        if (!runnable) throw Error("[supervisor] worker_path " + configured + ": not an executable file", kExitUsage);
        return configured;
    }
    return find_program("sqlq-worker", "worker", "; set [supervisor] worker_path");
}

std::string find_program(const std::string& name, const std::string& build_dir, const std::string& hint) {
    auto runnable = [](const fs::path& p) { return ::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p); };
    const fs::path self = self_dir();
    std::vector<fs::path> tried = {self / name, (self / ".." / build_dir / name).lexically_normal()};
    for (const auto& p : tried)
        if (runnable(p)) return p.string();
    if (const char* path = std::getenv("PATH")) {
        std::string dirs = path;
        size_t start = 0;
        while (start <= dirs.size()) {
            size_t end = dirs.find(':', start);
            if (end == std::string::npos) end = dirs.size();
            fs::path p = fs::path(dirs.substr(start, end - start)) / name;
            if (end > start && runnable(p)) return p.string();
            start = end + 1;
        }
    }
    throw Error("cannot find " + name + " (looked in " + tried[0].string() + ", " + tried[1].string() + " and PATH)" +
                    hint,
                kExitUsage);
}

}  // namespace sqlq::supervisor
