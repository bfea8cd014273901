#include "util/files.h"

#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

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

}  // namespace sqlq
