#pragma once
// The private PostgreSQL server of the CTest fixture "postgres" (tests/support/postgres-fixture.sh)
// and a superuser's view of it, for assertions: which backends run what.
#include <cstdint>
#include <string>
#include <vector>

#include "pg/handles.h"

namespace sqlq::test {

std::string postgres_dir();        // $SQLQ_TEST_POSTGRES_DIR
int postgres_port();
std::string postgres_url();        // the read-only role sqlq_reader on database demo
// Another role on database demo: sqlq_super (a superuser) or sqlq_bypass (BYPASSRLS).
std::string postgres_url_as(const std::string& role);

// A superuser connection to the fixture's server, for looking at it.
class PgAdmin {
public:
    explicit PgAdmin(const std::string& url = postgres_url_as("sqlq_super"));
    // The rows of a query, each value as text ("" for NULL). Throws on error.
    std::vector<std::vector<std::string>> query(const std::string& sql);
    int64_t count(const std::string& sql);  // SELECT count(*) ...
    // Backends whose application_name is `app` and that are running a statement now.
    int64_t active_backends(const std::string& app);
    // Backends whose application_name starts with "sqlq-worker" and whose query contains `text`,
    // running a statement (state 'active').
    int64_t active_with(const std::string& text);
    // Any backend of that application name at all.
    int64_t backends(const std::string& app);

private:
    pg::Conn conn_;
};

// A database of its own on the fixture's server, empty, owned by sqlq_super; dropped (with any
// connection left to it) at the end. For a PostgreSQL task store under test.
struct ScratchDatabase {
    ScratchDatabase();
    ~ScratchDatabase();
    ScratchDatabase(const ScratchDatabase&) = delete;
    ScratchDatabase& operator=(const ScratchDatabase&) = delete;
    std::string name;
    std::string url;  // as sqlq_super
};

}  // namespace sqlq::test
