#pragma once
// The console's page (web/page/*), embedded in the binary at build time (web/CMakeLists.txt):
// nothing is fetched at run time.
#include <string_view>

namespace sqlq::web {

struct PageFile {
    std::string_view content_type;
    std::string_view body;
};

// The file served at `path` ("/" is index.html), or nullptr.
const PageFile* page_file(std::string_view path);

}  // namespace sqlq::web
