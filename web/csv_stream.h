#pragma once
// The CSV download of a result (RFC 4180, the header first), made while it is sent: the stored
// JSON text of the rows is read a block at a time (TaskStore::read_result) and cut into rows at
// its top level, each row parsed on its own. What is in memory at once is one block, one row
// and the piece being sent, however big the result.
#include <cstddef>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "task/store.h"

namespace sqlq::web {

class CsvStream {
public:
    explicit CsvStream(std::unique_ptr<ResultReader> reader, size_t block = 64 * 1024);
    // The next piece of the CSV, whole records of about `want` bytes or more (one record may be
    // longer); "" once everything was given. Throws sqlq::Error when the stored text is not an
    // array of arrays, StoreError when it cannot be read.
    std::string next(size_t want = 64 * 1024);

private:
    // Feeds one character of the rows' text; appends a finished row's record to `out`.
    void take(char c, std::string& out);
    [[noreturn]] void malformed(const std::string& why) const;

    std::unique_ptr<ResultReader> reader_;
    std::string block_;
    size_t pos_ = 0, len_ = 0;
    int64_t offset_ = 0;     // of block_[pos_] in the rows' text, for errors
    bool header_sent_ = false;
    bool ended_ = false;     // the closing ']' of the rows was seen
    int depth_ = 0;          // brackets and braces open
    bool in_string_ = false;
    bool escaped_ = false;
    std::string row_;        // the text of the row being read (depth_ >= 2)
};

// One JSON value as a CSV field: NULL as an empty field, a string as it is, a blob as x'hex',
// anything else as its JSON text.
std::string csv_field(const nlohmann::json& v);

}  // namespace sqlq::web
