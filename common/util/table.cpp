#include "util/table.h"

#include <algorithm>
#include <ctime>

namespace sqlq {

std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
    std::vector<size_t> width(header.size());
    for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
    for (const auto& r : rows)
        for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
    auto line = [&](const std::vector<std::string>& cells) {
        std::string out;
        for (size_t i = 0; i < width.size(); ++i) {
            std::string cell = i < cells.size() ? cells[i] : "";
            out += cell;
            if (i + 1 < width.size()) out += std::string(width[i] - cell.size() + 2, ' ');
        }
        while (!out.empty() && out.back() == ' ') out.pop_back();
        return out + "\n";
    };
    std::string out = line(header);
    for (const auto& r : rows) out += line(r);
    return out;
}

std::string csv_record(const std::vector<std::string>& fields) {
    std::string out;
    for (size_t i = 0; i < fields.size(); ++i) {
        if (i) out += ',';
        const std::string& f = fields[i];
        if (f.find_first_of(",\"\r\n") == std::string::npos) {
            out += f;
            continue;
        }
        out += '"';
        for (char c : f) {
            if (c == '"') out += '"';
            out += c;
        }
        out += '"';
    }
    return out + "\r\n";
}

std::string format_time(std::optional<int64_t> ms) {
    if (!ms) return "-";
    time_t secs = time_t(*ms / 1000);
    tm local{};
    localtime_r(&secs, &local);
    char buf[64];
    strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &local);
    char frac[8];
    snprintf(frac, sizeof frac, ".%03d", int(*ms % 1000));
    return std::string(buf) + frac;
}

std::string format_duration(int64_t ms) {
    char buf[64];
    if (ms < 1000) snprintf(buf, sizeof buf, "%lld ms", (long long)ms);
    else if (ms < 60000) snprintf(buf, sizeof buf, "%.1f s", double(ms) / 1000);
    else snprintf(buf, sizeof buf, "%lld min %02lld s", (long long)(ms / 60000), (long long)(ms / 1000 % 60));
    return buf;
}

}  // namespace sqlq
