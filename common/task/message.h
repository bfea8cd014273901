#pragma once
// The message on the queue: {"v":1,"task_id":N}. The task row carries everything else, so a
// message is only a pointer to it and can be delivered any number of times.
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace sqlq {

constexpr int kMessageVersion = 1;
constexpr size_t kMaxMessageBytes = 4096;

std::string encode_message(int64_t task_id);

// Either the task id, or why the body is not a valid message (for the log and the dead-letter audit).
struct BadMessage {
    std::string why;
};
std::variant<int64_t, BadMessage> decode_message(std::string_view body);

}  // namespace sqlq
