#include "client/commands.h"

#include <algorithm>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "amqp/connection.h"
#include "task/message.h"
#include "task/store.h"
#include "util/clock.h"
#include "util/control.h"
#include "util/error.h"
#include "util/table.h"

namespace sqlq {

using json = nlohmann::json;

namespace {

constexpr int kConfirmTimeoutMs = 10000;

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

json task_json(const Task& t) {
    json j = {{"id", t.id},
              {"sql", t.sql},
              {"submitter", t.submitter},
              {"status", to_string(t.status)},
              {"published", t.published},
              {"attempts", t.attempts},
              {"executions", t.executions},
              {"owner", t.owner ? json(*t.owner) : json(nullptr)},
              {"created_at", t.created_at},
              {"started_at", t.started_at ? json(*t.started_at) : json(nullptr)},
              {"finished_at", t.finished_at ? json(*t.finished_at) : json(nullptr)},
              {"error", t.error ? json(*t.error) : json(nullptr)},
              {"rows", t.row_count ? json(*t.row_count) : json(nullptr)},
              {"result_bytes", t.result_bytes ? json(*t.result_bytes) : json(nullptr)},
              {"result_ref", t.result_ref ? json(*t.result_ref) : json(nullptr)},
              {"cancel_requested_at", t.cancel_requested_at ? json(*t.cancel_requested_at) : json(nullptr)},
              {"cancelled_by", t.cancelled_by ? json(*t.cancelled_by) : json(nullptr)},
              {"outcomes", t.outcomes}};
    if (t.status == Status::cancelled && t.cancel_requested_at && t.finished_at)
        j["stop_ms"] = *t.finished_at - *t.cancel_requested_at;
    else
        j["stop_ms"] = nullptr;
    return j;
}

Task must_get(TaskStore& store, int64_t id) {
    auto t = store.get(id);
    if (!t) throw Error("no task " + std::to_string(id), kExitNotFound);
    return *t;
}

int exit_for(Status s) {
    switch (s) {
    case Status::succeeded: return kExitOk;
    case Status::failed: return kExitTaskFailed;
    case Status::cancelled: return kExitTaskCancelled;
    default: return kExitTimeout;
    }
}

std::string cell(const json& v) {
    if (v.is_null()) return "";
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("blob_hex")) return "x'" + v["blob_hex"].get<std::string>() + "'";
    return v.dump();
}

}  // namespace

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
        std::string sql = !o.sql.empty() ? o.sql : !o.file.empty() ? read_file(o.file) : read_all(std::cin);
        if (blank(sql)) throw Error("submit: empty SQL", kExitUsage);
        sqls.push_back(sql);
    }

    TaskStore store(cfg.store.path, cfg.store);
    std::vector<int64_t> ids = store.insert_batch(sqls, o.user);

    // Publish. The rows are already durable: whatever is not confirmed stays unpublished and the
    // supervisor's sweeper publishes it later.
    std::string problem;
    size_t confirmed = 0;
    try {
        amqp::Connection conn(cfg.broker, "sqlq submit");
        conn.declare_topology();
        conn.enable_confirms();
        constexpr size_t kWindow = 500;  // publishes in flight before we wait for their confirms
        for (size_t first = 0; first < ids.size(); first += kWindow) {
            size_t last = std::min(ids.size(), first + kWindow);
            uint64_t tag0 = 0, tag1 = 0;
            for (size_t i = first; i < last; ++i) {
                uint64_t tag = conn.publish(cfg.broker.queue, encode_message(ids[i]));
                if (i == first) tag0 = tag;
                tag1 = tag;
            }
            auto acked = conn.wait_confirms(tag0, tag1, kConfirmTimeoutMs);
            std::vector<int64_t> ok;
            for (size_t i = first; i < last; ++i)
                if (acked.count(tag0 + (i - first))) ok.push_back(ids[i]);
            store.mark_published(ok);
            confirmed += ok.size();
            if (acked.size() != last - first) problem = "the broker did not confirm every publish";
        }
        conn.close();
    } catch (const amqp::AmqpError& e) {
        problem = e.what();
    }

    if (out.json) {
        json j = sqls.size() == 1 && o.batch.empty() ? json{{"id", ids[0]}} : json{{"ids", ids}};
        j["published"] = confirmed;
        std::cout << j.dump() << "\n";
    } else {
        for (int64_t id : ids) std::cout << id << "\n";
    }
    if (!problem.empty()) {
        std::cerr << "sqlq: " << (ids.size() - confirmed) << " of " << ids.size()
                  << " task(s) stored but not yet published (" << problem
                  << "); the supervisor's sweeper will publish them\n";
        return kExitError;
    }
    return kExitOk;
}

int cmd_show(const Config& cfg, int64_t id, const Output& out) {
    TaskStore store(cfg.store.path, cfg.store);
    Task t = must_get(store, id);
    if (out.json) {
        std::cout << task_json(t).dump() << "\n";
        return kExitOk;
    }
    auto opt = [](const std::optional<std::string>& s) { return s ? *s : std::string("-"); };
    std::vector<std::vector<std::string>> rows = {
        {"id", std::to_string(t.id)},
        {"status", to_string(t.status)},
        {"submitter", t.submitter},
        {"sql", t.sql},
        {"attempts", std::to_string(t.attempts)},
        {"executions", std::to_string(t.executions)},
        {"owner", opt(t.owner)},
        {"created", format_time(t.created_at)},
        {"started", format_time(t.started_at)},
        {"finished", format_time(t.finished_at)},
    };
    if (t.started_at && t.finished_at) rows.push_back({"ran", format_duration(*t.finished_at - *t.started_at)});
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
    TaskStore store(cfg.store.path, cfg.store);
    Task t = must_get(store, id);
    if (t.status != Status::succeeded) {
        std::string why = "task " + std::to_string(id) + " is " + to_string(t.status);
        if (t.error) why += ": " + *t.error;
        throw Error(why + "; it has no result", terminal(t.status) ? exit_for(t.status) : kExitConflict);
    }
    auto r = store.result(id);
    if (!r) throw Error("task " + std::to_string(id) + ": its result has expired ([store] result_ttl_s)", kExitNotFound);
    json cols = json::parse(r->columns_json);
    json rows = json::parse(r->rows_json);
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
    return kExitOk;
}

int cmd_list(const Config& cfg, const std::string& status, int64_t limit, const Output& out) {
    TaskStore store(cfg.store.path, cfg.store);
    auto tasks = store.list(status.empty() ? std::nullopt : parse_status(status), limit);
    if (out.json) {
        json arr = json::array();
        for (const auto& t : tasks) arr.push_back(task_json(t));
        std::cout << arr.dump() << "\n";
        return kExitOk;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : tasks) {
        std::string sql = t.sql;
        std::replace(sql.begin(), sql.end(), '\n', ' ');
        if (sql.size() > 60) sql = sql.substr(0, 57) + "...";
        rows.push_back({std::to_string(t.id), to_string(t.status), t.submitter, std::to_string(t.attempts),
                        format_time(t.created_at), t.row_count ? std::to_string(*t.row_count) : "", sql});
    }
    std::cout << format_table({"ID", "STATUS", "USER", "ATTEMPTS", "CREATED", "ROWS", "SQL"}, rows);
    return kExitOk;
}

int cmd_wait(const Config& cfg, int64_t id, double timeout_s, const Output& out) {
    TaskStore store(cfg.store.path, cfg.store);
    const int64_t deadline = timeout_s > 0 ? mono_ms() + int64_t(timeout_s * 1000) : INT64_MAX;
    int64_t pause = 5;
    for (;;) {
        Task t = must_get(store, id);
        if (terminal(t.status) || mono_ms() >= deadline) {
            if (out.json) {
                json j = task_json(t);
                j["timed_out"] = !terminal(t.status);
                std::cout << j.dump() << "\n";
            } else if (terminal(t.status)) {
                std::cout << "task " << id << " " << to_string(t.status) << (t.error ? ": " + *t.error : "") << "\n";
            } else {
                std::cerr << "sqlq: task " << id << " is still " << to_string(t.status) << " after " << timeout_s
                          << " s\n";
            }
            return exit_for(t.status);
        }
        // SQLite has no notifications: poll, quickly at first.
        timespec ts{0, long(std::min<int64_t>(pause, std::max<int64_t>(deadline - mono_ms(), 1))) * 1000000};
        nanosleep(&ts, nullptr);
        pause = std::min<int64_t>(pause * 2, 100);
    }
}

int cmd_cancel(const Config& cfg, int64_t id, const std::string& by, bool wait, const Output& out) {
    TaskStore store(cfg.store.path, cfg.store);
    auto r = store.request_cancel(id, by);
    auto say = [&](const std::string& text, json j, int code) {
        if (out.json) std::cout << j.dump() << "\n";
        else (code == kExitOk ? std::cout : std::cerr) << (code == kExitOk ? "" : "sqlq: ") << text << "\n";
        return code;
    };
    switch (r.kind) {
    case TaskStore::CancelKind::unknown:
        throw Error("no task " + std::to_string(id), kExitNotFound);
    case TaskStore::CancelKind::already_finished:
        return say("task " + std::to_string(id) + " already " + to_string(r.status) +
                       "; nothing to cancel" + (r.status == Status::succeeded ? " (its result is kept)" : ""),
                   {{"id", id}, {"cancelled", false}, {"status", to_string(r.status)}}, kExitConflict);
    case TaskStore::CancelKind::cancelled:
        return say("task " + std::to_string(id) + " cancelled (it was queued)",
                   {{"id", id}, {"cancelled", true}, {"status", "cancelled"}, {"was", "queued"}}, kExitOk);
    case TaskStore::CancelKind::requested:
        break;
    }
    // Running: its worker sees the request within tens of ms. Tell the supervisor too, so that
    // it kills a worker that does not stop within cancel_grace_ms.
    try {
        control_request(cfg.supervisor.run_dir, control::Request::cancel(id), 2000);
    } catch (const Error&) {
        // No supervisor, or a busy one: the worker stops the query on its own all the same.
    }
    if (!wait)
        return say("task " + std::to_string(id) + ": cancel requested (it is running)",
                   {{"id", id}, {"cancelled", false}, {"status", "running"}, {"requested", true}}, kExitOk);
    const int64_t deadline = mono_ms() + cfg.supervisor.cancel_grace_ms + cfg.store.lease_ms + 10000;
    for (;;) {
        Task t = must_get(store, id);
        if (terminal(t.status)) {
            if (t.status == Status::cancelled) {
                int64_t took = t.finished_at && t.cancel_requested_at ? *t.finished_at - *t.cancel_requested_at : 0;
                return say("task " + std::to_string(id) + " cancelled; the query stopped in " + format_duration(took),
                           {{"id", id}, {"cancelled", true}, {"status", "cancelled"}, {"was", "running"},
                            {"stop_ms", took}},
                           kExitOk);
            }
            return say("task " + std::to_string(id) + " " + to_string(t.status) +
                           " before the cancel took effect" + (t.status == Status::succeeded ? " (its result is kept)" : ""),
                       {{"id", id}, {"cancelled", false}, {"status", to_string(t.status)}}, kExitConflict);
        }
        if (mono_ms() > deadline)
            return say("task " + std::to_string(id) + ": cancel requested, but it is still running",
                       {{"id", id}, {"cancelled", false}, {"status", to_string(t.status)}, {"requested", true}},
                       kExitTimeout);
        timespec ts{0, 10 * 1000000};
        nanosleep(&ts, nullptr);
    }
}

int cmd_audit(const Config& cfg, const Output& out) {
    TaskStore store(cfg.store.path, cfg.store);
    auto f = store.audit();
    json broker = nullptr;
    std::map<std::string, int64_t> dead_reasons;
    int64_t queue_left = -1, dead_lettered = -1;
    std::string broker_error;
    try {
        amqp::Connection conn(cfg.broker, "sqlq audit");
        conn.declare_topology();
        auto q = conn.inspect(cfg.broker.queue);
        auto d = conn.inspect(cfg.broker.dead_letter_queue());
        queue_left = q.messages;
        dead_lettered = d.messages;
        // Read (without acking) what lies in the dead-letter queue and say why each got there:
        // closing the channel puts every message back.
        for (uint32_t i = 0; i < std::min<uint32_t>(d.messages, 2000); ++i) {
            auto m = conn.get(cfg.broker.dead_letter_queue());
            if (!m) break;
            auto decoded = decode_message(m->body);
            std::string why = m->dead_letter_reason.empty() ? "unknown" : m->dead_letter_reason;
            if (auto* bad = std::get_if<BadMessage>(&decoded)) why += ": " + bad->why;
            else if (!store.get(std::get<int64_t>(decoded))) why += ": unknown task id";
            else why += ": a valid task";
            ++dead_reasons[why];
        }
        conn.close();
        broker = {{"queue", cfg.broker.queue}, {"ready", q.messages}, {"consumers", q.consumers},
                  {"dead_letter_queue", cfg.broker.dead_letter_queue()}, {"dead_lettered", d.messages}};
    } catch (const amqp::AmqpError& e) {
        broker_error = e.what();
    }
    // Lost: not terminal, no message waiting for it and no live worker on it. Queued tasks can
    // only be judged when the queue is empty (else their message may be in it).
    int64_t queued = f.by_status["queued"], running = f.by_status["running"];
    int64_t lost = queue_left == 0 ? f.queued_stale : 0;
    int64_t submitted = 0;
    for (auto& [k, v] : f.by_status) submitted += v;
    auto pct = [&](double p) -> json {
        if (f.recovery_ms.empty()) return nullptr;
        size_t i = std::min(f.recovery_ms.size() - 1, size_t(p * double(f.recovery_ms.size())));
        return f.recovery_ms[i];
    };
    json j = {{"submitted", submitted},
              {"queued", queued},
              {"running", running},
              {"succeeded", f.by_status["succeeded"]},
              {"failed", f.by_status["failed"]},
              {"cancelled", f.by_status["cancelled"]},
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
    bool bad = lost > 0 || f.stuck > 0 || f.duplicate_outcomes > 0 || !broker_error.empty();
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
        if (!broker_error.empty()) std::cerr << "sqlq: audit: " << broker_error << "\n";
    }
    return bad ? kExitError : kExitOk;
}

}  // namespace sqlq
