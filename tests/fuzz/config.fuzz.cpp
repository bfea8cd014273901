// libFuzzer target: the config parser (common/config/config.h) on arbitrary text. It either
// returns a config or throws sqlq::Error naming the file; anything else (another exception, a
// crash, undefined behaviour) is a bug. A URL it prints is redacted: no password in it.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/config.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    try {
        sqlq::Config c = sqlq::parse_config(text, "fuzz.conf", "/fuzz");
        // The password, as amqp URLs put it: between "user:" and the last '@' of the authority.
        const std::string& url = c.broker.url;
        auto scheme = url.find("://");
        if (scheme != std::string::npos) {
            auto end = url.find_first_of("/?#", scheme + 3);
            std::string authority = url.substr(scheme + 3, end == std::string::npos ? std::string::npos : end - scheme - 3);
            auto at = authority.rfind('@');
            auto colon = authority.find(':');
            if (at != std::string::npos && colon != std::string::npos && colon < at) {
                std::string password = authority.substr(colon + 1, at - colon - 1);
                std::string shown = sqlq::redact_url(url);
                if (password.size() >= 6 && shown.find(password) != std::string::npos) std::abort();
            }
        }
    } catch (const sqlq::Error& e) {
        if (std::string(e.what()).rfind("fuzz.conf", 0) != 0) std::abort();  // errors name the file
    }
    return 0;
}
