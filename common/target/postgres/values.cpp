#include "target/postgres/values.h"

#include <charconv>
#include <cstdlib>
#include <string>

namespace sqlq::pg {

namespace {
// From PostgreSQL's catalog (pg_type.dat); stable across versions.
enum : TypeOid {
    kBool = 16, kBytea = 17, kChar = 18, kName = 19, kInt8 = 20, kInt2 = 21, kInt4 = 23, kText = 25, kOid = 26,
    kJson = 114, kFloat4 = 700, kFloat8 = 701, kBpchar = 1042, kVarchar = 1043, kDate = 1082, kTime = 1083,
    kTimestamp = 1114, kTimestamptz = 1184, kInterval = 1186, kTimetz = 1266, kNumeric = 1700, kUuid = 2950,
    kJsonb = 3802,
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "2025-01-31 12:34:56" → "2025-01-31T12:34:56" (ISO 8601), when it has that shape.
std::string iso_date_time(std::string_view t) {
    std::string s(t);
    if (s.size() > 11 && s[4] == '-' && s[7] == '-' && s[10] == ' ' && is_digit(s[11])) s[10] = 'T';
    return s;
}

// A time's offset "+02" → "+02:00" (ISO 8601's extended form, which every date parser takes).
// `from` is where the time of day starts.
std::string iso_offset(std::string s, size_t from) {
    if (s.size() >= 3 && s.compare(s.size() - 3, 3, " BC") == 0) return s;  // leave the rare BC as it is
    size_t sign = s.find_last_of("+-");
    if (sign == std::string::npos || sign < from) return s;
    const size_t digits = s.size() - sign - 1;
    if (digits == 2 && is_digit(s[sign + 1]) && is_digit(s[sign + 2])) s += ":00";
    return s;
}

std::optional<int64_t> as_integer(std::string_view t) {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || end != t.data() + t.size()) return std::nullopt;
    return v;
}

std::optional<double> as_double(std::string_view t) {
    if (t == "NaN" || t == "Infinity" || t == "-Infinity") return std::nullopt;
    std::string s(t);
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (end != s.c_str() + s.size()) return std::nullopt;
    return v;
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// bytea in hex output: "\x00ff" → the bytes; nullopt for another form.
std::optional<std::string> bytea_bytes(std::string_view t) {
    if (t.size() < 2 || t[0] != '\\' || t[1] != 'x' || t.size() % 2 != 0) return std::nullopt;
    std::string out;
    out.reserve((t.size() - 2) / 2);
    for (size_t i = 2; i < t.size(); i += 2) {
        int hi = hex_digit(t[i]), lo = hex_digit(t[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += char(hi * 16 + lo);
    }
    return out;
}

std::string to_hex(std::string_view bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(bytes.size() * 2);
    for (unsigned char c : bytes) {
        hex += digits[c >> 4];
        hex += digits[c & 15];
    }
    return hex;
}

// The array parser: text[i..] → one element or sub-array.
class ArrayParser {
public:
    ArrayParser(std::string_view t, TypeOid element) : t_(t), element_(element) {}

    std::optional<nlohmann::json> parse() {
        // Optional dimension decoration: "[0:1][1:2]=".
        if (i_ < t_.size() && t_[i_] == '[') {
            size_t eq = t_.find('=', i_);
            if (eq == std::string_view::npos) return std::nullopt;
            i_ = eq + 1;
        }
        auto v = array();
        if (!v || i_ != t_.size()) return std::nullopt;
        return v;
    }

private:
    std::optional<nlohmann::json> array() {
        if (i_ >= t_.size() || t_[i_] != '{') return std::nullopt;
        ++i_;
        nlohmann::json out = nlohmann::json::array();
        if (i_ < t_.size() && t_[i_] == '}') {
            ++i_;
            return out;
        }
        for (;;) {
            if (i_ >= t_.size()) return std::nullopt;
            if (t_[i_] == '{') {
                auto sub = array();
                if (!sub) return std::nullopt;
                out.push_back(std::move(*sub));
            } else if (t_[i_] == '"') {
                ++i_;
                std::string s;
                while (i_ < t_.size() && t_[i_] != '"') {
                    if (t_[i_] == '\\' && i_ + 1 < t_.size()) ++i_;
                    s += t_[i_++];
                }
                if (i_ >= t_.size()) return std::nullopt;
                ++i_;  // the closing quote
                out.push_back(value_json(element_, s));
            } else {
                size_t start = i_;
                while (i_ < t_.size() && t_[i_] != ',' && t_[i_] != '}') ++i_;
                std::string_view s = t_.substr(start, i_ - start);
                if (s.size() == 4 && (s[0] == 'N' || s[0] == 'n') && (s == "NULL" || s == "null"))
                    out.push_back(nullptr);
                else
                    out.push_back(value_json(element_, s));
            }
            if (i_ >= t_.size()) return std::nullopt;
            if (t_[i_] == ',') {
                ++i_;
                continue;
            }
            if (t_[i_] == '}') {
                ++i_;
                return out;
            }
            return std::nullopt;
        }
    }

    std::string_view t_;
    TypeOid element_;
    size_t i_ = 0;
};
}  // namespace

TypeOid array_element(TypeOid oid) {
    switch (oid) {
    case 1000: return kBool;
    case 1001: return kBytea;
    case 1002: return kChar;
    case 1003: return kName;
    case 1005: return kInt2;
    case 1007: return kInt4;
    case 1009: return kText;
    case 1014: return kBpchar;
    case 1015: return kVarchar;
    case 1016: return kInt8;
    case 1021: return kFloat4;
    case 1022: return kFloat8;
    case 1028: return kOid;
    case 1115: return kTimestamp;
    case 1182: return kDate;
    case 1183: return kTime;
    case 1185: return kTimestamptz;
    case 1187: return kInterval;
    case 1231: return kNumeric;
    case 1270: return kTimetz;
    case 2951: return kUuid;
    case 199: return kJson;
    case 3807: return kJsonb;
    default: return 0;
    }
}

std::optional<nlohmann::json> parse_array(std::string_view text, TypeOid element) {
    return ArrayParser(text, element).parse();
}

nlohmann::json value_json(TypeOid oid, std::string_view t) {
    switch (oid) {
    case kInt2:
    case kInt4:
    case kInt8:
    case kOid:
        if (auto v = as_integer(t)) return *v;
        break;
    case kFloat4:
    case kFloat8:
        if (auto v = as_double(t)) return *v;
        break;
    case kBool:
        if (t == "t") return true;
        if (t == "f") return false;
        break;
    case kJson:
    case kJsonb: {
        auto v = nlohmann::json::parse(t.begin(), t.end(), nullptr, /*allow_exceptions=*/false);
        if (!v.is_discarded()) return v;
        break;
    }
    case kBytea:
        if (auto b = bytea_bytes(t)) return nlohmann::json{{"blob_hex", to_hex(*b)}};
        break;
    case kTimestamp: return iso_date_time(t);
    case kTimestamptz: return iso_offset(iso_date_time(t), 11);
    case kTimetz: return iso_offset(std::string(t), 1);
    default:
        if (TypeOid e = array_element(oid))
            if (auto a = parse_array(t, e)) return std::move(*a);
        break;
    }
    return std::string(t);  // numeric, text, and whatever did not parse: exactly as the server wrote it
}

void encode_value(RowEncoder& rows, TypeOid oid, std::string_view t) {
    switch (oid) {
    case kInt2:
    case kInt4:
    case kInt8:
    case kOid:
        if (auto v = as_integer(t)) return rows.integer(*v);
        break;
    case kFloat4:
    case kFloat8:
        if (auto v = as_double(t)) return rows.real(*v);
        break;
    case kBool:
        if (t == "t" || t == "f") return rows.boolean(t == "t");
        break;
    case kBytea:
        if (auto b = bytea_bytes(t)) return rows.blob(b->data(), b->size());
        break;
    case kTimestamp:
    case kTimestamptz:
    case kTimetz: return rows.text(value_json(oid, t).get<std::string>());
    case kJson:
    case kJsonb: return rows.json(value_json(oid, t));
    default:
        if (array_element(oid)) return rows.json(value_json(oid, t));
        break;
    }
    rows.text(t);
}

}  // namespace sqlq::pg
