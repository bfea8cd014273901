#pragma once
// The console's users: a file of "name:hash:role" lines (role "admin" or "user"), the hash a
// salted, slow yescrypt string from libcrypt ("$y$..."), like /etc/shadow. `sqlq-web adduser`
// writes it; sqlq-web reads it at every sign-in, so a new user needs no restart.
#include <map>
#include <string>

namespace sqlq::web {

struct User {
    std::string name;
    std::string hash;
    bool admin = false;
};

// 1 to 64 of [A-Za-z0-9._@-]: a user name that is safe in a log line, a file line and a header.
bool valid_user_name(const std::string& name);

// A new yescrypt hash of `password` with a fresh random salt. Throws sqlq::Error when libcrypt
// cannot make one.
std::string hash_password(const std::string& password);
// Whether `password` matches `hash` (any libcrypt hash), in time that does not depend on where
// they differ.
bool verify_password(const std::string& password, const std::string& hash);
// Costs what verify_password costs, for an unknown user: the answer's time tells nothing.
void verify_nobody(const std::string& password);

// The users in `path`; an absent file is no users. Throws sqlq::Error (kExitUsage) naming the
// file and line of a malformed one.
std::map<std::string, User> load_users(const std::string& path);
// Writes them to `path` (a temporary file renamed over it, mode 0600). Throws sqlq::Error.
void save_users(const std::string& path, const std::map<std::string, User>& users);

}  // namespace sqlq::web
