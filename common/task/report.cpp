#include "task/report.h"

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <fcntl.h>
#include <unistd.h>

#include "util/clock.h"

namespace sqlq {

std::string format_report(const ReportLine& r) {
    switch (r.what) {
    case Report::starting: return "starting\n";
    case Report::ready: return "ready\n";
    case Report::busy: return "busy " + std::to_string(r.task_id) + "\n";
    case Report::alive: return "alive\n";
    case Report::stopping: return "stopping\n";
    case Report::waiting: return "waiting " + std::to_string(r.task_id) + "\n";
    case Report::target: return "target " + std::to_string(r.task_id) + "\n";
    case Report::done:
        return "done " + std::to_string(r.task_id) + " " + to_string(r.status) + " " + std::to_string(r.wait_ms) + " " +
               std::to_string(r.run_ms) + " " + std::to_string(r.cancel_ms) + "\n";
    }
    return "alive\n";
}

namespace {

// The next space-separated word of `rest`, taken off it.
std::string_view word(std::string_view& rest) {
    auto sp = rest.find(' ');
    std::string_view w = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    return w;
}

bool integer(std::string_view w, int64_t& out) {
    auto [p, ec] = std::from_chars(w.data(), w.data() + w.size(), out);
    return !w.empty() && ec == std::errc() && p == w.data() + w.size();
}

// "<task_id> <status> <wait_ms> <run_ms> <cancel_ms>", every field there and nothing after.
std::optional<ReportLine> parse_done(std::string_view rest) {
    if (rest.empty() || rest.back() == ' ' || rest.find("  ") != std::string_view::npos) return std::nullopt;
    ReportLine r{Report::done};
    if (!integer(word(rest), r.task_id) || r.task_id <= 0) return std::nullopt;
    auto status = parse_status(std::string(word(rest)));
    if (!status || !terminal(*status)) return std::nullopt;
    r.status = *status;
    for (int64_t* v : {&r.wait_ms, &r.run_ms, &r.cancel_ms})
        if (!integer(word(rest), *v) || *v < -1) return std::nullopt;
    if (!rest.empty()) return std::nullopt;
    return r;
}

}  // namespace

std::optional<ReportLine> parse_report(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (line == "starting") return ReportLine{Report::starting};
    if (line == "ready") return ReportLine{Report::ready};
    if (line == "alive") return ReportLine{Report::alive};
    if (line == "stopping") return ReportLine{Report::stopping};
    if (line.substr(0, 5) == "done ") return parse_done(line.substr(5));
    for (auto [word, what] : {std::pair{std::string_view("busy "), Report::busy},
                              std::pair{std::string_view("waiting "), Report::waiting},
                              std::pair{std::string_view("target "), Report::target}}) {
        if (line.substr(0, word.size()) != word) continue;
        int64_t id = 0;
        auto rest = line.substr(word.size());
        auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), id);
        if (ec == std::errc() && p == rest.data() + rest.size() && id > 0) return ReportLine{what, id};
    }
    return std::nullopt;
}

Reporter::Reporter() {
    if (const char* s = std::getenv("SQLQ_STATUS_FD")) {
        int fd = std::atoi(s);
        if (fd > 2 && fcntl(fd, F_GETFD) != -1) {
            fd_ = fd;
            fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
            fcntl(fd_, F_SETFD, FD_CLOEXEC);
        }
    }
}

void Reporter::send(Report what, int64_t task_id) {
    ReportLine r;
    r.what = what;
    r.task_id = task_id;
    send(r);
}

void Reporter::send(const ReportLine& r) {
    if (fd_ < 0) return;
    last_ms_ = mono_ms();
    std::string line = deferred_.empty() ? format_report(r) : std::move(deferred_) + format_report(r);
    deferred_.clear();
    // A full pipe means the supervisor is behind: dropping a line is better than blocking.
    ssize_t n;
    do n = ::write(fd_, line.data(), line.size());
    while (n < 0 && errno == EINTR);
}

void Reporter::defer(const ReportLine& r) {
    if (fd_ >= 0) deferred_ += format_report(r);
}

void Reporter::alive(int64_t interval_ms) {
    if (fd_ < 0 || mono_ms() - last_ms_ < interval_ms) return;
    send(Report::alive);
}

}  // namespace sqlq
