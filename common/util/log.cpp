#include "util/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace sqlq {

void init_log(const std::string& name, const std::string& file) {
    std::shared_ptr<spdlog::logger> logger;
    if (file.empty()) logger = spdlog::stderr_logger_st(name);
    else logger = spdlog::basic_logger_st(name, file);
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n %l: %v");
    logger->flush_on(spdlog::level::info);
    if (const char* lvl = std::getenv("SQLQ_LOG_LEVEL")) logger->set_level(spdlog::level::from_str(lvl));
    spdlog::set_default_logger(logger);
}

}  // namespace sqlq
