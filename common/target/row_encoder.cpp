#include "target/row_encoder.h"

#include <utility>

namespace sqlq {

namespace {
// Invalid UTF-8 (a text column holding Latin-1, say) becomes U+FFFD instead of throwing: the
// user still gets the rest of the result.
std::string dump(const nlohmann::json& j) {
    return j.dump(/*indent=*/-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

RowEncoder::RowEncoder() : columns_(nlohmann::json::array()), row_(nlohmann::json::array()), rows_json_("[") {}

void RowEncoder::column(std::string_view name) { columns_.push_back(std::string(name)); }

void RowEncoder::null() {
    row_.push_back(nullptr);
    row_bytes_ += 1;
}

void RowEncoder::integer(int64_t v) {
    row_.push_back(v);
    row_bytes_ += 8;
}

void RowEncoder::real(double v) {
    row_.push_back(v);
    row_bytes_ += 8;
}

void RowEncoder::text(std::string_view v) {
    row_.push_back(std::string(v));
    row_bytes_ += int64_t(v.size());
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
    row_bytes_ += int64_t(size);
}

void RowEncoder::end_row() {
    if (rows_) rows_json_ += ',';
    rows_json_ += dump(row_);
    row_.clear();
    row_bytes_ = 0;
    ++rows_;
}

ResultData RowEncoder::finish() && {
    rows_json_ += ']';
    return ResultData{dump(columns_), std::move(rows_json_)};
}

}  // namespace sqlq
