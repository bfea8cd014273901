// libFuzzer target: the message decoder (common/task/message.h) on arbitrary bodies. It must
// never crash, and whatever it accepts must be a positive id that encodes back to itself.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "task/message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view body(reinterpret_cast<const char*>(data), size);
    auto decoded = sqlq::decode_message(body);
    if (auto* id = std::get_if<int64_t>(&decoded)) {
        if (*id <= 0) std::abort();
        auto again = sqlq::decode_message(sqlq::encode_message(*id));
        if (!std::holds_alternative<int64_t>(again) || std::get<int64_t>(again) != *id) std::abort();
    } else if (std::get<sqlq::BadMessage>(decoded).why.empty()) {
        std::abort();  // a refusal always says why
    }
    return 0;
}
