#pragma once
// A line of progress on stderr, redrawn in place ("\r"), for a person watching a terminal:
// nothing at all when stderr is not a terminal (a pipe, a file, a CI log), so scripts see the
// same output as before. The destructor clears the line.
#include <cstdint>
#include <string>

namespace sqlq {

class ProgressLine {
public:
    ProgressLine();  // on when stderr is a terminal
    explicit ProgressLine(bool on) : on_(on) {}
    ~ProgressLine() { clear(); }
    ProgressLine(const ProgressLine&) = delete;
    ProgressLine& operator=(const ProgressLine&) = delete;

    bool on() const { return on_; }
    // Redraws the line with `text`: the first time at once, then at most every 100 ms (a
    // terminal needs no more, and a slow one would hold the program up), unless `now` says
    // the text must be seen (a last state).
    enum class Draw : bool { when_due, now };
    void show(const std::string& text, Draw draw = Draw::when_due);
    // Erases the line, leaving the cursor where it began.
    void clear();

private:
    bool on_ = false;
    bool drawn_ = false;
    int64_t last_ms_ = -1;
};

// "[#######-------------]  35%  1750/5000", 20 characters of bar.
std::string progress_bar(size_t done, size_t total);

}  // namespace sqlq
