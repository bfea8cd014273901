#pragma once
// Rows → the JSON text that the task store keeps and every front end reads:
// columns ["a","b"], rows [[1,"x"],[2,null]], a blob as {"blob_hex":"00ff"}. Engines hand it
// neutral values (null, integer, double, text, blob; boolean and JSON values for engines that
// have them), so every target stores the same bytes for the same values.
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
    void boolean(bool v);
    // A value that is itself JSON (a PostgreSQL json/jsonb value, an array): stored as is.
    void json(nlohmann::json v);

    // What the row given since the last end_row() will take in the stored JSON, separators
    // included, counted before it is encoded (a text of control characters grows sixfold as
    // JSON: the cap must stop it before that copy is made). query.max_bytes caps the sum of
    // header_bytes() and of every row's row_bytes(): the bytes the store will keep.
    int64_t row_bytes() const noexcept { return row_bytes_ + 2 + (row_values_ > 1 ? row_values_ - 1 : 0) + (rows_ ? 1 : 0); }
    // The column names' JSON and the rows' brackets, once the columns are given.
    int64_t header_bytes() const;
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
    int64_t row_bytes_ = 0;   // the encoded values of the row being filled
    int64_t row_values_ = 0;
};

}  // namespace sqlq
