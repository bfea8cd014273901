#pragma once
// Rows → the JSON text that the task store keeps and every front end reads:
// columns ["a","b"], rows [[1,"x"],[2,null]], a blob as {"blob_hex":"00ff"}. Engines hand it
// neutral values (null, integer, double, text, blob), so every target stores the same bytes
// for the same values.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "task/result.h"

namespace sqlq {

class RowEncoder {
public:
    RowEncoder();

    // The column names, left to right, before the first row.
    void column(std::string_view name);

    // The values of one row, left to right, then end_row().
    void null();
    void integer(int64_t v);
    void real(double v);
    void text(std::string_view v);  // UTF-8; invalid sequences are stored as U+FFFD
    void blob(const void* data, size_t size);

    // The payload of the values given since the last end_row(): 8 bytes per number, 1 per
    // null, the length of a text or blob. query.max_bytes caps the sum of these, not the JSON.
    int64_t row_bytes() const noexcept { return row_bytes_; }
    // Appends the row to the result.
    void end_row();
    int64_t rows() const noexcept { return rows_; }

    // The columns and the rows ended so far; the encoder is spent afterwards.
    ResultData finish() &&;

private:
    nlohmann::json columns_;
    nlohmann::json row_;      // the row being filled
    std::string rows_json_;   // "[" and the rows ended so far, comma-separated
    int64_t rows_ = 0;
    int64_t row_bytes_ = 0;
};

}  // namespace sqlq
