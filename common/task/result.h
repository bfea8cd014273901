#pragma once
#include <string>

namespace sqlq {

// A query's result as stored: JSON text of the column names and of the rows.
struct ResultData {
    std::string columns_json;  // ["a","b"]
    std::string rows_json;     // [[1,"x"],[2,null]]
};

}  // namespace sqlq
