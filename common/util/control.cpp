#include "util/control.h"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/error.h"

namespace sqlq {

std::string control_socket_path(const std::string& run_dir) { return run_dir + "/control.sock"; }

namespace {
struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};
}  // namespace

std::optional<control::Reply> control_request(const std::string& run_dir, const control::Request& request,
                                              int timeout_ms) {
    const std::string path = control_socket_path(run_dir);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw Error(path + ": path too long for a unix socket");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    Fd s{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (s.fd < 0) throw Error(std::string("socket: ") + std::strerror(errno));
    if (::connect(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        if (errno == ENOENT || errno == ECONNREFUSED) return std::nullopt;
        throw Error(path + ": " + std::strerror(errno));
    }
    const std::string line = control::format_request(request);
    for (size_t off = 0; off < line.size();) {
        ssize_t n = ::write(s.fd, line.data() + off, line.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw Error(path + ": write: " + std::strerror(errno));
        off += size_t(n);
    }
    std::string reply;
    int64_t deadline = mono_ms() + timeout_ms;
    char buf[4096];
    while (reply.find('\n') == std::string::npos) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) throw Error(path + ": the supervisor did not answer within " + std::to_string(timeout_ms) + " ms");
        pollfd p{s.fd, POLLIN, 0};
        int r = ::poll(&p, 1, int(left));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        ssize_t n = ::read(s.fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        reply.append(buf, size_t(n));
    }
    auto r = control::parse_reply(reply);
    if (!r) throw Error(path + ": the supervisor sent a reply that is not a JSON object with \"ok\"");
    return r;
}

}  // namespace sqlq
