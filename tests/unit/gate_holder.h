#pragma once
// A child process that holds a writer gate until told to let go: for the tests of the gate
// itself and of the store's writes waiting at it.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "sqlite/write_gate.h"

namespace sqlq::test {

// A child process that opens the gate, does `step` with it and says so on a pipe, then waits in
// `step` until told to go on (a byte on another pipe, or the pipe's end); the constructor returns
// once it has said so. `step` is given wait_told(), which blocks until then.
struct GateChild {
    pid_t pid = -1;
    int told = -1;  // parent writes here to let it go on
    GateChild(const std::string& path, const std::function<void(sqlite::WriteGate&, const std::function<void()>& say,
                                                                 const std::function<void()>& wait_told)>& step) {
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
                step(
                    g,
                    [&] {
                        char c = 'L';
                        if (::write(up[1], &c, 1) != 1) _exit(3);
                    },
                    [&] {
                        char c;
                        (void)!::read(down[0], &c, 1);
                    });
            } catch (...) {
                _exit(4);
            }
            _exit(0);
        }
        ::close(up[1]);
        ::close(down[0]);
        told = down[1];
        char c = 0;
        REQUIRE(::read(up[0], &c, 1) == 1);  // it has done its step
        ::close(up[0]);
    }
    GateChild(const GateChild&) = delete;
    GateChild& operator=(const GateChild&) = delete;
    void go_on() {
        char c = 'R';
        REQUIRE(::write(told, &c, 1) == 1);
    }
    int reap() {
        int st = 0;
        waitpid(pid, &st, 0);
        pid = -1;
        return st;
    }
    ~GateChild() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
        ::close(told);
    }
};

// A child process that holds the gate until released.
struct Holder : GateChild {
    explicit Holder(const std::string& path)
        : GateChild(path, [](sqlite::WriteGate& g, const auto& say, const auto& wait_told) {
              auto held = g.lock(1000);
              say();
              wait_told();
          }) {}
    void release() { go_on(); }
};

}  // namespace sqlq::test
