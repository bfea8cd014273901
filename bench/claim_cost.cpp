// What fairness costs a task in the store: a backlog of N queued tasks spread over U users is
// run through claim + finish, once by id in submission order (first in, first out: what the
// worker did before claim_next) and once by claim_next (the fair choice), and the time per task
// of each is printed as JSON. No broker, no worker: only the store's statements, on one
// connection. bench.py's fairness section runs it; docs/performance.md has the figures.
//
//   sqlq-bench-claim-cost --store PATH|postgresql://... [--tasks N] [--users U] [--durability D] [--rounds R]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "task/store.h"
#include "util/process.h"

using namespace sqlq;

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Args {
    std::string store;
    int tasks = 2000;
    int users = 1;
    int rounds = 3;
    std::string durability = "normal";
};

// One pass over a fresh backlog; returns µs per task.
double pass(TaskStore& s, const Args& a, bool fair) {
    std::vector<int64_t> ids;
    for (int i = 0; i < a.tasks; ++i) ids.push_back(s.insert("SELECT 1", "user" + std::to_string(i % a.users)));
    Owner me = Owner::self();
    Outcome ok;
    ok.status = Status::succeeded;
    ok.row_count = 1;
    ok.result = ResultData{"[\"1\"]", "[[1]]"};
    TaskStore::ClaimRules rules;
    const double t0 = now_s();
    for (int64_t id : ids) {
        TaskStore::Claim c = fair ? s.claim_next(id, me, rules) : s.claim(id, me, rules);
        if (c.kind != TaskStore::ClaimKind::claimed) {
            std::fprintf(stderr, "claim of %lld: not claimed\n", static_cast<long long>(id));
            std::exit(1);
        }
        s.finish(c.id == 0 ? id : c.id, c.token, ok);
    }
    return (now_s() - t0) * 1e6 / a.tasks;
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i], v = argv[i + 1];
        if (k == "--store") a.store = v;
        else if (k == "--tasks") a.tasks = std::stoi(v);
        else if (k == "--users") a.users = std::stoi(v);
        else if (k == "--rounds") a.rounds = std::stoi(v);
        else if (k == "--durability") a.durability = v;
        else {
            std::fprintf(stderr, "unknown option %s\n", k.c_str());
            return 2;
        }
    }
    if (a.store.empty() || a.tasks < 1 || a.users < 1) {
        std::fprintf(stderr, "usage: %s --store PATH|URL [--tasks N] [--users U] [--durability D] [--rounds R]\n", argv[0]);
        return 2;
    }
    StoreConfig cfg;
    if (a.store.rfind("postgres", 0) == 0) cfg.url = a.store;
    else cfg.path = a.store;
    cfg.durability = a.durability;
    auto s = open_store(cfg);
    std::string out = "{\"tasks\":" + std::to_string(a.tasks) + ",\"users\":" + std::to_string(a.users) + ",\"fifo_us\":[";
    std::string fair_out = "],\"fair_us\":[";
    for (int r = 0; r < a.rounds; ++r) {
        // Alternating which goes first: the store grows with every pass.
        const bool fair_first = r % 2 == 1;
        const double first = pass(*s, a, fair_first), second = pass(*s, a, !fair_first);
        const double fifo = fair_first ? second : first, fair = fair_first ? first : second;
        out += (r ? "," : "") + std::to_string(fifo);
        fair_out += (r ? "," : "") + std::to_string(fair);
    }
    std::printf("%s%s]}\n", out.c_str(), fair_out.c_str());
    return 0;
}
