#include "task/message.h"

#include <nlohmann/json.hpp>

namespace sqlq {

std::string encode_message(int64_t task_id) {
    return "{\"v\":" + std::to_string(kMessageVersion) + ",\"task_id\":" + std::to_string(task_id) + "}";
}

std::variant<int64_t, BadMessage> decode_message(std::string_view body) {
    if (body.size() > kMaxMessageBytes)
        return BadMessage{"message of " + std::to_string(body.size()) + " bytes is over the limit of " +
                          std::to_string(kMaxMessageBytes)};
    auto j = nlohmann::json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return BadMessage{"not JSON"};
    if (!j.is_object()) return BadMessage{"not a JSON object"};
    auto v = j.find("v");
    if (v == j.end()) return BadMessage{"no \"v\" (message version)"};
    if (!v->is_number_integer()) return BadMessage{"\"v\" is not an integer"};
    if (v->get<int64_t>() != kMessageVersion)
        return BadMessage{"unknown message version " + std::to_string(v->get<int64_t>())};
    auto id = j.find("task_id");
    if (id == j.end()) return BadMessage{"no \"task_id\""};
    if (!id->is_number_integer()) return BadMessage{"\"task_id\" is not an integer"};
    if (id->is_number_unsigned() && id->get<uint64_t>() > uint64_t(INT64_MAX))
        return BadMessage{"\"task_id\" is out of range"};
    int64_t task_id = id->get<int64_t>();
    if (task_id <= 0) return BadMessage{"\"task_id\" must be positive"};
    return task_id;
}

}  // namespace sqlq
