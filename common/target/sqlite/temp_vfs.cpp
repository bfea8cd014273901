#include "target/sqlite/temp_vfs.h"

#include <cstdio>
#include <new>

#include "sqlite/db.h"

namespace sqlq::sqlite {

// A temporary file: our header, then the default VFS's own file object (vfs_.szOsFile makes
// room for both). SQLite calls `methods`, which pass every call on to `real`, counting sizes.
struct TempBudgetVfs::File {
    sqlite3_file base;        // must be first: SQLite sees a sqlite3_file*
    TempBudgetVfs* budget;
    int64_t size;             // the highest byte written (or truncated to): what it counts for
    sqlite3_file* real() noexcept { return reinterpret_cast<sqlite3_file*>(this + 1); }

    static File* of(sqlite3_file* f) noexcept { return reinterpret_cast<File*>(f); }
    static sqlite3_file* real(sqlite3_file* f) noexcept { return of(f)->real(); }

    static int close(sqlite3_file* f) {
        File* self = of(f);
        self->budget->shrink(self->size);
        self->size = 0;
        return self->real()->pMethods->xClose(self->real());
    }
    static int read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
        return real(f)->pMethods->xRead(real(f), buf, n, off);
    }
    static int write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
        File* self = of(f);
        const int64_t end = off + n;
        const int64_t growth = end > self->size ? end - self->size : 0;
        // Refused before a byte lands on disk: the cap is never passed, not even by one write.
        if (growth > 0 && !self->budget->grow(growth)) return SQLITE_FULL;
        int rc = self->real()->pMethods->xWrite(self->real(), buf, n, off);
        if (rc != SQLITE_OK) {
            self->budget->shrink(growth);
            return rc;
        }
        self->size += growth;
        return rc;
    }
    static int truncate(sqlite3_file* f, sqlite3_int64 size) {
        File* self = of(f);
        int rc = self->real()->pMethods->xTruncate(self->real(), size);
        if (rc == SQLITE_OK && size < self->size) {
            self->budget->shrink(self->size - size);
            self->size = size;
        }
        return rc;
    }
    static int sync(sqlite3_file* f, int flags) { return real(f)->pMethods->xSync(real(f), flags); }
    static int file_size(sqlite3_file* f, sqlite3_int64* size) {
        return real(f)->pMethods->xFileSize(real(f), size);
    }
    static int lock(sqlite3_file* f, int level) { return real(f)->pMethods->xLock(real(f), level); }
    static int unlock(sqlite3_file* f, int level) { return real(f)->pMethods->xUnlock(real(f), level); }
    static int check_lock(sqlite3_file* f, int* out) {
        return real(f)->pMethods->xCheckReservedLock(real(f), out);
    }
    static int control(sqlite3_file* f, int op, void* arg) {
        return real(f)->pMethods->xFileControl(real(f), op, arg);
    }
    static int sector_size(sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); }
    static int device(sqlite3_file* f) { return real(f)->pMethods->xDeviceCharacteristics(real(f)); }

    // Version 1 only: temporary files are never shared (no shm) nor memory-mapped (SQLite maps
    // only database files, and only when mmap_size is set).
    static constexpr sqlite3_io_methods methods = {
        1, close, read, write, truncate, sync, file_size, lock, unlock, check_lock, control, sector_size, device,
        nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
    };
};

TempBudgetVfs::TempBudgetVfs(int64_t limit_bytes) : base_(sqlite3_vfs_find(nullptr)), limit_(limit_bytes) {
    if (!base_) throw SqliteError("SQLite has no default VFS", SQLITE_ERROR);
    char name[64];
    std::snprintf(name, sizeof name, "sqlq-temp-budget-%p", static_cast<void*>(this));
    name_ = name;
    vfs_ = *base_;
    // Version 1 and 2 calls pass the VFS on unchanged; the unix VFS reads nothing of it but
    // pAppData in xOpen, which we never hand it (open() passes base_).
    vfs_.iVersion = base_->iVersion;
    vfs_.szOsFile = int(sizeof(File)) + base_->szOsFile;
    vfs_.pNext = nullptr;
    vfs_.zName = name_.c_str();
    vfs_.pAppData = this;
    vfs_.xOpen = open;
    if (int rc = sqlite3_vfs_register(&vfs_, /*makeDflt=*/0); rc != SQLITE_OK)
        throw SqliteError(std::string("cannot register the temporary-space VFS: ") + sqlite3_errstr(rc), rc);
}

TempBudgetVfs::~TempBudgetVfs() { sqlite3_vfs_unregister(&vfs_); }

bool TempBudgetVfs::grow(int64_t bytes) noexcept {
    if (used_ + bytes > limit_) {
        exceeded_ = true;
        return false;
    }
    used_ += bytes;
    return true;
}

int TempBudgetVfs::open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
    auto* self = static_cast<TempBudgetVfs*>(vfs->pAppData);
    // What SQLite writes while a read-only query runs: sorter runs and materialised subqueries
    // (TEMP_JOURNAL, TRANSIENT_DB), the temp database (TEMP_DB), statement journals (SUBJOURNAL).
    constexpr int kTemp = SQLITE_OPEN_TEMP_DB | SQLITE_OPEN_TRANSIENT_DB | SQLITE_OPEN_TEMP_JOURNAL |
                          SQLITE_OPEN_SUBJOURNAL;
    if (!(flags & kTemp)) return self->base_->xOpen(self->base_, name, file, flags, out_flags);

    auto* f = new (file) File{};
    f->budget = self;
    f->size = 0;
    int rc = self->base_->xOpen(self->base_, name, f->real(), flags, out_flags);
    // SQLite calls xClose only when pMethods is set: a failed open leaves it null, so nothing
    // is closed twice; the real file object cleans up after its own failed open.
    f->base.pMethods = f->real()->pMethods ? &File::methods : nullptr;
    return rc;
}

}  // namespace sqlq::sqlite
