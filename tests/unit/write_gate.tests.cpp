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
