#include "sqlite/write_gate.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

#include "sqlite/db.h"

namespace sqlq::sqlite {

namespace {
constexpr uint64_t kMagic = 0x657461672d717173;  // "sqq-gate"
constexpr uint32_t kVersion = 1;

std::string boot_id() {
    std::ifstream f("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(f, id);
    return id;
}

// flock() for the set-up only: held for microseconds, released by the kernel if its holder dies.
struct SetupLock {
    int fd;
    explicit SetupLock(int f) : fd(f) {
        while (::flock(fd, LOCK_EX) != 0 && errno == EINTR) {
        }
    }
    ~SetupLock() { ::flock(fd, LOCK_UN); }
};
}  // namespace

struct WriteGate::Shared {
    uint64_t magic;  // written last: the mutex is set up when it is there
    uint32_t version;
    char boot[48];   // /proc/sys/kernel/random/boot_id of the boot that set the mutex up
    pthread_mutex_t mutex;
    // The group sync (sync_through), appended to version 1's layout: a process of an earlier
    // sqlq maps less of the file and never touches these (it syncs every commit itself), and a
    // file of that size is extended with zeros.
    uint64_t commits;  // releases of the gate so far
    uint64_t synced;   // commits that a completed sync covers
    uint32_t syncing;  // the pid of the process syncing now, 0 when none (a futex word)
};

WriteGate::WriteGate(const std::string& path, unsigned mode) : path_(path) {
    try {
        setup(mode);
    } catch (...) {
        close();
        throw;
    }
}

void WriteGate::setup(unsigned mode) {
    auto fail = [&](const std::string& doing) { throw Error(path_ + ": " + doing + ": " + std::strerror(errno)); };
    // Read before anything else: a gate set up without knowing the boot could be set up again
    // under a live holder. No boot id, no gate.
    const std::string boot = boot_id();
    if (boot.empty()) fail("cannot read /proc/sys/kernel/random/boot_id for the writer gate");
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd_ >= 0) {
        ::fchmod(fd_, mode);  // what the umask took away: every writer of the store must open it
    } else if (errno == EEXIST) {
        fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    }
    if (fd_ < 0) fail("cannot open the writer gate");

    SetupLock setup(fd_);
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail("cannot stat the writer gate");
    if (st.st_size < off_t(sizeof(Shared)) && ::ftruncate(fd_, sizeof(Shared)) != 0)
        fail("cannot size the writer gate");
    void* p = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) fail("cannot map the writer gate");
    shared_ = static_cast<Shared*>(p);

    if (shared_->magic == kMagic) {
        const bool same_boot = std::strncmp(shared_->boot, boot.c_str(), sizeof shared_->boot) == 0;
        if (same_boot && shared_->version == kVersion) return;  // in use, or usable: never touch it
        if (same_boot)
            throw Error(path_ + ": the writer gate was set up by another version of sqlq (gate version " +
                        std::to_string(shared_->version) + ", this one " + std::to_string(kVersion) + ")");
        // From an earlier boot: its processes are all gone, whatever state they left it in.
    }
    std::memset(static_cast<void*>(shared_), 0, sizeof(Shared));
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&shared_->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0) {
        errno = rc;
        fail("cannot set up the writer gate");
    }
    std::strncpy(shared_->boot, boot.c_str(), sizeof shared_->boot - 1);
    shared_->version = kVersion;
    __atomic_store_n(&shared_->magic, kMagic, __ATOMIC_RELEASE);
}

WriteGate::~WriteGate() { close(); }

WriteGate::WriteGate(WriteGate&& o) noexcept
    : fd_(o.fd_), shared_(o.shared_), path_(std::move(o.path_)) {
    o.fd_ = -1;
    o.shared_ = nullptr;
}

WriteGate& WriteGate::operator=(WriteGate&& o) noexcept {
    if (this != &o) {
        close();
        fd_ = o.fd_;
        shared_ = o.shared_;
        path_ = std::move(o.path_);
        o.fd_ = -1;
        o.shared_ = nullptr;
    }
    return *this;
}

void WriteGate::close() noexcept {
    if (shared_) ::munmap(shared_, sizeof(Shared));
    if (fd_ >= 0) ::close(fd_);
    shared_ = nullptr;
    fd_ = -1;
}

WriteGate::Held WriteGate::lock(int timeout_ms) {
    if (!shared_) return Held{};
    timespec until{};
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += long(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec += 1;
        until.tv_nsec -= 1000000000;
    }
    int rc = pthread_mutex_clocklock(&shared_->mutex, CLOCK_MONOTONIC, &until);
    if (rc == EOWNERDEAD) {
        // Its holder died while writing (before or after its COMMIT: SQLite's lock went with
        // the process either way). Take it over.
        pthread_mutex_consistent(&shared_->mutex);
        __atomic_add_fetch(&shared_->commits, 1, __ATOMIC_RELEASE);  // its commit, if it made one
        rc = 0;
    }
    if (rc == 0) return Held{shared_};
    if (rc == ETIMEDOUT)
        throw SqliteError(path_ + ": database is locked: no turn to write in " + std::to_string(timeout_ms) +
                              " ms (another process holds the writer gate)",
                          SQLITE_BUSY);
    // ENOTRECOVERABLE cannot happen (every holder either unlocks or dies); should it, the
    // writes go on without the gate, under SQLite's own lock.
    close();
    return Held{};
}

WriteGate::Held::~Held() {
    if (!s_) return;
    // Counted before the unlock: a sync that reads the count after it began after this commit.
    __atomic_add_fetch(&s_->commits, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s_->mutex);
}

uint64_t WriteGate::commits() const noexcept { return shared_ ? __atomic_load_n(&shared_->commits, __ATOMIC_ACQUIRE) : 0; }

uint64_t WriteGate::synced() const noexcept { return shared_ ? __atomic_load_n(&shared_->synced, __ATOMIC_ACQUIRE) : 0; }

namespace {
// A waiter looks at the syncer this often (one that died leaves its pid behind), and after this
// many looks syncs for itself: a syncer that cannot run on (a zombie not yet reaped, a process
// stopped) must not hold every writer back.
constexpr long kSyncWaitNs = 20'000'000;
constexpr int kSyncWaits = 10;

// False when it timed out.
bool futex_wait(uint32_t* word, uint32_t value) {
    timespec t{0, kSyncWaitNs};
    // A shared mapping: not FUTEX_PRIVATE.
    return ::syscall(SYS_futex, word, FUTEX_WAIT, value, &t, nullptr, 0) == 0 || errno != ETIMEDOUT;
}

void futex_wake_all(uint32_t* word) { ::syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }
}  // namespace

void WriteGate::sync_through(const std::function<void()>& sync) {
    if (!shared_) return sync();
    const uint64_t target = commits();  // our own commit is counted: released before this call
    // Runs the sync; every commit released before it began is then on disk (each one's frames
    // were written before its release: they are in the log's pages).
    auto sync_upto = [&] {
        const uint64_t upto = commits();
        sync();
        uint64_t seen = synced();
        while (seen < upto &&
               !__atomic_compare_exchange_n(&shared_->synced, &seen, upto, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        }
    };
    const auto me = static_cast<uint32_t>(::getpid());
    for (int waits = 0;; ++waits) {
        if (synced() >= target) return;  // a sync begun after our commit has ended
        uint32_t holder = 0;
        if (__atomic_compare_exchange_n(&shared_->syncing, &holder, me, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            auto done = [&] {
                __atomic_store_n(&shared_->syncing, 0u, __ATOMIC_RELEASE);
                futex_wake_all(&shared_->syncing);
            };
            try {
                sync_upto();
            } catch (...) {
                done();  // a failed sync covers nothing: a waiter syncs for itself
                throw;
            }
            done();
            return;
        }
        if (waits == kSyncWaits) return sync_upto();  // beside a syncer that does not end
        // Another process syncs: wait for it to end, then look again. Its sync may cover our
        // commit; if it began before it, the next one does, and covers every commit released
        // meanwhile too: that is the grouping (measured: waiting beat syncing beside it at once).
        // A syncer that died (SIGKILL mid-sync) left its mark: cleared by whoever finds it.
        if (!futex_wait(&shared_->syncing, holder) && ::kill(static_cast<pid_t>(holder), 0) != 0 && errno == ESRCH)
            __atomic_compare_exchange_n(&shared_->syncing, &holder, 0u, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
}

pid_t WriteGate::syncer() const noexcept {
    return shared_ ? static_cast<pid_t>(__atomic_load_n(&shared_->syncing, __ATOMIC_ACQUIRE)) : 0;
}

}  // namespace sqlq::sqlite
