#include "target/postgres/statement.h"

#include <array>
#include <cctype>

namespace sqlq::pg {

std::string first_keyword(std::string_view sql) {
    size_t i = 0;
    const size_t n = sql.size();
    for (;;) {
        while (i < n && (std::isspace(static_cast<unsigned char>(sql[i])) || sql[i] == '(')) ++i;
        if (i + 1 < n && sql[i] == '-' && sql[i + 1] == '-') {
            while (i < n && sql[i] != '\n') ++i;
            continue;
        }
        if (i + 1 < n && sql[i] == '/' && sql[i + 1] == '*') {
            // PostgreSQL's block comments nest.
            int depth = 0;
            do {
                if (i + 1 < n && sql[i] == '/' && sql[i + 1] == '*') {
                    ++depth;
                    i += 2;
                } else if (i + 1 < n && sql[i] == '*' && sql[i + 1] == '/') {
                    --depth;
                    i += 2;
                } else {
                    ++i;
                }
            } while (depth > 0 && i < n);
            continue;
        }
        break;
    }
    std::string word;
    while (i < n && (std::isalnum(static_cast<unsigned char>(sql[i])) || sql[i] == '_' || sql[i] == '$'))
        word += char(std::toupper(static_cast<unsigned char>(sql[i++])));
    return word;
}

std::optional<std::string> refuse_statement(std::string_view sql) {
    static constexpr std::array<std::string_view, 6> allowed{"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN"};
    const std::string word = first_keyword(sql);
    if (word.empty()) return std::string("not a query: the text holds no SQL statement");
    for (auto a : allowed)
        if (word == a) return std::nullopt;
    return "refused: only queries run here (a statement beginning with SELECT, WITH, VALUES, TABLE, SHOW or "
           "EXPLAIN), not " + word;
}

}  // namespace sqlq::pg
