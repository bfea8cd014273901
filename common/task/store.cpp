#include "task/store.h"

#include <ctime>
#include <new>
#include <unistd.h>

#include "task/pg_store.h"
#include "task/sqlite_store.h"
#include "util/clock.h"
#include "util/process.h"

namespace sqlq {

bool PollingWatch::wait(int64_t timeout_ms) {
    if (timeout_ms <= 0) return false;
    timespec ts{time_t(timeout_ms / 1000), long(timeout_ms % 1000) * 1000000};
    nanosleep(&ts, nullptr);  // a signal ends it early: the caller looks at its flag
    return false;
}

const char* to_string(Status s) {
    switch (s) {
    case Status::queued: return "queued";
    case Status::running: return "running";
    case Status::succeeded: return "succeeded";
    case Status::failed: return "failed";
    case Status::cancelled: return "cancelled";
    }
    return "?";
}

std::optional<Status> parse_status(const std::string& s) {
    for (Status st : {Status::queued, Status::running, Status::succeeded, Status::failed, Status::cancelled})
        if (s == to_string(st)) return st;
    return std::nullopt;
}

std::string hard_deadline_error(int64_t timeout_ms, int64_t grace_ms) {
    return "ran past query.timeout_ms (" + std::to_string(timeout_ms) + " ms) + deadline_grace_ms (" +
           std::to_string(grace_ms) +
           " ms) without stopping (stuck in one long step the timeout cannot interrupt): its worker was killed";
}

Owner Owner::self() {
    Owner o;
    o.host = host_name();
    o.pid = getpid();
    o.start = int64_t(process_start_time(getpid()));
    return o;
}

int64_t StoreDeps::wall_clock() { return now_ms(); }

StoreDeps::Liveness StoreDeps::local_process(const Owner& o) {
    if (o.host != host_name()) return Liveness::unknown;
    return process_alive(pid_t(o.pid), uint64_t(o.start)) ? Liveness::alive : Liveness::dead;
}

TaskStore::Claim TaskStore::claim_next(int64_t unit, const Owner& me, const ClaimRules& rules) {
    for (int round = 0;; ++round) {
        auto scope = claim_scope(rules);
        const Next n = next_for(unit, rules.max_running_per_user);
        Claim c;
        switch (n.kind) {
        case Next::Kind::unknown: c.kind = ClaimKind::unknown; break;
        case Next::Kind::none:
            c.kind = ClaimKind::none;
            c.status = n.status;
            break;
        case Next::Kind::limited: c.kind = ClaimKind::limited; break;
        case Next::Kind::task:
            try {
                c = n.fairest ? claim_fairest(n, me, rules, unit) : claim_as(n.id, me, rules, unit);
            } catch (const StoreError& e) {
                if (!e.resource()) throw;
                c = Claim{ClaimKind::no_memory};
                c.why = e.what();
            } catch (const std::bad_alloc&) {
                c = Claim{ClaimKind::no_memory};
                c.why = "out of memory";
            }
            // Another delivery took it first (or it ended meanwhile): choose again. A task of
            // our own message that ended is done with: this delivery may run another.
            const bool lost_race = c.kind == ClaimKind::finished || (c.kind == ClaimKind::held && !n.resume);
            if (lost_race) {
                if (round < 100) continue;
                c = Claim{ClaimKind::held};  // contention without end: the worker asks again shortly
            }
            break;
        }
        if (c.id == 0) c.id = n.kind == Next::Kind::task && n.id != 0 ? n.id : unit;
        if (scope) scope->commit();
        return c;
    }
}

std::unique_ptr<TaskStore> open_store(const StoreConfig& cfg, StoreDeps deps) {
    // The store fills in what `deps` leaves empty.
    if (!cfg.url.empty()) return std::make_unique<PgStore>(cfg, std::move(deps));
    return std::make_unique<SqliteStore>(cfg, std::move(deps));
}

}  // namespace sqlq
