#pragma once
// What every task-store engine decides the same way, whatever its SQL: the words of a task given
// up, the host of a recorded owner, whether a claim's owner is gone, and a submit over a user's
// queue limit. Included by the engines'
// own files only (task/sqlite_store.cpp, task/pg_store.cpp).
#include <optional>
#include <string>

#include "task/store.h"

namespace sqlq::engine {

// What a give-up's error says of the last attempt's loss, as the supervisor recorded it.
inline std::string last_loss_words(const std::string& why) { return " (last: " + why + ")"; }

// The error of a task failed because the worker running it died `attempts` times.
inline std::string gave_up_error(int64_t attempts, const std::optional<std::string>& last_loss) {
    // "Lost": dead, or silent past its lease (a worker stuck in one native step on another host,
    // whose lease ran out, is taken over without dying).
    std::string err = "gave up after " + std::to_string(attempts) +
                      " attempts: the worker running it was lost each time (it died, or stopped renewing its lease)";
    if (last_loss) err += last_loss_words(*last_loss);
    return err;
}

// The error of a task refused unrun: its SQL text is longer than [query] max_sql_bytes.
inline std::string too_long_error(int64_t sql_bytes, int64_t max_sql_bytes) {
    return "the SQL is " + std::to_string(sql_bytes) + " bytes, more than " + std::to_string(max_sql_bytes) +
           " ([query] max_sql_bytes): not run";
}

// owner_lost() after the next delivery's claim already gave the task up (the claim can come
// before the supervisor's record of the loss): the give-up's error, still without its last loss,
// gets it appended. The condition of that UPDATE, after the owner columns' (both engines).
inline constexpr const char* kGaveUpWithoutLastSql = "status='failed' AND error LIKE 'gave up after %' AND "
                                                     "error NOT LIKE '%(last: %'";

// The host of an owner recorded as "host:pid" (Owner::name()).
inline std::string owner_host(const std::string& owner) {
    auto colon = owner.rfind(':');
    return colon == std::string::npos ? owner : owner.substr(0, colon);
}

// Whether `owner`, recorded in a running task's row, is the process `me` (host, pid and start
// time). A worker claims, or fails a task it cannot go on with, only while it runs nothing: such
// a task is one whose claim it lost track of (the answer to its commit lost with the connection,
// on a server store), which nobody runs. Both take it over, where waiting for its "live" owner
// would wait for itself.
inline bool same_owner(const Owner& me, const Owner& owner) {
    return me.pid != 0 && owner.pid == me.pid && owner.start == me.start && owner.host == me.host;
}

// Whether the owner recorded in a running task's row is gone: its process, when this host can
// look at it (never its lease then); otherwise its lease, against the store's clock `now`.
inline bool owner_gone(const StoreDeps& deps, const Owner& owner, int64_t lease_until, int64_t now) {
    switch (deps.owner_alive(owner)) {
    case StoreDeps::Liveness::dead: return true;
    case StoreDeps::Liveness::alive: return false;
    case StoreDeps::Liveness::unknown: break;
    }
    return lease_until < now;
}

// A submit refused by [query] max_queued_per_user: nothing is stored.
inline Error queue_full(const std::string& user, int64_t queued, int64_t adding, int64_t limit) {
    return Error("submit: " + user + " has " + std::to_string(queued) + " tasks queued; " + std::to_string(adding) +
                     " more would pass [query] max_queued_per_user = " + std::to_string(limit) +
                     "; nothing was stored",
                 kExitQueueFull);
}

}  // namespace sqlq::engine
