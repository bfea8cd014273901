#include "web/users.h"

#include <cctype>
#include <cerrno>
#include <crypt.h>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <memory>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"
#include "util/files.h"

namespace sqlq::web {

namespace {

// crypt_data is ~32 KiB: on the heap, one per call (crypt_r is thread-safe with its own).
std::string crypt_with(const std::string& password, const std::string& setting) {
    auto data = std::make_unique<crypt_data>();
    std::memset(data.get(), 0, sizeof(crypt_data));
    const char* out = crypt_r(password.c_str(), setting.c_str(), data.get());
    // libxcrypt returns a string starting with '*' on failure (never NULL by default).
    if (!out || out[0] == '*') return {};
    return out;
}

bool same(const std::string& a, const std::string& b) {
    if (a.size() != b.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

}  // namespace

bool valid_user_name(const std::string& name) {
    if (name.empty() || name.size() > 64) return false;
    for (unsigned char c : name)
        if (!std::isalnum(c) && c != '.' && c != '_' && c != '@' && c != '-') return false;
    return true;
}

std::string hash_password(const std::string& password) {
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    // "$y$": yescrypt; count 0: libcrypt's default cost; no random bytes given: it reads them
    // from the kernel itself.
    if (!crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof setting))
        throw Error(std::string("cannot make a password salt: ") + std::strerror(errno));
    std::string h = crypt_with(password, setting);
    if (h.empty()) throw Error("cannot hash the password (libcrypt refused it)");
    return h;
}

bool verify_password(const std::string& password, const std::string& hash) {
    if (hash.empty() || hash[0] != '$') return false;
    std::string h = crypt_with(password, hash);
    return !h.empty() && same(h, hash);
}

void verify_nobody(const std::string& password) {
    // A fixed yescrypt setting of the default cost.
    static const std::string dummy = hash_password("sqlq-no-such-user");
    verify_password(password, dummy);
}

std::map<std::string, User> load_users(const std::string& path) {
    std::map<std::string, User> users;
    std::ifstream in(path);
    if (!in) {
        if (errno == ENOENT) return users;
        throw Error(path + ": cannot read the users file: " + std::strerror(errno), kExitUsage);
    }
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
        if (line.empty() || line[0] == '#') continue;
        auto bad = [&](const std::string& why) {
            return Error(path + ":" + std::to_string(n) + ": " + why + " (expected NAME:HASH:admin|user)", kExitUsage);
        };
        auto c1 = line.find(':'), c2 = line.rfind(':');
        if (c1 == std::string::npos || c1 == c2) throw bad("not three fields");
        User u{line.substr(0, c1), line.substr(c1 + 1, c2 - c1 - 1), false};
        std::string role = line.substr(c2 + 1);
        if (!valid_user_name(u.name)) throw bad("bad user name");
        if (u.hash.empty() || u.hash[0] != '$') throw bad("the hash of '" + u.name + "' is not a crypt hash");
        if (role != "admin" && role != "user") throw bad("the role of '" + u.name + "' is '" + role + "'");
        u.admin = role == "admin";
        if (users.count(u.name)) throw bad("'" + u.name + "' appears twice");
        users[u.name] = u;
    }
    return users;
}

void save_users(const std::string& path, const std::map<std::string, User>& users) {
    std::ostringstream text;
    text << "# sqlq-web users: NAME:YESCRYPT_HASH:admin|user (sqlq-web adduser NAME [--admin])\n";
    for (const auto& [name, u] : users) text << name << ':' << u.hash << ':' << (u.admin ? "admin" : "user") << '\n';
    replace_private_file(path, text.str(), "users file");
}

}  // namespace sqlq::web
