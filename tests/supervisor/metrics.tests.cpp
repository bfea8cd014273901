#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <spdlog/spdlog.h>
#include <string>
#include <vector>

#include "supervisor/fleet.h"
#include "supervisor/metrics.h"
#include "supervisor/metrics_server.h"
#include "task/report.h"
#include "util/error.h"

using namespace sqlq;
using namespace sqlq::supervisor;
using namespace sqlq::supervisor::metrics;

namespace {

struct FakeClock : Clock {
    int64_t now = 1000000;
    int64_t now_ms() override { return now; }
};

struct FakeSpawner : Spawner {
    pid_t next_pid = 100;
    bool fail = false;
    Spawned spawn(int, uint64_t) override {
        if (fail) throw Error("fork: Resource temporarily unavailable");
        return {next_pid++, 4242};
    }
    void signal(pid_t, int) override {}
    int64_t rss_mb(pid_t) override { return 10; }
};

struct Rig {
    FakeClock clock;
    FakeSpawner spawner;
    Fleet fleet;
    explicit Rig(Policy p) : fleet(p, spawner, clock) { spdlog::set_level(spdlog::level::off); }
    Slot& slot(int n) { return *fleet.find(n); }
    void say(int n, Report what, int64_t task = 0) { fleet.report(n, slot(n).generation, ReportLine{what, task}); }
    void dies(int n, int status) { REQUIRE(fleet.exited(slot(n).pid, status)); }
};

Policy policy() {
    Policy p;
    p.watchdog_ms = 3000;
    p.failed_start_ms = 2000;
    p.failed_starts_before_backoff = 3;
    return p;
}

ReportLine done(int64_t id, Status s, int64_t wait_ms, int64_t run_ms, int64_t cancel_ms) {
    ReportLine r;
    r.what = Report::done;
    r.task_id = id;
    r.status = s;
    r.wait_ms = wait_ms;
    r.run_ms = run_ms;
    r.cancel_ms = cancel_ms;
    return r;
}

// The value of the sample line that starts with `series` ("name{labels}"), or -1.
double value_of(const std::string& text, const std::string& series) {
    size_t at = 0;
    while ((at = text.find(series + " ", at)) != std::string::npos) {
        if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
        ++at;
    }
    return -1;
}

}  // namespace

TEST_CASE("the exposition text has HELP and TYPE, escaped labels and cumulative buckets ending at +Inf",
          "[supervisor][metrics]") {
    Family c;
    c.name = "sqlq_things_total";
    c.help = "Things, with a \\ and a\nnewline";
    c.type = Type::counter;
    c.samples.push_back({{{"kind", "a \"quoted\" \\ value\non two lines"}, {"b", "x"}}, 3});
    c.samples.push_back({{}, 0});
    Family h;
    h.name = "sqlq_took_seconds";
    h.help = "How long";
    h.type = Type::histogram;
    Histogram hist({0.1, 1, 10});
    for (double v : {0.05, 0.1, 0.5, 20.0}) hist.observe(v);
    h.histograms.push_back({{{"q", "x"}}, hist});
    Family g;
    g.name = "sqlq_level";
    g.help = "A gauge";
    g.type = Type::gauge;
    g.samples.push_back({{}, 0.25});

    CHECK(exposition({c, h, g}) ==
          "# HELP sqlq_things_total Things, with a \\\\ and a\\nnewline\n"
          "# TYPE sqlq_things_total counter\n"
          "sqlq_things_total{kind=\"a \\\"quoted\\\" \\\\ value\\non two lines\",b=\"x\"} 3\n"
          "sqlq_things_total 0\n"
          "# HELP sqlq_took_seconds How long\n"
          "# TYPE sqlq_took_seconds histogram\n"
          "sqlq_took_seconds_bucket{q=\"x\",le=\"0.1\"} 2\n"
          "sqlq_took_seconds_bucket{q=\"x\",le=\"1\"} 3\n"
          "sqlq_took_seconds_bucket{q=\"x\",le=\"10\"} 3\n"
          "sqlq_took_seconds_bucket{q=\"x\",le=\"+Inf\"} 4\n"
          "sqlq_took_seconds_sum{q=\"x\"} 20.65\n"
          "sqlq_took_seconds_count{q=\"x\"} 4\n"
          "# HELP sqlq_level A gauge\n"
          "# TYPE sqlq_level gauge\n"
          "sqlq_level 0.25\n");
}

TEST_CASE("sample values are written as the format reads them", "[supervisor][metrics]") {
    CHECK(format_value(0) == "0");
    CHECK(format_value(42) == "42");
    CHECK(format_value(-3) == "-3");
    CHECK(format_value(1e15) == "1000000000000000");
    CHECK(format_value(0.005) == "0.005");
    CHECK(format_value(2.5) == "2.5");
    CHECK(std::stod(format_value(0.1 + 0.2)) == 0.1 + 0.2);
    CHECK(format_value(1.0 / 0.0) == "+Inf");
    CHECK(format_value(-1.0 / 0.0) == "-Inf");
    CHECK(format_value(0.0 / 0.0) == "NaN");
}

TEST_CASE("a worker's done line carries status, wait, run and cancel times, and a bad one is refused",
          "[supervisor][metrics][report]") {
    ReportLine r = done(42, Status::cancelled, 12, 340, 51);
    CHECK(format_report(r) == "done 42 cancelled 12 340 51\n");
    auto back = parse_report("done 42 cancelled 12 340 51");
    REQUIRE(back);
    CHECK(back->what == Report::done);
    CHECK(back->task_id == 42);
    CHECK(back->status == Status::cancelled);
    CHECK(back->wait_ms == 12);
    CHECK(back->run_ms == 340);
    CHECK(back->cancel_ms == 51);
    CHECK(parse_report("done 7 failed -1 -1 -1"));
    for (const char* bad : {"done", "done 42", "done 42 succeeded 1 2", "done 42 succeeded 1 2 3 4",
                            "done 0 succeeded 1 2 3", "done 42 running 1 2 3", "done 42 queued 1 2 3",
                            "done 42 succeeded -2 2 3", "done 42 succeeded x 2 3", "done 42 nope 1 2 3",
                            "done 42 succeeded 1 2 3 ", "done -5 failed 1 2 3"}) {
        INFO(bad);
        CHECK_FALSE(parse_report(bad));
    }
}

TEST_CASE("task outcomes and their times are counted from done lines and the sweeper", "[supervisor][metrics]") {
    TaskMetrics t;
    t.finished(done(1, Status::succeeded, 20, 300, -1));
    t.finished(done(2, Status::succeeded, -1, 4000, -1));  // a take-over: no wait
    t.finished(done(3, Status::failed, 5, 1, -1));
    t.finished(done(4, Status::cancelled, 10, 700, 60));
    t.finished(ReportLine{Report::busy, 5});                  // not a done line: ignored
    t.finished_by_sweeper(Status::failed, 2);
    t.finished_by_sweeper(Status::running, 5);                // not an outcome: ignored
    CHECK(t.outcomes().at({"succeeded", "worker"}) == 2);
    CHECK(t.outcomes().at({"failed", "worker"}) == 1);
    CHECK(t.outcomes().at({"cancelled", "worker"}) == 1);
    CHECK(t.outcomes().at({"failed", "sweeper"}) == 2);
    CHECK(t.outcomes().at({"succeeded", "sweeper"}) == 0);
    CHECK(t.wait().count() == 3);
    CHECK(t.wait().sum() == Approx(0.035));
    CHECK(t.run().count() == 4);
    CHECK(t.run().sum() == Approx(5.001));
    CHECK(t.cancel().count() == 1);
    CHECK(t.cancel().sum() == Approx(0.06));
    // 0.06 s is in the 0.1 bucket, not the 0.05 one.
    const auto& b = t.cancel().bounds();
    const auto cum = t.cancel().cumulative();
    for (size_t i = 0; i < b.size(); ++i) {
        INFO(b[i]);
        CHECK(cum[i] == (b[i] >= 0.06 ? 1u : 0u));
    }
    CHECK(cum.back() == 1);
}

TEST_CASE("a scrape shows worker states, restarts and failed starts by reason, from the slot table",
          "[supervisor][metrics]") {
    Rig r(policy());
    r.fleet.set_target(3);
    r.say(1, Report::ready);
    r.say(2, Report::ready);
    r.say(3, Report::ready);
    r.clock.now += 5000;
    r.say(2, Report::busy, 77);
    r.clock.now += 1500;
    r.say(1, Report::alive);
    r.say(2, Report::alive);
    r.say(3, Report::alive);
    r.dies(1, SIGSEGV);             // a healthy worker crashes: restart "crash"
    r.dies(1, 127 << 8);            // its replacement cannot exec: failed start "exec"
    r.clock.now += 10;
    r.say(3, Report::waiting, 78);  // holds a delivery it cannot run yet

    TaskMetrics tasks;
    tasks.finished(done(9, Status::succeeded, 3, 4, -1));
    SweepFigures sweep;  // no sweep yet
    Info info;
    info.version = "0.1.0";
    info.commit = "abc123";
    info.queue = "sqlq.tasks";
    info.start_time_s = 1700000000.5;
    info.now_ms = r.clock.now;
    std::string text = exposition(collect(r.fleet, tasks, sweep, info));
    INFO(text);
    CHECK(value_of(text, "sqlq_build_info{version=\"0.1.0\",commit=\"abc123\"}") == 1);
    CHECK(value_of(text, "process_start_time_seconds") == Approx(1700000000.5));
    CHECK(value_of(text, "sqlq_workers_target") == 3);
    CHECK(value_of(text, "sqlq_workers{state=\"starting\"}") == 1);
    CHECK(value_of(text, "sqlq_workers{state=\"ready\"}") == 1);
    CHECK(value_of(text, "sqlq_workers{state=\"busy\"}") == 1);
    CHECK(value_of(text, "sqlq_workers{state=\"backoff\"}") == 0);
    CHECK(value_of(text, "sqlq_workers_waiting") == 1);
    CHECK(value_of(text, "sqlq_task_running_longest_seconds") == Approx(1.51));
    CHECK(value_of(text, "sqlq_worker_restarts_total{reason=\"crash\"}") == 1);
    CHECK(value_of(text, "sqlq_worker_restarts_total{reason=\"failed_start\"}") == 1);
    CHECK(value_of(text, "sqlq_worker_restarts_total{reason=\"watchdog\"}") == 0);
    CHECK(value_of(text, "sqlq_worker_failed_starts_total{reason=\"exec\"}") == 1);
    CHECK(value_of(text, "sqlq_worker_failed_starts_total{reason=\"signal\"}") == 0);
    CHECK(value_of(text, "sqlq_tasks_finished_total{status=\"succeeded\",recorded_by=\"worker\"}") == 1);
    CHECK(value_of(text, "sqlq_tasks_finished_total{status=\"cancelled\",recorded_by=\"sweeper\"}") == 0);
    CHECK(value_of(text, "sqlq_task_wait_seconds_count") == 1);
    CHECK(value_of(text, "sqlq_task_run_seconds_bucket{le=\"+Inf\"}") == 1);
    CHECK(value_of(text, "sqlq_task_cancel_seconds_count") == 0);
    // Unknown before the first sweep: not shown rather than shown as 0.
    CHECK(text.find("sqlq_queue_messages") == std::string::npos);
    CHECK(text.find("sqlq_broker_up") == std::string::npos);

    SECTION("the watchdog's kill is its own reason") {
        r.clock.now += 3000;  // slot 2 said nothing since: killed; the others spoke
        r.say(1, Report::alive);
        r.say(3, Report::alive);
        r.fleet.tick();
        r.dies(2, SIGKILL);
        text = exposition(collect(r.fleet, tasks, sweep, info));
        CHECK(value_of(text, "sqlq_worker_restarts_total{reason=\"watchdog\"}") == 1);
    }
    SECTION("a stop is no restart, and slots no longer wanted are not counted") {
        r.fleet.set_target(1);
        for (int n = 1; n <= 3; ++n)
            if (r.slot(n).has_process() && !r.slot(n).wanted) r.dies(n, 0);
        text = exposition(collect(r.fleet, tasks, sweep, info));
        CHECK(value_of(text, "sqlq_worker_restarts_total{reason=\"crash\"}") == 1);
        CHECK(value_of(text, "sqlq_workers{state=\"exited\"}") == 0);
        CHECK(value_of(text, "sqlq_workers_target") == 1);
    }
    SECTION("no process at all is a failed start of its own kind") {
        r.spawner.fail = true;
        r.fleet.set_target(4);
        text = exposition(collect(r.fleet, tasks, sweep, info));
        CHECK(value_of(text, "sqlq_worker_failed_starts_total{reason=\"spawn\"}") == 1);
        CHECK(value_of(text, "sqlq_workers{state=\"backoff\"}") == 1);
    }
    SECTION("after a sweep, the queue and reachability figures, with their age") {
        sweep.swept = true;
        sweep.broker_up = true;
        sweep.store_up = false;
        sweep.queue_known = true;
        sweep.queue_messages = 12;
        sweep.queue_consumers = 3;
        sweep.dead_letters = 2;
        sweep.at_ms = r.clock.now - 1500;
        text = exposition(collect(r.fleet, tasks, sweep, info));
        CHECK(value_of(text, "sqlq_broker_up") == 1);
        CHECK(value_of(text, "sqlq_store_up") == 0);
        CHECK(value_of(text, "sqlq_sweep_age_seconds") == Approx(1.5));
        CHECK(value_of(text, "sqlq_queue_messages{queue=\"sqlq.tasks\"}") == 12);
        CHECK(value_of(text, "sqlq_queue_consumers{queue=\"sqlq.tasks\"}") == 3);
        CHECK(value_of(text, "sqlq_dead_letter_messages{queue=\"sqlq.tasks\"}") == 2);
    }
    SECTION("sqlq-web's figures only when the supervisor keeps it") {
        CHECK(text.find("sqlq_web_") == std::string::npos);
        info.web_kept = true;
        info.web_up = true;
        info.web_restarts = 2;
        text = exposition(collect(r.fleet, tasks, sweep, info));
        CHECK(value_of(text, "sqlq_web_up") == 1);
        CHECK(value_of(text, "sqlq_web_restarts_total") == 2);
    }
    // No task ids in any label: task 77 is busy and 78 waited, and neither number shows.
    CHECK(text.find("77") == std::string::npos);
    CHECK(text.find("78") == std::string::npos);
}

TEST_CASE("the metrics handler answers GET and HEAD /metrics and refuses the rest with the right status",
          "[supervisor][metrics][http]") {
    int renders = 0;
    auto render = [&] {
        ++renders;
        return std::string("sqlq_x 1\n");
    };
    SECTION("GET") {
        HttpReply r = metrics_reply("GET", "/metrics", render);
        CHECK(r.status == 200);
        CHECK(r.content_type == kMetricsContentType);
        CHECK(r.body == "sqlq_x 1\n");
        CHECK_FALSE(r.head_only);
    }
    SECTION("GET with a query string") { CHECK(metrics_reply("GET", "/metrics?name[]=x", render).status == 200); }
    SECTION("HEAD: the same headers, no body") {
        HttpReply r = metrics_reply("HEAD", "/metrics", render);
        CHECK(r.status == 200);
        CHECK(r.head_only);
    }
    SECTION("another method: 405 with Allow") {
        for (const char* m : {"POST", "PUT", "DELETE", "OPTIONS", "BREW"}) {
            HttpReply r = metrics_reply(m, "/metrics", render);
            CHECK(r.status == 405);
            REQUIRE(r.headers.size() == 1);
            CHECK(r.headers[0] == std::pair<std::string, std::string>{"Allow", "GET, HEAD"});
        }
        CHECK(renders == 0);
    }
    SECTION("another path: 404") {
        for (const char* p : {"/", "/metrics/", "/metricsx", "metrics", "/../metrics", "*", ""})
            CHECK(metrics_reply("GET", p, render).status == 404);
        CHECK(renders == 0);
    }
}
