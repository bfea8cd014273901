#pragma once
// The temporary-space cap of the SQLite target: a VFS that wraps the default one and counts the
// bytes of the temporary files its connections open (a sort or DISTINCT that spills, a
// materialised subquery, the temp database), and fails a write that would take the total past
// the cap with SQLITE_FULL. Every other file (the target database itself) goes straight to the
// default VFS, untouched.
//
// Why a VFS and not temp_store=MEMORY under the heap cap: the temporary space then competes
// with the query's memory, and the user reads "needs more memory" for what is a sort too big
// for its budget; a temp directory with a size check in the progress handler sees the bytes
// only after they are written, and a single sort step can write many MB between two checks.
#include <cstdint>
#include <string>

#include <sqlite3.h>

namespace sqlq::sqlite {

class TempBudgetVfs {
public:
    // Registers the VFS (not as the default) under a name of its own. `limit_bytes` caps the
    // sum of the sizes of the temporary files open at once. Throws Error if SQLite refuses.
    explicit TempBudgetVfs(int64_t limit_bytes);
    // Unregisters it: every connection that uses it must be closed first.
    ~TempBudgetVfs();
    // sqlite3_vfs holds a pointer to `this`: the object never moves.
    TempBudgetVfs(const TempBudgetVfs&) = delete;
    TempBudgetVfs& operator=(const TempBudgetVfs&) = delete;

    // For sqlite3_open_v2.
    const char* name() const noexcept { return name_.c_str(); }

    // A write was refused since the last reset(): the SQLITE_FULL that follows is the cap's.
    bool exceeded() const noexcept { return exceeded_; }
    void reset() noexcept { exceeded_ = false; }
    // Bytes of the temporary files open now.
    int64_t used() const noexcept { return used_; }
    int64_t limit() const noexcept { return limit_; }

private:
    struct File;
    static int open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags);
    // Called by a temporary file; false when the bytes do not fit (and exceeded() turns true).
    bool grow(int64_t bytes) noexcept;
    void shrink(int64_t bytes) noexcept { used_ -= bytes; }

    std::string name_;
    sqlite3_vfs* base_;  // the default VFS; SQLite owns it
    sqlite3_vfs vfs_;    // a copy of base_'s, with open() and its own name and size
    int64_t limit_;
    int64_t used_ = 0;
    bool exceeded_ = false;
};

}  // namespace sqlq::sqlite
