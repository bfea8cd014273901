#pragma once
// "--key value" command lines for the bench tools: small enough not to need CLI11.
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>

namespace bench {

class Args {
public:
    Args(int argc, char** argv, int first) {
        for (int i = first; i < argc; ++i) {
            std::string k = argv[i];
            if (k.rfind("--", 0) != 0 || i + 1 >= argc) throw std::runtime_error("expected --key value, got " + k);
            kv_[k.substr(2)] = argv[++i];
        }
    }
    std::string str(const std::string& k, const std::string& def) const {
        auto it = kv_.find(k);
        return it == kv_.end() ? def : it->second;
    }
    long num(const std::string& k, long def) const {
        auto it = kv_.find(k);
        return it == kv_.end() ? def : std::stol(it->second);
    }

private:
    std::map<std::string, std::string> kv_;
};

}  // namespace bench
