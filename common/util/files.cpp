#include "util/files.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"

namespace sqlq {

std::error_code create_private_dirs(const std::string& dir) {
    std::filesystem::path made;
    for (const auto& part : std::filesystem::path(dir)) {
        made /= part;
        if (::mkdir(made.c_str(), 0700) == 0) ::chmod(made.c_str(), 0700);  // the umask may have cut it
    }
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec) && !ec) ec = std::make_error_code(std::errc::not_a_directory);
    return ec;
}

void create_private_file(const std::string& path) {
    auto dir = std::filesystem::path(path).parent_path();
    if (!dir.empty()) (void)create_private_dirs(dir.string());
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ::fchmod(fd, 0600);
        ::close(fd);
    }
}

void replace_private_file(const std::string& path, const std::string& content, const std::string& what) {
    const std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw Error(tmp + ": cannot write the " + what + ": " + std::strerror(errno));
    bool ok = ::fchmod(fd, 0600) == 0 && ::write(fd, content.data(), content.size()) == ssize_t(content.size()) &&
              ::fsync(fd) == 0;
    const int err = errno;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = ok ? errno : err;
        ::unlink(tmp.c_str());
        throw Error(path + ": cannot write the " + what + ": " + std::strerror(e));
    }
}

}  // namespace sqlq
