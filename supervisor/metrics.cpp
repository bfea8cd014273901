#include "supervisor/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace sqlq::supervisor::metrics {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), buckets_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
    // The first bound >= v: le is "less than or equal".
    size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    ++buckets_[i];
    sum_ += v;
    ++count_;
}

std::vector<uint64_t> Histogram::cumulative() const {
    std::vector<uint64_t> out(buckets_.size());
    uint64_t run = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) out[i] = run += buckets_[i];
    return out;
}

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    // Integral values (counts, most gauges) exactly, without an exponent, up to 2^53.
    if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.0f", v);
        return buf;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    // Shortest form that reads back the same: try fewer digits first.
    for (int digits = 6; digits < 17; ++digits) {
        char shorter[32];
        std::snprintf(shorter, sizeof shorter, "%.*g", digits, v);
        if (std::strtod(shorter, nullptr) == v) return shorter;
    }
    return buf;
}

std::string escape_label_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        switch (c) {
        case '\\': out += "\\\\"; break;
        case '"': out += "\\\""; break;
        case '\n': out += "\\n"; break;
        default: out += c;
        }
    }
    return out;
}

std::string escape_help(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        switch (c) {
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        default: out += c;
        }
    }
    return out;
}

namespace {

const char* type_name(Type t) {
    switch (t) {
    case Type::counter: return "counter";
    case Type::gauge: return "gauge";
    case Type::histogram: return "histogram";
    }
    return "untyped";
}

void put_labels(std::string& out, const Labels& labels, const std::pair<std::string, std::string>* extra = nullptr) {
    if (labels.empty() && !extra) return;
    out += '{';
    bool first = true;
    auto put = [&](const std::string& k, const std::string& v) {
        if (!first) out += ',';
        first = false;
        out += k;
        out += "=\"";
        out += escape_label_value(v);
        out += '"';
    };
    for (const auto& [k, v] : labels) put(k, v);
    if (extra) put(extra->first, extra->second);
    out += '}';
}

void put_line(std::string& out, const std::string& name, const Labels& labels, double value,
              const std::pair<std::string, std::string>* extra = nullptr) {
    out += name;
    put_labels(out, labels, extra);
    out += ' ';
    out += format_value(value);
    out += '\n';
}

}  // namespace

std::string exposition(const std::vector<Family>& families) {
    std::string out;
    out.reserve(8192);
    for (const auto& f : families) {
        out += "# HELP " + f.name + " " + escape_help(f.help) + "\n";
        out += "# TYPE " + f.name + " " + type_name(f.type) + "\n";
        if (f.type != Type::histogram) {
            for (const auto& s : f.samples) put_line(out, f.name, s.labels, s.value);
            continue;
        }
        for (const auto& h : f.histograms) {
            const auto cum = h.histogram.cumulative();
            const auto& bounds = h.histogram.bounds();
            for (size_t i = 0; i < cum.size(); ++i) {
                std::pair<std::string, std::string> le{"le", i < bounds.size() ? format_value(bounds[i]) : "+Inf"};
                put_line(out, f.name + "_bucket", h.labels, double(cum[i]), &le);
            }
            put_line(out, f.name + "_sum", h.labels, h.histogram.sum());
            put_line(out, f.name + "_count", h.labels, double(h.histogram.count()));
        }
    }
    return out;
}

const std::vector<double>& task_seconds_bounds() {
    static const std::vector<double> b = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 150, 300,
                                          600, 1800, 3600};
    return b;
}

const std::vector<double>& cancel_seconds_bounds() {
    static const std::vector<double> b = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    return b;
}

TaskMetrics::TaskMetrics()
    : wait_(task_seconds_bounds()), run_(task_seconds_bounds()), cancel_(cancel_seconds_bounds()) {
    // Every series exists from the start at 0, so rate() and absent() see it before the first task.
    for (const char* s : {"succeeded", "failed", "cancelled"})
        for (const char* by : {"worker", "sweeper"}) outcomes_[{s, by}] = 0;
}

void TaskMetrics::finished(const ReportLine& r) {
    if (r.what != Report::done || !terminal(r.status)) return;
    ++outcomes_[{to_string(r.status), "worker"}];
    if (r.wait_ms >= 0) wait_.observe(double(r.wait_ms) / 1000.0);
    if (r.run_ms >= 0) run_.observe(double(r.run_ms) / 1000.0);
    if (r.cancel_ms >= 0) cancel_.observe(double(r.cancel_ms) / 1000.0);
}

void TaskMetrics::finished_by_sweeper(Status s, int64_t n) {
    if (!terminal(s) || n <= 0) return;
    outcomes_[{to_string(s), "sweeper"}] += uint64_t(n);
}

std::string build_version() {
#ifdef SQLQ_VERSION
    return SQLQ_VERSION;
#else
    return "unknown";
#endif
}

std::string build_commit() {
#ifdef SQLQ_COMMIT
    return SQLQ_COMMIT;
#else
    return "unknown";
#endif
}

namespace {

Family family(std::string name, std::string help, Type type) {
    Family f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

// Every known reason first, at 0 until it happens; a reason the table adds later still shows.
std::vector<Sample> by_reason(const std::map<std::string, uint64_t>& counts, std::vector<std::string> known) {
    std::map<std::string, uint64_t> all;
    for (auto& k : known) all[k] = 0;
    for (const auto& [k, v] : counts) all[k] = v;
    std::vector<Sample> out;
    for (const auto& [k, v] : all) out.push_back({{{"reason", k}}, double(v)});
    return out;
}

}  // namespace

std::vector<Family> collect(const Fleet& fleet, const TaskMetrics& tasks, const SweepFigures& sweep, const Info& info) {
    std::vector<Family> out;

    auto build = family("sqlq_build_info", "sqlq build: version and git commit (value always 1)", Type::gauge);
    build.samples.push_back({{{"version", info.version}, {"commit", info.commit}}, 1});
    out.push_back(std::move(build));

    auto start = family("process_start_time_seconds", "Start time of the supervisor since the epoch, in seconds",
                        Type::gauge);
    start.samples.push_back({{}, info.start_time_s});
    out.push_back(std::move(start));

    // --- the fleet ---
    auto target = family("sqlq_workers_target", "Worker processes the supervisor keeps ([supervisor] workers)",
                         Type::gauge);
    target.samples.push_back({{}, double(fleet.target())});
    out.push_back(std::move(target));

    std::map<std::string, int64_t> states;
    int64_t waiting = 0;
    int64_t longest_ms = 0;
    for (SlotState st : {SlotState::exited, SlotState::starting, SlotState::ready, SlotState::busy,
                         SlotState::stopping, SlotState::backoff})
        states[to_string(st)] = 0;
    for (const Slot& sl : fleet.slots()) {
        // A slot that is not wanted and has no process is no worker: scale-down leftovers.
        if (!sl.wanted && sl.state == SlotState::exited) continue;
        ++states[to_string(sl.state)];
        if (sl.state == SlotState::ready && sl.waiting_for) ++waiting;
        if (sl.state == SlotState::busy && sl.task) longest_ms = std::max(longest_ms, info.now_ms - sl.task_since);
    }
    auto workers = family("sqlq_workers", "Worker slots by state (starting, ready, busy, stopping, backoff, exited)",
                          Type::gauge);
    for (const auto& [st, n] : states) workers.samples.push_back({{{"state", st}}, double(n)});
    out.push_back(std::move(workers));

    auto wait_slots = family("sqlq_workers_waiting",
                             "Ready workers holding a delivery they cannot run yet (another live worker has the task, "
                             "or the store refuses the claim)",
                             Type::gauge);
    wait_slots.samples.push_back({{}, double(waiting)});
    out.push_back(std::move(wait_slots));

    auto longest = family("sqlq_task_running_longest_seconds",
                          "How long the longest-running current task has been on its worker (0 when none is busy)",
                          Type::gauge);
    longest.samples.push_back({{}, double(std::max<int64_t>(0, longest_ms)) / 1000.0});
    out.push_back(std::move(longest));

    auto restarts = family("sqlq_worker_restarts_total",
                           "Workers that ended while their slot was wanted, so it was refilled, by reason", Type::counter);
    restarts.samples = by_reason(fleet.counters().restarts,
                                 {"crash", "failed_start", "watchdog", "cancel", "deadline", "recycled", "requested"});
    out.push_back(std::move(restarts));

    auto failed = family("sqlq_worker_failed_starts_total",
                         "Workers that failed to start (died before ready or within failed_start_ms), by how",
                         Type::counter);
    failed.samples = by_reason(fleet.counters().failed_starts, {"exec", "exit", "signal", "spawn"});
    out.push_back(std::move(failed));

    if (info.web_kept) {
        auto up = family("sqlq_web_up", "1 while the sqlq-web process the supervisor keeps ([web] enabled) is running",
                         Type::gauge);
        up.samples.push_back({{}, info.web_up ? 1.0 : 0.0});
        out.push_back(std::move(up));
        auto again = family("sqlq_web_restarts_total", "Times the supervisor started sqlq-web again after it ended",
                            Type::counter);
        again.samples.push_back({{}, double(info.web_restarts)});
        out.push_back(std::move(again));
    }

    // --- tasks ---
    auto finished = family("sqlq_tasks_finished_total",
                           "Task outcomes this fleet wrote, by status and by whom (worker, or the supervisor's sweeper)",
                           Type::counter);
    for (const auto& [key, n] : tasks.outcomes())
        finished.samples.push_back({{{"status", key.first}, {"recorded_by", key.second}}, double(n)});
    out.push_back(std::move(finished));

    auto hist = [&](const char* name, const char* help, const Histogram& h) {
        auto f = family(name, help, Type::histogram);
        f.histograms.push_back({{}, h});
        out.push_back(std::move(f));
    };
    hist("sqlq_task_wait_seconds", "Time from submit to the first claim by a worker, in seconds", tasks.wait());
    hist("sqlq_task_run_seconds", "Time from claim to the recorded outcome, in seconds", tasks.run());
    hist("sqlq_task_cancel_seconds", "Time from a running task's cancel request to its recorded cancelled outcome, in seconds",
         tasks.cancel());

    // --- what the sweeper saw ---
    if (sweep.swept) {
        const Labels q = {{"queue", info.queue}};
        auto up = [&](const char* name, const char* help, bool v) {
            auto f = family(name, help, Type::gauge);
            f.samples.push_back({{}, v ? 1.0 : 0.0});
            out.push_back(std::move(f));
        };
        up("sqlq_broker_up", "1 when the last sweep reached the broker", sweep.broker_up);
        up("sqlq_store_up", "1 when the last sweep could use the task store", sweep.store_up);
        auto age = family("sqlq_sweep_age_seconds", "Seconds since the last sweep (the figures of the queue and of "
                                                    "reachability are that old)", Type::gauge);
        age.samples.push_back({{}, double(std::max<int64_t>(0, info.now_ms - sweep.at_ms)) / 1000.0});
        out.push_back(std::move(age));
        if (sweep.queue_known) {
            auto gauge = [&](const char* name, const char* help, int64_t v) {
                auto f = family(name, help, Type::gauge);
                f.samples.push_back({q, double(v)});
                out.push_back(std::move(f));
            };
            gauge("sqlq_queue_messages", "Messages ready in the task queue (not counting those delivered and unacked)",
                  sweep.queue_messages);
            gauge("sqlq_queue_consumers", "Consumers of the task queue (every host's workers)", sweep.queue_consumers);
            gauge("sqlq_dead_letter_messages", "Messages in the dead-letter queue", sweep.dead_letters);
        }
    }
    return out;
}

}  // namespace sqlq::supervisor::metrics
