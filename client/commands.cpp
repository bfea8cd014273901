#include "client/commands.h"

#include <algorithm>
#include <csignal>
#include <ctime>
#include <functional>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/progress.h"
#include "service/task_service.h"
#include "util/cli.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/table.h"

namespace sqlq {

using json = nlohmann::json;

namespace {

std::string read_all(std::istream& in) {
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string read_file(const std::string& path) {
    if (path == "-") return read_all(std::cin);
    std::ifstream in(path);
    if (!in) throw Error(path + ": cannot read: " + std::strerror(errno), kExitUsage);
    return read_all(in);
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

std::string cell(const json& v) {
    if (v.is_null()) return "";
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("blob_hex")) return "x'" + v["blob_hex"].get<std::string>() + "'";
    return v.dump();
}

std::string elapsed_text(const Task& t, int64_t now) {
    auto e = elapsed_ms(t, now);
    return e ? format_duration(*e) : "";
}

// The one SQL text of `submit` or `run`: the argument, -f FILE, or stdin, exactly one of them.
std::string read_one_sql(const std::string& arg, const std::string& file, const char* command) {
    if (!arg.empty() && !file.empty())
        throw Error(std::string(command) + ": give the SQL as an argument or with -f FILE, not both", kExitUsage);
    std::string sql = !arg.empty() ? arg : !file.empty() ? read_file(file) : read_all(std::cin);
    if (blank(sql)) throw Error(std::string(command) + ": empty SQL", kExitUsage);
    return sql;
}

void print_result(int64_t id, const ResultData& r, const std::string& format) {
    json cols = json::parse(r.columns_json);
    json rows = json::parse(r.rows_json);
    if (format == "json") {
        std::cout << json{{"id", id}, {"columns", cols}, {"rows", rows}}.dump() << "\n";
    } else if (format == "csv") {
        std::vector<std::string> header(cols.begin(), cols.end());
        std::cout << csv_record(header);
        for (const auto& row : rows) {
            std::vector<std::string> f;
            for (const auto& v : row) f.push_back(cell(v));
            std::cout << csv_record(f);
        }
    } else {
        std::vector<std::string> header(cols.begin(), cols.end());
        std::vector<std::vector<std::string>> body;
        for (const auto& row : rows) {
            std::vector<std::string> f;
            for (const auto& v : row) f.push_back(v.is_null() ? "NULL" : cell(v));
            body.push_back(std::move(f));
        }
        std::cout << format_table(header, body) << "(" << rows.size() << " row" << (rows.size() == 1 ? "" : "s")
                  << ")\n";
    }
}

// What the task is doing while a command waits for it, on a terminal, overwritten in place.
// Times on the store's clock (TaskStore::now), read once, on the first line shown: this host's
// clock may be off from the database's.
std::function<void(const Task&)> wait_progress(ProgressLine& line, int64_t id, TaskService& svc) {
    return [&line, id, &svc, skew = std::optional<int64_t>()](const Task& seen) mutable {
        if (!line.on()) return;
        if (!skew) skew = svc.now() - now_ms();
        const int64_t at = now_ms() + *skew;
        std::string text = "task " + std::to_string(id) + " " + to_string(seen.status);
        if (seen.status == Status::running)
            text += " for " + elapsed_text(seen, at) + " (attempt " + std::to_string(seen.attempts) + ")";
        else  // queued: since it was submitted
            text += " for " + format_duration(std::max<int64_t>(0, at - seen.created_at));
        line.show(text + "; waiting");
    };
}

// Set by SIGINT or SIGTERM while `run` waits; read between looks (the wait's poll returns EINTR).
volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

// Installs the handler for SIGINT and SIGTERM for the lifetime of the object. One-shot
// (SA_RESETHAND): a second Ctrl-C kills as it always did, for a user who will not wait for the
// cancel. No SA_RESTART: a blocking wait returns at once.
class InterruptGuard {
public:
    InterruptGuard() {
        struct sigaction sa {};
        sa.sa_handler = on_interrupt;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        sigaction(SIGINT, &sa, &old_int_);
        sigaction(SIGTERM, &sa, &old_term_);
    }
    ~InterruptGuard() {
        sigaction(SIGINT, &old_int_, nullptr);
        sigaction(SIGTERM, &old_term_, nullptr);
    }
    InterruptGuard(const InterruptGuard&) = delete;
    InterruptGuard& operator=(const InterruptGuard&) = delete;

private:
    struct sigaction old_int_ {}, old_term_ {};
};

}  // namespace

int Output::error(const std::string& what, int code) const { return report_error("sqlq", what, code, json); }

int cmd_submit(const Config& cfg, const SubmitOptions& o, const Output& out) {
    std::vector<std::string> sqls;
    int sources = !o.sql.empty() + !o.file.empty() + !o.batch.empty();
    if (sources > 1) throw Error("submit: give the SQL as an argument, with -f FILE or with --batch FILE, not several", kExitUsage);
    if (!o.batch.empty()) {
        std::istringstream lines(read_file(o.batch));
        for (std::string line; std::getline(lines, line);)
            if (!blank(line)) sqls.push_back(line);
        if (sqls.empty()) throw Error("submit --batch " + o.batch + ": no SQL lines", kExitUsage);
    } else {
        sqls.push_back(read_one_sql(o.sql, o.file, "submit"));
    }

    TaskService svc(cfg);
    // A batch on a terminal: a bar while its messages are published (the rows are stored in one
    // transaction before that, in a moment).
    ProgressLine bar(ProgressLine().on() && !o.batch.empty());
    if (bar.on()) bar.show("submit: storing " + std::to_string(sqls.size()) + " tasks");
    auto r = svc.submit(sqls, o.user, [&](size_t done, size_t total) {
        bar.show("submit: publishing " + progress_bar(done, total),
                 done == total ? ProgressLine::Draw::now : ProgressLine::Draw::when_due);
    });
    bar.clear();
    svc.close();
    const auto& ids = r.ids;
    const std::string& problem = r.problem;
    const size_t confirmed = r.published;

    if (out.json) {
        // "published" is a bool everywhere (show, list): here, whether every task of this submit
        // was; "published_count" says how many were.
        json j = sqls.size() == 1 && o.batch.empty() ? json{{"id", ids[0]}} : json{{"ids", ids}};
        j["published"] = confirmed == ids.size();
        j["published_count"] = confirmed;
        std::cout << j.dump() << "\n";
    } else {
        for (int64_t id : ids) std::cout << id << "\n";
    }
    if (!problem.empty())
        return out.error(std::to_string(ids.size() - confirmed) + " of " + std::to_string(ids.size()) +
                             " task(s) stored but not yet published (" + problem +
                             "); the supervisor's sweeper will publish them",
                         kExitError);
    return kExitOk;
}

// "queued: user limit" for a task held back by [query] max_running_per_user.
std::string status_text(const Task& t) {
    return t.waiting_on.empty() ? to_string(t.status) : std::string(to_string(t.status)) + ": " + t.waiting_on;
}

int cmd_show(const Config& cfg, int64_t id, const Output& out) {
    TaskService svc(cfg);
    Task t = svc.show(id);
    const int64_t now = svc.now();
    if (out.json) {
        std::cout << task_json(t, now).dump() << "\n";
        return kExitOk;
    }
    auto opt = [](const std::optional<std::string>& s) { return s ? *s : std::string("-"); };
    std::vector<std::vector<std::string>> rows = {
        {"id", std::to_string(t.id)},
        {"status", status_text(t)},
        {"submitter", t.submitter},
        {"sql", t.sql},
        {"attempts", std::to_string(t.attempts)},
        {"executions", std::to_string(t.executions)},
        {"owner", opt(t.owner)},
        {"created", format_time(t.created_at)},
        {"started", format_time(t.started_at)},
        {"finished", format_time(t.finished_at)},
    };
    if (t.status == Status::running) rows.push_back({"elapsed", elapsed_text(t, now) + " (running)"});
    if (t.started_at && t.finished_at && terminal(t.status)) rows.push_back({"ran", elapsed_text(t, now)});
    if (t.row_count) rows.push_back({"rows", std::to_string(*t.row_count)});
    if (t.status == Status::succeeded) rows.push_back({"result", t.result_ref ? *t.result_ref : "expired"});
    if (t.error) rows.push_back({"error", *t.error});
    if (t.cancel_requested_at) {
        rows.push_back({"cancelled by", opt(t.cancelled_by)});
        rows.push_back({"cancel asked", format_time(t.cancel_requested_at)});
        if (t.status == Status::cancelled && t.finished_at)
            rows.push_back({"stop took", format_duration(*t.finished_at - *t.cancel_requested_at)});
        else if (terminal(t.status))
            rows.push_back({"cancel", std::string("too late: the task ") + to_string(t.status) + " first"});
    }
    if (!t.published && !terminal(t.status)) rows.push_back({"published", "not yet (the sweeper will publish it)"});
    for (auto& r : rows) r[0] += ":";
    std::string text = format_table({"", ""}, rows);
    std::cout << text.substr(text.find('\n') + 1);
    return kExitOk;
}

int cmd_result(const Config& cfg, int64_t id, const std::string& format, const Output&) {
    print_result(id, TaskService(cfg).result(id), format);
    return kExitOk;
}

int cmd_list(const Config& cfg, const TaskStore::ListFilter& filter, const Output& out) {
    TaskService svc(cfg);
    auto tasks = svc.list(filter);
    const int64_t now = svc.now();
    if (out.json) {
        json arr = json::array();
        for (const auto& t : tasks) arr.push_back(task_json(t, now));
        std::cout << arr.dump() << "\n";
        return kExitOk;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : tasks) {
        std::string sql = t.sql;
        std::replace(sql.begin(), sql.end(), '\n', ' ');
        if (sql.size() > 60) sql = sql.substr(0, 57) + "...";
        rows.push_back({std::to_string(t.id), status_text(t), t.submitter, std::to_string(t.attempts),
                        format_time(t.created_at), elapsed_text(t, now),
                        t.row_count ? std::to_string(*t.row_count) : "", sql});
    }
    // ELAPSED: how long a running task has been running, or an ended one ran.
    std::cout << format_table({"ID", "STATUS", "USER", "ATTEMPTS", "CREATED", "ELAPSED", "ROWS", "SQL"}, rows);
    return kExitOk;
}

int cmd_wait(const Config& cfg, int64_t id, double timeout_s, const Output& out) {
    // On a terminal: what the task is doing while we wait, overwritten in place.
    ProgressLine line;
    TaskService svc(cfg);
    auto w = svc.wait(id, timeout_s > 0 ? std::max<int64_t>(1, int64_t(timeout_s * 1000)) : 0, wait_progress(line, id, svc));
    svc.done_waiting();
    line.clear();
    const Task& t = w.task;
    if (out.json) {
        json j = task_json(t, svc);
        j["timed_out"] = w.timed_out;
        std::cout << j.dump() << "\n";
    } else if (!w.timed_out) {
        std::cout << "task " << id << " " << to_string(t.status) << (t.error ? ": " + *t.error : "") << "\n";
    } else {
        std::ostringstream s;
        s << "task " << id << " is still " << to_string(t.status) << " after " << timeout_s << " s";
        return out.error(s.str(), exit_for(t.status));
    }
    return exit_for(t.status);
}

int cmd_cancel(const Config& cfg, int64_t id, const std::string& by, TaskService::WaitForStop wait, const Output& out) {
    using Kind = TaskService::Cancelled::Kind;
    TaskService svc(cfg);
    auto r = svc.cancel(id, by, wait);
    svc.done_waiting();
    auto say = [&](const std::string& text, json j, int code) {
        if (out.json) std::cout << j.dump() << "\n";
        else (code == kExitOk ? std::cout : std::cerr) << (code == kExitOk ? "" : "sqlq: ") << text << "\n";
        return code;
    };
    const std::string task = "task " + std::to_string(id);
    const std::string kept = r.status == Status::succeeded ? " (its result is kept)" : "";
    switch (r.kind) {
    case Kind::already_finished:
        return say(task + " already " + to_string(r.status) + "; nothing to cancel" + kept,
                   {{"id", id}, {"cancelled", false}, {"status", to_string(r.status)}}, kExitConflict);
    case Kind::cancelled_queued:
        return say(task + " cancelled (it was queued)",
                   {{"id", id}, {"cancelled", true}, {"status", "cancelled"}, {"was", "queued"}}, kExitOk);
    case Kind::requested:
        return say(task + ": cancel requested (it is running)",
                   {{"id", id}, {"cancelled", false}, {"status", "running"}, {"requested", true}}, kExitOk);
    case Kind::stopped:
        return say(task + " cancelled; the query stopped in " + format_duration(r.stop_ms),
                   {{"id", id}, {"cancelled", true}, {"status", "cancelled"}, {"was", "running"}, {"stop_ms", r.stop_ms}},
                   kExitOk);
    case Kind::finished_first:
        return say(task + " " + to_string(r.status) + " before the cancel took effect" + kept,
                   {{"id", id}, {"cancelled", false}, {"status", to_string(r.status)}}, kExitConflict);
    case Kind::still_running:
        break;
    }
    return say(task + ": cancel requested, but it is still running",
               {{"id", id}, {"cancelled", false}, {"status", to_string(r.status)}, {"requested", true}}, kExitTimeout);
}

int cmd_workers(const Config& cfg, const Output& out) {
    auto fleets = TaskService(cfg).fleets();
    json arr = json::array();
    for (const auto& f : fleets) {
        json workers = json::parse(f.record.workers_json, nullptr, false);
        if (workers.is_discarded() || !workers.is_array()) workers = json::array();
        arr.push_back({{"host", f.record.host},
                       {"run_dir", f.record.run_dir},
                       {"supervisor_pid", f.record.pid},
                       {"heartbeat_age_ms", f.record.age_ms},
                       {"interval_ms", f.record.interval_ms},
                       {"stale", f.stale},
                       {"workers", std::move(workers)}});
    }
    if (out.json) {
        std::cout << arr.dump() << "\n";
        return kExitOk;
    }
    if (arr.empty()) {
        std::cout << "no fleet has recorded itself in this task store (a supervisor does at every sweep)\n";
        return kExitOk;
    }
    auto num = [](const json& v) { return v.is_null() ? std::string("-") : std::to_string(v.get<int64_t>()); };
    std::vector<std::vector<std::string>> rows;
    for (const json& f : arr) {
        const std::string age = format_duration(f["heartbeat_age_ms"].get<int64_t>());
        const std::string beat = f["stale"].get<bool>() ? "NO HEARTBEAT for " + age : age + " ago";
        const std::string fleet = f["host"].get<std::string>() + " (supervisor " + num(f["supervisor_pid"]) + ")";
        if (f["workers"].empty()) rows.push_back({fleet, beat, "-", "-", "no workers", "-", "-"});
        for (const json& w : f["workers"]) {
            std::string state = w.value("state", std::string("?"));
            if (w.contains("waiting_for")) state += " for task " + num(w["waiting_for"]);
            rows.push_back({fleet, beat, num(w.value("slot", json())), num(w.value("pid", json())), state,
                            num(w.value("task", json())),
                            w.value("task_ms", json()).is_null() ? "-" : format_duration(w["task_ms"].get<int64_t>())});
        }
    }
    std::cout << format_table({"FLEET", "HEARTBEAT", "SLOT", "PID", "STATE", "TASK", "TASK TIME"}, rows);
    return kExitOk;
}

int cmd_audit(const Config& cfg, const Output& out) {
    auto a = TaskService(cfg).audit();
    const auto& f = a.store;
    auto by = [&](const char* status) {
        auto it = f.by_status.find(status);
        return it == f.by_status.end() ? int64_t(0) : it->second;
    };
    const int64_t queued = by("queued"), running = by("running"), submitted = a.submitted, lost = a.lost;
    const int64_t queue_left = a.queue_left, dead_lettered = a.dead_lettered;
    const auto& dead_reasons = a.dead_letter_reasons;
    const std::string& broker_error = a.broker_error;
    auto pct = [&](double p) -> json {
        auto v = a.recovery_percentile(p);
        return v ? json(*v) : json(nullptr);
    };
    json broker = nullptr;
    if (broker_error.empty())
        broker = {{"queue", cfg.broker.queue}, {"ready", a.queue_left}, {"consumers", a.consumers},
                  {"dead_letter_queue", cfg.broker.dead_letter_queue()}, {"dead_lettered", a.dead_lettered}};
    json j = {{"submitted", submitted},
              {"queued", queued},
              {"running", running},
              {"succeeded", by("succeeded")},
              {"failed", by("failed")},
              {"cancelled", by("cancelled")},
              {"unpublished", f.unpublished},
              {"lost", lost},
              {"stuck", f.stuck},
              {"stuck_ids", f.stuck_ids},
              {"duplicate_outcomes", f.duplicate_outcomes},
              {"reexecuted", f.reexecuted},
              {"dead_lettered", dead_lettered},
              {"dead_letter_reasons", dead_reasons},
              {"queue_left", queue_left},
              {"recovery_ms_p50", pct(0.5)},
              {"recovery_ms_p99", pct(0.99)},
              {"recoveries", f.recovery_ms.size()},
              {"broker", broker}};
    if (!broker_error.empty()) j["broker_error"] = broker_error;
    bool bad = a.bad();
    if (out.json) {
        std::cout << j.dump() << "\n";
    } else {
        std::cout << "submitted=" << submitted << " succeeded=" << j["succeeded"] << " failed=" << j["failed"]
                  << " cancelled=" << j["cancelled"] << " queued=" << queued << " running=" << running
                  << " lost=" << lost << " stuck=" << f.stuck << " duplicate_outcomes=" << f.duplicate_outcomes
                  << " reexecuted=" << f.reexecuted << " dead_lettered=" << dead_lettered
                  << " queue_left=" << queue_left << " unpublished=" << f.unpublished;
        if (!f.recovery_ms.empty())
            std::cout << " recovery_p50_ms=" << pct(0.5) << " recovery_p99_ms=" << pct(0.99);
        std::cout << "\n";
        for (auto& [why, n] : dead_reasons) std::cout << "  dead-lettered " << n << ": " << why << "\n";
        if (!f.stuck_ids.empty()) {
            std::cout << "  stuck (running, no live worker):";
            for (auto id : f.stuck_ids) std::cout << " " << id;
            std::cout << "\n";
        }
        if (!broker_error.empty()) out.error("audit: " + broker_error, kExitError);
    }
    return bad ? kExitError : kExitOk;
}

}  // namespace sqlq

namespace sqlq {

int cmd_run(const Config& cfg, const RunOptions& o, const Output& out) {
    const std::string sql = read_one_sql(o.sql, o.file, "run");
    const std::string format = out.json ? "json" : o.format;
    // From here on, an interrupt cancels the task rather than leave it to run unseen; one that
    // comes during the submit is acted on once the task's id is known.
    InterruptGuard guard;
    TaskService svc(cfg);
    auto s = svc.submit({sql}, o.user);
    svc.close();  // one task: the connection is not needed again
    const int64_t id = s.ids.front();
    const std::string task = "task " + std::to_string(id);

    // How the command ends when it gives the task up (interrupt, timeout, no broker): cancel it,
    // and say what became of it. Returns nullopt when the task had ended first: the caller goes
    // on to print its outcome.
    auto give_up = [&](const std::string& why, int code) -> std::optional<int> {
        using Kind = TaskService::Cancelled::Kind;
        auto c = svc.cancel(id, o.user, TaskService::WaitForStop::yes);
        std::string what;
        switch (c.kind) {
        case Kind::cancelled_queued: what = task + " cancelled (it was queued)"; break;
        case Kind::stopped: what = task + " cancelled; the query stopped in " + format_duration(c.stop_ms); break;
        case Kind::already_finished:
        case Kind::finished_first:
            if (c.status != Status::cancelled) {
                std::cerr << "sqlq: " << why << ", but " << task << " had " << to_string(c.status) << " first\n";
                return std::nullopt;
            }
            what = task + " cancelled";
            break;
        case Kind::requested:
        case Kind::still_running:
            what = "cancel requested for " + task + ", but it is still running";
            code = kExitTimeout;
            break;
        }
        if (out.json) {  // like wait --json: the task is the answer, its exit code the verdict
            json j = task_json(svc.show(id), svc);
            j["interrupted"] = true;
            j["why"] = why + ": " + what;
            std::cout << j.dump() << "\n";
            return code;
        }
        return out.error(why + ": " + what, code);
    };

    if (!s.problem.empty()) {
        // Stored, but the broker did not confirm its message: the sweeper would publish it later,
        // with nobody waiting for the answer. run is all or nothing.
        auto code = give_up("run: the broker did not take " + task + " (" + s.problem + ")", kExitError);
        if (code) return *code;
    }

    ProgressLine line;
    const int64_t timeout_ms = o.timeout_s > 0 ? std::max<int64_t>(1, int64_t(o.timeout_s * 1000)) : 0;
    auto w = g_interrupted ? TaskService::Waited{svc.show(id), false, true}
                           : svc.wait(id, timeout_ms, wait_progress(line, id, svc), [] { return g_interrupted != 0; });
    svc.done_waiting();
    line.clear();
    if (w.interrupted || w.timed_out) {
        std::ostringstream why;
        if (w.interrupted) why << "interrupted";
        else why << task << " still " << to_string(w.task.status) << " after " << o.timeout_s << " s";
        auto code = give_up(why.str(), w.interrupted ? kExitTaskCancelled : kExitTimeout);
        if (code) return *code;
        w.task = svc.show(id);
    }

    const Task& t = w.task;
    if (t.status == Status::succeeded) {
        print_result(id, svc.result(id), format);
        return kExitOk;
    }
    if (out.json) {
        std::cout << task_json(t, svc).dump() << "\n";
        return exit_for(t.status);
    }
    return out.error(task + " " + to_string(t.status) + (t.error ? ": " + *t.error : ""), exit_for(t.status));
}

}  // namespace sqlq
