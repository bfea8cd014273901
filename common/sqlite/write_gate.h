#pragma once
// A queue in front of a SQLite database's write lock, shared by every process on the host.
//
// SQLite lets one connection write at a time. A connection that finds the lock taken sleeps in
// its busy handler, 1, 2, 5, 10 … ms, and tries again; a task-store write holds the lock for
// tens of microseconds, so with several workers the lock sits free most of the time while they
// sleep. A writer that passes this gate first waits in the kernel (a robust, process-shared
// mutex on a futex in a small file beside the database) and is woken the moment the previous
// writer is done. The gate is only a faster way to wait: SQLite's own lock still decides who
// writes, so a process that cannot open the gate (a read-only directory) writes without it.
//
// The mutex is robust: when its holder dies, the next locker takes it over (SQLite's own lock
// went with the dead process, and a transaction it had not committed is simply not there). It
// lives in a file, which can outlast a crash of the whole host with the mutex taken: the file
// records the boot it was set up in, and the first process of a later boot sets it up again. A
// gate of this boot is never set up again, so a live holder cannot lose it.
//
// The gate also groups the fsyncs of the write-ahead log (durability "full": each writer syncs
// the log after its commit, outside the gate): every release of the gate counts one commit, and
// a writer whose commit a sync already covers (one that began after the commit's release and has
// ended) returns at once; one whose commit a running sync covers waits for it; otherwise it syncs
// itself, covering every commit released before it began. An fsync of the log covers whatever
// any process wrote to it before the call: the pages are the file's, not the writer's.
#include <pthread.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

namespace sqlq::sqlite {

class WriteGate {
public:
    WriteGate() = default;  // closed: lock() lets everyone through
    // Opens (creating, with `mode`) the gate file at `path`. Throws Error naming the path and the
    // reason when the file cannot be opened, sized or mapped.
    WriteGate(const std::string& path, unsigned mode);
    ~WriteGate();
    WriteGate(WriteGate&& o) noexcept;
    WriteGate& operator=(WriteGate&& o) noexcept;
    WriteGate(const WriteGate&) = delete;
    WriteGate& operator=(const WriteGate&) = delete;

    bool open() const noexcept { return shared_ != nullptr; }

    struct Shared;  // the file's layout

    // Held while alive; unlocked on destruction, counting one commit.
    class Held {
    public:
        explicit Held(Shared* s = nullptr) noexcept : s_(s) {}
        ~Held();
        Held(Held&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
        Held& operator=(Held&&) = delete;
        Held(const Held&) = delete;

    private:
        Shared* s_;
    };
    // Waits up to timeout_ms for the gate. Throws SqliteError with SQLITE_BUSY (a transient
    // error, like SQLite's own "database is locked") when it does not open in time. A closed
    // gate returns at once.
    Held lock(int timeout_ms);

    // Makes every commit released through this gate so far durable: returns once a sync that
    // began after the last of them ended, running `sync` (an fsync of the log) itself unless
    // another process's sync covers them. Rethrows what `sync` throws. A closed gate runs `sync`.
    void sync_through(const std::function<void()>& sync);
    // For tests: commits released, and how many of them a completed sync covers.
    uint64_t commits() const noexcept;
    uint64_t synced() const noexcept;
    pid_t syncer() const noexcept;  // the process syncing now, 0 when none

private:
    void setup(unsigned mode);
    void close() noexcept;

    int fd_ = -1;
    Shared* shared_ = nullptr;
    std::string path_;
};

}  // namespace sqlq::sqlite
