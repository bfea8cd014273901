// The writer gate: one holder at a time across processes, taken over when its holder dies,
// set up anew when left behind by an earlier boot.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <chrono>
#include <thread>

#include "sqlite/db.h"
#include "sqlite/write_gate.h"
#include "gate_holder.h"

using sqlq::sqlite::SqliteError;
using sqlq::sqlite::WriteGate;
using sqlq::test::Holder;

namespace {
struct TempDir {
    std::string dir;
    TempDir() {
        char tmpl[] = "/tmp/sqlq-gate-XXXXXX";
        dir = mkdtemp(tmpl);
    }
    ~TempDir() { std::filesystem::remove_all(dir); }
    std::string gate() const { return dir + "/tasks.db-gate"; }
};

bool is_busy(WriteGate& g, int timeout_ms) {
    try {
        g.lock(timeout_ms);
        return false;
    } catch (const SqliteError& e) {
        CHECK(e.busy());
        CHECK(std::string(e.what()).find("database is locked") != std::string::npos);
        return true;
    }
}
}  // namespace

TEST_CASE("the writer gate lets one process through at a time", "[gate]") {
    TempDir t;
    WriteGate mine(t.gate(), 0600);
    Holder other(t.gate());
    CHECK(is_busy(mine, 50));  // held elsewhere: a clear "database is locked", a transient error
    other.release();
    { auto held = mine.lock(10000); }  // handed over once released
    CHECK(other.reap() == 0);
    { auto again = mine.lock(0); }  // and free again afterwards
}

TEST_CASE("opening the writer gate again never frees it under its holder", "[gate]") {
    TempDir t;
    Holder other(t.gate());
    WriteGate late(t.gate(), 0600);  // opened after the other process took it
    CHECK(is_busy(late, 50));
    other.release();
    CHECK(other.reap() == 0);
    { auto held = late.lock(10000); }
}

TEST_CASE("the writer gate is taken over when its holder dies holding it", "[gate]") {
    TempDir t;
    WriteGate mine(t.gate(), 0600);
    Holder other(t.gate());
    kill(other.pid, SIGKILL);
    CHECK(WIFSIGNALED(other.reap()));
    { auto held = mine.lock(5000); }  // not a timeout: the kernel marked the owner dead
    CHECK(mine.commits() == 2);       // the dead holder's commit, if it made one, counts too
    { auto again = mine.lock(0); }    // consistent again: usable by everyone after
    Holder next(t.gate());            // including another process
    CHECK(is_busy(mine, 20));
}

TEST_CASE("a writer gate file left taken by an earlier boot is set up anew", "[gate]") {
    TempDir t;
    Holder stale(t.gate());  // stands for a holder of a boot that crashed with the gate taken
    {
        int fd = ::open(t.gate().c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        const char other_boot[] = "00000000-0000-0000-0000-000000000000";
        REQUIRE(::pwrite(fd, other_boot, sizeof other_boot, 12) == ssize_t(sizeof other_boot));  // the boot id field
        ::close(fd);
    }
    WriteGate fresh(t.gate(), 0600);
    { auto held = fresh.lock(0); }  // free at once, not after a timeout
}

TEST_CASE("a writer gate that cannot be opened says where and why", "[gate]") {
    REQUIRE_THROWS_WITH(WriteGate("/nonexistent-dir/tasks.db-gate", 0600),
                        Catch::Contains("/nonexistent-dir/tasks.db-gate") && Catch::Contains("No such file"));
    WriteGate closed;  // a store without a gate: every lock passes at once
    CHECK_FALSE(closed.open());
    { auto held = closed.lock(0); }
}

TEST_CASE("the writer gate file gets the mode asked for, whatever the umask", "[gate]") {
    TempDir t;
    mode_t old = umask(077);
    { WriteGate g(t.gate(), 0664); }
    umask(old);
    CHECK((std::filesystem::status(t.gate()).permissions() & std::filesystem::perms::all) ==
          (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
           std::filesystem::perms::group_read | std::filesystem::perms::group_write |
           std::filesystem::perms::others_read));
}

// --- the group sync (durability "full") ---

TEST_CASE("a commit that another process's completed sync covers is not synced again, one it does not cover is",
          "[gate][sync]") {
    TempDir t;
    WriteGate a(t.gate(), 0600), b(t.gate(), 0600);  // two openers of one file: as two processes
    int by_a = 0, by_b = 0;
    { auto held = a.lock(1000); }  // a commits, then b
    { auto held = b.lock(1000); }
    CHECK(a.commits() == 2);
    b.sync_through([&] { ++by_b; });  // b's sync begins after both commits: it covers a's too
    CHECK(b.synced() == 2);
    a.sync_through([&] { ++by_a; });
    CHECK(by_a == 0);
    { auto held = a.lock(1000); }  // a commit after that sync: a syncs it itself
    a.sync_through([&] { ++by_a; });
    CHECK(by_a == 1);
    CHECK(a.synced() == 3);
    // A sync that fails covers nothing: the next writer syncs for itself.
    { auto held = b.lock(1000); }
    CHECK_THROWS_WITH(b.sync_through([] { throw std::runtime_error("disk gone"); }), "disk gone");
    CHECK(a.synced() == 3);
    a.sync_through([&] { ++by_a; });
    CHECK(by_a == 2);
    CHECK(a.synced() == 4);
    WriteGate closed;  // no gate: every call syncs
    int by_closed = 0;
    closed.sync_through([&] { ++by_closed; });
    closed.sync_through([&] { ++by_closed; });
    CHECK(by_closed == 2);
}

namespace {
// A child process that commits through the gate, then begins a sync that lasts until it is told
// to end it (or killed); the constructor returns once it syncs.
struct Syncer : sqlq::test::GateChild {
    explicit Syncer(const std::string& path)
        : GateChild(path, [](WriteGate& g, const auto& say, const auto& wait_told) {
              { auto held = g.lock(1000); }
              g.sync_through([&] {
                  say();
                  wait_told();
              });
          }) {}
    void finish() { go_on(); }
};
}  // namespace

TEST_CASE("a sync under way in another process that covers a commit is waited for instead of repeated",
          "[gate][sync]") {
    TempDir t;
    WriteGate mine(t.gate(), 0600);
    { auto held = mine.lock(1000); }  // committed before the other process's sync begins
    Syncer other(t.gate());
    int by_me = 0;
    std::thread waiter([&] { mine.sync_through([&] { ++by_me; }); });
    other.finish();
    waiter.join();
    CHECK(by_me == 0);
    CHECK(other.reap() == 0);
    CHECK(mine.synced() == 2);
}

TEST_CASE("a syncer killed mid-sync leaves no writer waiting, and its mark is cleared", "[gate][sync]") {
    TempDir t;
    WriteGate mine(t.gate(), 0600);
    { auto held = mine.lock(1000); }  // before the other's sync began: it would cover ours
    Syncer other(t.gate());
    const pid_t dead = other.pid;
    CHECK(mine.syncer() == dead);
    kill(other.pid, SIGKILL);
    CHECK(WIFSIGNALED(other.reap()));
    int by_me = 0;
    mine.sync_through([&] { ++by_me; });  // waits, finds it dead, clears its mark, syncs
    CHECK(by_me == 1);
    CHECK(mine.synced() == 2);
    CHECK(mine.syncer() == 0);
}

TEST_CASE("a syncer that cannot run on (stopped, or dead and not yet reaped) holds no writer back for long",
          "[gate][sync]") {
    TempDir t;
    WriteGate mine(t.gate(), 0600);
    { auto held = mine.lock(1000); }  // its sync covers ours: we wait for it, but not forever
    Syncer other(t.gate());
    REQUIRE(kill(other.pid, SIGSTOP) == 0);
    int by_me = 0;
    const auto t0 = std::chrono::steady_clock::now();
    mine.sync_through([&] { ++by_me; });  // beside the stopped one, after a bounded wait
    CHECK(by_me == 1);
    CHECK(mine.synced() == 2);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));  // a sanity bound only
    CHECK(mine.syncer() == other.pid);  // alive: its mark stays
    REQUIRE(kill(other.pid, SIGCONT) == 0);
    other.finish();
    CHECK(other.reap() == 0);
    CHECK(mine.syncer() == 0);
}

TEST_CASE("a sync under way that began before a commit does not cover it: the writer syncs after it", "[gate][sync]") {
    TempDir t;
    WriteGate mine(t.gate(), 0600);
    Syncer other(t.gate());
    { auto held = mine.lock(1000); }  // after its sync began
    int by_me = 0;
    std::thread waiter([&] { mine.sync_through([&] { ++by_me; }); });
    other.finish();
    waiter.join();
    CHECK(by_me == 1);
    CHECK(mine.synced() == 2);
    CHECK(other.reap() == 0);
}
