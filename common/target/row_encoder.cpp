#include "target/row_encoder.h"

#include <utility>

namespace sqlq {

namespace {
// Invalid UTF-8 (a text column holding Latin-1, say) becomes U+FFFD instead of throwing: the
// user still gets the rest of the result.
std::string dump(const nlohmann::json& j) {
    return j.dump(/*indent=*/-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

// The length of a string as nlohmann::json dumps it (quotes and escapes; invalid UTF-8 is
// counted as given, close enough for a cap).
int64_t encoded_text_size(std::string_view v) {
    int64_t n = 2;
    for (unsigned char c : v) {
        if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') n += 2;
        else if (c < 0x20) n += 6;  // \u00XX
        else n += 1;
    }
    return n;
}
}  // namespace

int64_t RowEncoder::header_bytes() const { return int64_t(dump(columns_).size()) + 2; }

RowEncoder::RowEncoder() : columns_(nlohmann::json::array()), row_(nlohmann::json::array()), rows_json_("[") {}

void RowEncoder::column(std::string_view name) { columns_.push_back(std::string(name)); }

void RowEncoder::null() {
    row_.push_back(nullptr);
    row_bytes_ += 4;  // null
    ++row_values_;
}

void RowEncoder::integer(int64_t v) {
    row_.push_back(v);
    row_bytes_ += int64_t(std::to_string(v).size());
    ++row_values_;
}

void RowEncoder::real(double v) {
    row_.push_back(v);
    row_bytes_ += int64_t(row_.back().dump().size());
    ++row_values_;
}

void RowEncoder::text(std::string_view v) {
    row_.push_back(std::string(v));
    row_bytes_ += encoded_text_size(v);
    ++row_values_;
}

void RowEncoder::blob(const void* data, size_t size) {
    // Marked, so that a front end can tell a blob from a text that looks like hex.
    static const char digits[] = "0123456789abcdef";
    const auto* p = static_cast<const unsigned char*>(data);
    std::string hex;
    hex.reserve(size * 2);
    for (size_t k = 0; k < size; ++k) {
        hex += digits[p[k] >> 4];
        hex += digits[p[k] & 15];
    }
    row_.push_back({{"blob_hex", std::move(hex)}});
    row_bytes_ += int64_t(size) * 2 + 15;  // {"blob_hex":"..."}
    ++row_values_;
}

void RowEncoder::boolean(bool v) {
    row_.push_back(v);
    row_bytes_ += v ? 4 : 5;
    ++row_values_;
}

void RowEncoder::json(nlohmann::json v) {
    row_bytes_ += int64_t(dump(v).size());
    row_.push_back(std::move(v));
    ++row_values_;
}

void RowEncoder::end_row() {
    if (rows_) rows_json_ += ',';
    rows_json_ += dump(row_);
    row_.clear();
    row_bytes_ = 0;
    row_values_ = 0;
    ++rows_;
}

ResultData RowEncoder::finish() && {
    rows_json_ += ']';
    return ResultData{dump(columns_), std::move(rows_json_)};
}

}  // namespace sqlq
