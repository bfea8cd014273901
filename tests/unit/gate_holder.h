#pragma once
// A child process that holds a writer gate until told to let go: for the tests of the gate
// itself and of the store's writes waiting at it.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "sqlite/write_gate.h"

namespace sqlq::test {

// A child process that opens the gate, takes it, says so on a pipe and then waits for a byte
// (or for its end) on another, releasing the gate (by returning) when told.
struct Holder {
    pid_t pid = -1;
    int told = -1;  // parent writes here to release
    explicit Holder(const std::string& path) {
        int up[2], down[2];
        REQUIRE(pipe(up) == 0);
        REQUIRE(pipe(down) == 0);
        pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {  // never back into Catch2 from here: _exit, whatever happens
            ::close(up[0]);
            ::close(down[1]);
            try {
                sqlite::WriteGate g(path, 0600);
                auto held = g.lock(1000);
                char c = 'L';
                if (::write(up[1], &c, 1) != 1) _exit(3);
                (void)!::read(down[0], &c, 1);
            } catch (...) {
                _exit(4);
            }
            _exit(0);
        }
        ::close(up[1]);
        ::close(down[0]);
        told = down[1];
        char c = 0;
        REQUIRE(::read(up[0], &c, 1) == 1);  // it holds the gate now
        ::close(up[0]);
    }
    void release() {
        char c = 'R';
        REQUIRE(::write(told, &c, 1) == 1);
    }
    int reap() {
        int st = 0;
        waitpid(pid, &st, 0);
        pid = -1;
        return st;
    }
    ~Holder() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
        ::close(told);
    }
};

}  // namespace sqlq::test
