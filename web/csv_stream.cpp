#include "web/csv_stream.h"

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/table.h"

namespace sqlq::web {

using json = nlohmann::json;

std::string csv_field(const json& v) {
    if (v.is_null()) return "";
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("blob_hex") && v["blob_hex"].is_string())
        return "x'" + v["blob_hex"].get<std::string>() + "'";
    return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {
std::string record_of(const json& row) {
    std::vector<std::string> fields;
    fields.reserve(row.size());
    for (const auto& v : row) fields.push_back(csv_field(v));
    return csv_record(fields);
}
}  // namespace

CsvStream::CsvStream(std::unique_ptr<ResultReader> reader, size_t block) : reader_(std::move(reader)) {
    block_.resize(block ? block : 1);
}

void CsvStream::malformed(const std::string& why) const {
    throw Error("the stored result is not an array of rows (" + why + " at byte " + std::to_string(offset_) + ")");
}

std::string CsvStream::next(size_t want) {
    std::string out;
    if (!header_sent_) {
        header_sent_ = true;
        json cols;
        try {
            cols = json::parse(reader_->columns_json());
        } catch (const json::parse_error& e) {
            throw Error(std::string("the stored result's columns are not JSON: ") + e.what());
        }
        if (!cols.is_array()) throw Error("the stored result's columns are not a JSON array");
        out = record_of(cols);
    }
    while (out.size() < want) {
        if (pos_ == len_) {
            len_ = reader_->read(block_.data(), block_.size());
            pos_ = 0;
            if (len_ == 0) {
                if (!ended_) malformed("the text ends early");
                break;
            }
        }
        // The bytes of a string are copied as they come; only structure costs a branch each.
        for (; pos_ < len_ && out.size() < want; ++pos_, ++offset_) take(block_[pos_], out);
    }
    return out;
}

void CsvStream::take(char c, std::string& out) {
    if (in_string_) {
        row_ += c;
        if (escaped_) escaped_ = false;
        else if (c == '\\') escaped_ = true;
        else if (c == '"') in_string_ = false;
        return;
    }
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
        if (depth_ >= 2) row_ += c;
        return;
    }
    if (ended_) malformed("text after the rows");
    switch (c) {
    case '[':
    case '{':
        ++depth_;
        if (depth_ == 1) {
            if (c != '[') malformed("not an array");
            return;
        }
        if (depth_ == 2 && c != '[') malformed("a row that is not an array");
        row_ += c;
        return;
    case ']':
    case '}':
        if (depth_ == 0) malformed("an unmatched bracket");
        --depth_;
        if (depth_ == 0) {
            ended_ = true;
            return;
        }
        row_ += c;
        if (depth_ == 1) {
            json row;
            try {
                row = json::parse(row_);
            } catch (const json::parse_error& e) {
                malformed(std::string("a row that is not JSON: ") + e.what());
            }
            out += record_of(row);
            row_.clear();
        }
        return;
    case '"':
        if (depth_ < 2) malformed("a value that is not a row");
        in_string_ = true;
        row_ += c;
        return;
    case ',':
        if (depth_ == 0) malformed("text before the rows");
        if (depth_ >= 2) row_ += c;
        return;
    default:
        if (depth_ < 2) malformed("a value that is not a row");
        row_ += c;
    }
}

}  // namespace sqlq::web
