#pragma once
// A query's result as the task store keeps it. Neutral: the query targets produce it and the
// store writes it, and neither needs to know the other.
#include <string>

namespace sqlq {

// JSON text of the column names and of the rows.
struct ResultData {
    std::string columns_json;  // ["a","b"]
    std::string rows_json;     // [[1,"x"],[2,null]]
};

}  // namespace sqlq
