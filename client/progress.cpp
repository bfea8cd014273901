#include "client/progress.h"

#include <cstdio>
#include <unistd.h>

#include "util/clock.h"

namespace sqlq {

ProgressLine::ProgressLine() : on_(::isatty(STDERR_FILENO) == 1) {}

void ProgressLine::show(const std::string& text, Draw draw) {
    if (!on_) return;
    const int64_t now = mono_ms();
    if (draw == Draw::when_due && last_ms_ >= 0 && now - last_ms_ < 100) return;
    last_ms_ = now;
    // \r to the line's start, the text, then erase what a longer earlier text left (EL, "\033[K").
    std::fprintf(stderr, "\r%s\033[K", text.c_str());
    std::fflush(stderr);
    drawn_ = true;
}

void ProgressLine::clear() {
    if (!drawn_) return;
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    drawn_ = false;
}

std::string progress_bar(size_t done, size_t total) {
    constexpr size_t kWidth = 20;
    const size_t filled = total ? done * kWidth / total : kWidth;
    char tail[64];
    std::snprintf(tail, sizeof tail, "] %3zu%%  %zu/%zu", total ? done * 100 / total : 100, done, total);
    return "[" + std::string(filled, '#') + std::string(kWidth - filled, '-') + tail;
}

}  // namespace sqlq
