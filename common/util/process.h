#pragma once
#include <cstdint>
#include <string>
#include <sys/types.h>

namespace sqlq {

// This host's name, as recorded in a task's owner.
const std::string& host_name();

// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or 0 when
// there is no such process. A pid plus its start time names one process: pids are reused.
uint64_t process_start_time(pid_t pid);

// True when the process (pid, start_time) still exists on this host. A zombie counts as gone.
bool process_alive(pid_t pid, uint64_t start_time);

// A process's memory in KiB, from /proc/PID/smaps_rollup (0 when unknown): resident (RSS), its
// proportional share of pages it shares with other processes (PSS: depends on what else runs),
// and the pages it wrote itself (private dirty: heap, stacks, the libraries' relocated data).
struct Memory {
    uint64_t rss_kib = 0;
    uint64_t pss_kib = 0;
    uint64_t private_dirty_kib = 0;
};
Memory process_memory(pid_t pid);

// Directory of the running executable (to find sibling binaries).
std::string self_dir();

}  // namespace sqlq
