#include "util/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <cstdio>

namespace sqlq {

namespace {

// spdlog's stderr sink flushes after every line; this one leaves that to flush().
class BufferedStderrSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
public:
    BufferedStderrSink() { std::setvbuf(stderr, nullptr, _IOFBF, 1 << 16); }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        spdlog::memory_buf_t line;
        formatter_->format(msg, line);
        std::fwrite(line.data(), 1, line.size(), stderr);
    }
    void flush_() override { std::fflush(stderr); }
};

void install(std::shared_ptr<spdlog::logger> logger, spdlog::level::level_enum flush_at) {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n %l: %v");
    logger->flush_on(flush_at);
    if (const char* lvl = std::getenv("SQLQ_LOG_LEVEL")) logger->set_level(spdlog::level::from_str(lvl));
    spdlog::set_default_logger(std::move(logger));
}

}  // namespace

void init_log(const std::string& name, const std::string& file) {
    if (file.empty()) install(spdlog::stderr_logger_st(name), spdlog::level::info);
    else install(spdlog::basic_logger_st(name, file), spdlog::level::info);
}

void init_buffered_log(const std::string& name) {
    install(std::make_shared<spdlog::logger>(name, std::make_shared<BufferedStderrSink>()), spdlog::level::warn);
}

void flush_log() { spdlog::default_logger_raw()->flush(); }

}  // namespace sqlq
