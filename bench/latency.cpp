// sqlq-bench-latency: the latency a long-lived client sees (what the web console will be): one
// TaskService, kept for the whole run (its store connection, its broker connection), submits a
// query, waits for its outcome and reads the result, N times in a row. For each run it prints
// one JSON line with the client's clock (wall, microseconds: start of the submit, submit
// returned, outcome in hand, result read) and the task's own times (ms, the store's clock on
// this host), from which bench.py splits the latency into its steps.
//
//   sqlq-bench-latency --config CONF [--count 500] [--sql "SELECT 1"] [--warmup 20]
#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "args.h"
#include "config/config.h"
#include "service/task_service.h"

namespace {
int64_t wall_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}
}  // namespace

int main(int argc, char** argv) {
    try {
        bench::Args a(argc, argv, 1);
        sqlq::Config cfg = sqlq::load_config(a.str("config", "etc/sqlq.conf"));
        const long count = a.num("count", 500), warmup = a.num("warmup", 20);
        const std::string sql = a.str("sql", "SELECT 1");
        sqlq::TaskService svc(cfg);
        for (long i = -warmup; i < count; ++i) {
            const int64_t t0 = wall_us();
            auto s = svc.submit({sql}, "bench");
            const int64_t t1 = wall_us();
            if (!s.problem.empty()) throw sqlq::Error("submit: " + s.problem);
            const int64_t id = s.ids.front();
            auto w = svc.wait(id, 60000);
            const int64_t t2 = wall_us();
            if (w.timed_out || w.task.status != sqlq::Status::succeeded)
                throw sqlq::Error("task " + std::to_string(id) + " " + sqlq::to_string(w.task.status));
            svc.result(id);
            const int64_t t3 = wall_us();
            if (i < 0) continue;
            const auto& t = w.task;
            nlohmann::json j = {{"id", id},           {"t0_us", t0},           {"t1_us", t1},
                                {"t2_us", t2},        {"t3_us", t3},           {"created_ms", t.created_at},
                                {"started_ms", *t.started_at}, {"finished_ms", *t.finished_at}};
            std::printf("%s\n", j.dump().c_str());
        }
        svc.close();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sqlq-bench-latency: %s\n", e.what());
        return 1;
    }
}
