#pragma once
// Prometheus metrics of one supervisor: what it keeps (counters and histograms updated as events
// arrive, never a scan of the store) and the pure function that turns a snapshot into the text
// exposition format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
// Nothing here touches a socket (metrics_server.h serves the text) or the fleet (the supervisor
// collects a snapshot from it at each scrape). Every metric is listed in docs/operations.md.
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "supervisor/fleet.h"
#include "task/report.h"
#include "task/task.h"

namespace sqlq::supervisor::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Cumulative histogram over fixed upper bounds (seconds); +Inf is implicit.
class Histogram {
public:
    explicit Histogram(std::vector<double> bounds);
    void observe(double v);
    const std::vector<double>& bounds() const { return bounds_; }
    // counts()[i]: observations <= bounds()[i] (cumulative); the last element is the +Inf bucket.
    std::vector<uint64_t> cumulative() const;
    double sum() const { return sum_; }
    uint64_t count() const { return count_; }

private:
    std::vector<double> bounds_;
    std::vector<uint64_t> buckets_;  // per bucket, not cumulative; one more than bounds_ (+Inf)
    double sum_ = 0;
    uint64_t count_ = 0;
};

enum class Type { counter, gauge, histogram };

struct Sample {
    Labels labels;
    double value = 0;
};

struct HistogramSample {
    Labels labels;
    Histogram histogram;
};

// One metric family: a name, its HELP and TYPE, and its samples (counters and gauges) or
// histograms (histogram type).
struct Family {
    std::string name;  // a counter's name ends in _total
    std::string help;
    Type type = Type::gauge;
    std::vector<Sample> samples;
    std::vector<HistogramSample> histograms;
};

// The text exposition format: "# HELP", "# TYPE", then one line per sample; histograms as
// name_bucket{...,le="..."} (cumulative, ending with le="+Inf"), name_sum and name_count.
// Label values and HELP text are escaped as the format says.
std::string exposition(const std::vector<Family>& families);

// A sample value or bound as the format writes it: integers without an exponent, "+Inf",
// "-Inf", "NaN".
std::string format_value(double v);
// Label value escaping: backslash, double quote and newline.
std::string escape_label_value(std::string_view v);
// HELP escaping: backslash and newline.
std::string escape_help(std::string_view v);

// The upper bounds of the task-time histograms, in seconds: 5 ms to 1 h, roughly x2.5 apart
// (the query timeout defaults to 60 s and may be set to hours).
const std::vector<double>& task_seconds_bounds();
// The cancel latency's bounds: 10 ms to 60 s (a cancel is honoured within ~50 ms, or the worker
// is killed at cancel_grace_ms, 2 s by default).
const std::vector<double>& cancel_seconds_bounds();

// What the sweeper learned at its last sweep (it asks the broker and the store anyway); the
// scrape reads this instead of asking again.
struct SweepFigures {
    bool swept = false;          // at least one sweep finished (else the figures are unknown)
    bool store_up = false;
    bool broker_up = false;
    bool queue_known = false;    // messages/consumers below are from this sweep
    int64_t queue_messages = 0;  // ready in the task queue (not unacked)
    int64_t queue_consumers = 0;
    int64_t dead_letters = 0;
    int64_t at_ms = 0;           // mono_ms() of the sweep
};

// The counters and histograms the supervisor keeps as events arrive. Single-threaded: only the
// event loop touches it (the sweeper posts its part there).
class TaskMetrics {
public:
    TaskMetrics();
    // A worker's "done" report line, or an outcome the sweeper wrote.
    void finished(const ReportLine& r);
    void finished_by_sweeper(Status s, int64_t n = 1);

    // How many outcomes per status ("succeeded", "failed", "cancelled") and by whom ("worker",
    // "sweeper").
    const std::map<std::pair<std::string, std::string>, uint64_t>& outcomes() const { return outcomes_; }
    const Histogram& wait() const { return wait_; }
    const Histogram& run() const { return run_; }
    const Histogram& cancel() const { return cancel_; }

private:
    std::map<std::pair<std::string, std::string>, uint64_t> outcomes_;
    Histogram wait_, run_, cancel_;
};

// What a scrape shows besides the fleet and the counters.
struct Info {
    std::string version;  // sqlq's version (CMake project version)
    std::string commit;   // git commit the build was configured at ("unknown" outside a checkout)
    std::string queue;    // [broker] queue, the label of the queue figures
    double start_time_s = 0;  // the supervisor's start, seconds since the epoch
    int64_t now_ms = 0;       // mono_ms() now, against SweepFigures::at_ms and the slots' times
    bool web_kept = false;    // the supervisor keeps sqlq-web ([web] enabled): the two below are shown
    bool web_up = false;      // sqlq-web's process is running
    uint64_t web_restarts = 0;
};

// The families of one scrape, from what the supervisor holds: the slot table (states, restarts,
// failed starts, the longest running task), the task counters and histograms, and the last
// sweep's figures. Reads no store and no broker. Series with a bounded set of label values
// exist from the start at 0; the queue and reachability figures are left out until the first
// sweep has them.
std::vector<Family> collect(const Fleet& fleet, const TaskMetrics& tasks, const SweepFigures& sweep, const Info& info);

// The build's version and commit (set by supervisor/CMakeLists.txt).
std::string build_version();
std::string build_commit();

}  // namespace sqlq::supervisor::metrics
