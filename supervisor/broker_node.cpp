#include "supervisor/broker_node.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/clock.h"

namespace sqlq::supervisor {

namespace {

std::string trimmed(std::string s) {
    const auto first = s.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) return {};
    return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

// The last non-empty line of a tool's output, cut short: the reason it gives for failing.
std::string last_line(const std::string& out) {
    std::string s = trimmed(out);
    if (auto nl = s.rfind('\n'); nl != std::string::npos) s = trimmed(s.substr(nl + 1));
    return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

// Debian installs it in /usr/sbin, which a service user's PATH may lack.
std::string rabbitmqctl() {
    return ::access("/usr/sbin/rabbitmqctl", X_OK) == 0 ? "/usr/sbin/rabbitmqctl" : "rabbitmqctl";
}

}  // namespace

ConsumerTimeout parse_consumer_timeout(const std::string& printed) {
    std::string s;
    for (char ch : printed)
        if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') s += ch;
    ConsumerTimeout t;
    if (s == "undefined" || s == "{ok,false}" || s == "{ok,undefined}" || s == "{ok,infinity}") {
        t.kind = ConsumerTimeout::Kind::disabled;
        return t;
    }
    const std::string head = "{ok,";
    if (s.size() > head.size() + 1 && s.compare(0, head.size(), head) == 0 && s.back() == '}') {
        const std::string digits = s.substr(head.size(), s.size() - head.size() - 1);
        if (digits.size() <= 15 && digits.find_first_not_of("0123456789") == std::string::npos) {
            t.kind = ConsumerTimeout::Kind::set;
            t.ms = std::stoll(digits);
            return t;
        }
    }
    t.why = "unexpected answer \"" + last_line(printed) + "\"";
    return t;
}

ConsumerTimeout read_consumer_timeout(const std::string& node, int64_t timeout_ms) {
    ConsumerTimeout failed;
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) {
        failed.why = std::string("pipe: ") + std::strerror(errno);
        return failed;
    }
    const std::string tool = rabbitmqctl();
    const char* argv[] = {tool.c_str(), "-q", "-n", node.c_str(), "eval",
                          "application:get_env(rabbit, consumer_timeout).", nullptr};
    const pid_t pid = ::fork();
    if (pid < 0) {
        failed.why = std::string("fork: ") + std::strerror(errno);
        ::close(out[0]);
        ::close(out[1]);
        return failed;
    }
    if (pid == 0) {
        ::setpgid(0, 0);  // the tool starts an Erlang VM (through su when run as root): kill them all
        int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (in >= 0) ::dup2(in, 0);
        ::dup2(out[1], 1);
        ::dup2(out[1], 2);
        ::execvp(argv[0], const_cast<char* const*>(argv));
        _exit(127);
    }
    ::setpgid(pid, pid);  // whichever of parent and child runs first
    ::close(out[1]);
    ::fcntl(out[0], F_SETFL, O_NONBLOCK);
    // Read until the tool exits (not until EOF: a daemon it starts, epmd, may hold the pipe).
    std::string text;
    bool eof = false;
    auto drain = [&] {
        char buf[512];
        ssize_t n;
        while ((n = ::read(out[0], buf, sizeof buf)) > 0) text.append(buf, size_t(n));
        if (n == 0) eof = true;
    };
    bool timed_out = false;
    int status = 0;
    const int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        pollfd p{out[0], POLLIN, 0};
        ::poll(&p, eof ? 0 : 1, 50);  // at EOF, only wait for the exit
        drain();
        const pid_t done = ::waitpid(pid, &status, WNOHANG);
        if (done == pid) break;
        if (done < 0 && errno != EINTR) break;
        if (mono_ms() >= deadline) {
            timed_out = true;
            ::kill(-pid, SIGKILL);
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            break;
        }
    }
    drain();
    ::close(out[0]);
    if (timed_out) {
        failed.why = "rabbitmqctl did not answer within " + std::to_string(timeout_ms) + " ms";
        return failed;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        const std::string said = last_line(text);
        failed.why = WIFEXITED(status) && WEXITSTATUS(status) == 127
                         ? "rabbitmqctl not found"
                         : "rabbitmqctl failed" + (said.empty() ? std::string() : ": " + said);
        return failed;
    }
    return parse_consumer_timeout(text);
}

}  // namespace sqlq::supervisor
