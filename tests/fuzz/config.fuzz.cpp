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
        for (const std::string& url : c.broker.urls) {
            // The password: between "user:" and the last '@' (a raw '@' or '/' may be part of it).
            auto scheme = url.find("://");
            if (scheme != std::string::npos) {
                auto at = url.rfind('@');
                auto colon = url.find(':', scheme + 3);
                if (at != std::string::npos && at > scheme + 3 && colon != std::string::npos && colon < at) {
                    std::string password = url.substr(colon + 1, at - colon - 1);
                    std::string shown = sqlq::redact_url(url);
                    // The password's text may also stand in the parts that are shown (a user named
                    // like it, "amqp://x@h:amqp://x@h"): it must not appear more often than there.
                    // An occurrence across a "***" the redaction wrote does not count: a password
                    // holding "***" can be spelt by the redaction itself ("amqp://@h:***@:6" shows
                    // the password of "amqp://@h:mqp://@h:***@:6@:6" that way).
                    auto across_marker = [&](const std::string& in, size_t p) {
                        for (auto m = in.find("***"); m != std::string::npos; m = in.find("***", m + 1))
                            if (p < m + 3 && m < p + password.size()) return true;
                        return false;
                    };
                    auto count = [&](const std::string& in, bool skip_markers) {
                        size_t n = 0;
                        for (auto p = in.find(password); p != std::string::npos; p = in.find(password, p + 1))
                            if (!skip_markers || !across_marker(in, p)) ++n;
                        return n;
                    };
                    if (password.size() >= 6 &&
                        count(shown, true) > count(url.substr(0, colon + 1), false) + count(url.substr(at), false))
                        std::abort();
                }
            }
        }
    } catch (const sqlq::Error& e) {
        if (std::string(e.what()).rfind("fuzz.conf", 0) != 0) std::abort();  // errors name the file
    }
    return 0;
}
