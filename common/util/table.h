#pragma once
// Human output: aligned text tables, times, durations; and RFC 4180 CSV.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sqlq {

// Columns padded to their widest cell, a header line, two spaces between columns.
std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// One RFC 4180 record: fields quoted when they hold a comma, a quote, CR or LF; CRLF ends it.
std::string csv_record(const std::vector<std::string>& fields);

// "2026-11-25 15:03:30.123" in local time; "-" when absent.
std::string format_time(std::optional<int64_t> ms_since_epoch);

// "850 ms", "12.3 s", "4 min 05 s".
std::string format_duration(int64_t ms);

}  // namespace sqlq
