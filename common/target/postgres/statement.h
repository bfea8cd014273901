#pragma once
// What a task's SQL may be on a PostgreSQL target, checked before it is sent: one statement that
// reads. The read-only transaction it runs in refuses every write the server knows of (writes in
// a CTE, nextval(), ...); this check refuses, with a clear word, the statements that a read-only
// transaction would let through and that could outlive the task on the connection (SET, SET
// ROLE, PREPARE, DECLARE, LISTEN, DO, COPY, ...). A second statement is refused by the server
// itself (the extended protocol takes one); the worker words that error.
#include <optional>
#include <string>
#include <string_view>

namespace sqlq::pg {

// The statement's first keyword, upper-cased, after comments, white space and opening
// parentheses ("" when there is none).
std::string first_keyword(std::string_view sql);

// Why the statement may not run, or nothing when it may: it must begin with SELECT, WITH,
// VALUES, TABLE, SHOW or EXPLAIN.
std::optional<std::string> refuse_statement(std::string_view sql);

}  // namespace sqlq::pg
