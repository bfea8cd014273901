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
    }
    return "alive\n";
}

std::optional<ReportLine> parse_report(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (line == "starting") return ReportLine{Report::starting};
    if (line == "ready") return ReportLine{Report::ready};
    if (line == "alive") return ReportLine{Report::alive};
    if (line == "stopping") return ReportLine{Report::stopping};
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
    if (fd_ < 0) return;
    last_ms_ = mono_ms();
    std::string line = format_report({what, task_id});
    // A full pipe means the supervisor is behind: dropping a line is better than blocking.
    ssize_t n;
    do n = ::write(fd_, line.data(), line.size());
    while (n < 0 && errno == EINTR);
}

void Reporter::alive(int64_t interval_ms) {
    if (fd_ < 0 || mono_ms() - last_ms_ < interval_ms) return;
    send(Report::alive);
}

}  // namespace sqlq
