// The worker's buffered log, in a child process whose stderr is a pipe the test reads.
#include <catch2/catch.hpp>

#include <string>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/log.h"

namespace {

// Everything in the pipe now, without waiting for more.
std::string drain(int fd) {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
    return out;
}

char recv_byte(int fd) {
    char c = 0;
    return ::read(fd, &c, 1) == 1 ? c : 0;
}

}  // namespace

TEST_CASE("buffered log: info lines wait for a flush, a warning takes them out at once, an exit "
          "without flush loses only the info lines after it",
          "[log]") {
    int err[2], to_parent[2], to_child[2];
    REQUIRE(::pipe(err) == 0);
    REQUIRE(::pipe(to_parent) == 0);
    REQUIRE(::pipe(to_child) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(err[1], STDERR_FILENO);
        sqlq::init_buffered_log("t");
        spdlog::info("one");
        ::write(to_parent[1], "a", 1);
        recv_byte(to_child[0]);
        spdlog::warn("two");
        spdlog::info("three");
        ::write(to_parent[1], "b", 1);
        recv_byte(to_child[0]);
        sqlq::flush_log();
        spdlog::info("four");
        _exit(0);  // no stdio flush: a crash
    }
    ::close(err[1]);
    ::fcntl(err[0], F_SETFL, O_NONBLOCK);

    REQUIRE(recv_byte(to_parent[0]) == 'a');
    CHECK(drain(err[0]).empty());  // "one" waits in the buffer

    ::write(to_child[1], "g", 1);
    REQUIRE(recv_byte(to_parent[0]) == 'b');
    std::string out = drain(err[0]);
    CHECK(out.find("t info: one\n") != std::string::npos);  // taken out by the warning
    CHECK(out.find("t warning: two\n") != std::string::npos);
    CHECK(out.find("three") == std::string::npos);

    ::write(to_child[1], "g", 1);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    out = drain(err[0]);
    CHECK(out.find("t info: three\n") != std::string::npos);
    CHECK(out.find("four") == std::string::npos);
    for (int fd : {err[0], to_parent[0], to_parent[1], to_child[0], to_child[1]}) ::close(fd);
}
