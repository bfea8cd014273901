#include "support/postgres.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace sqlq::test {

std::string postgres_dir() {
    // The fixture's directory in this build (tests/CMakeLists.txt), unless the environment names another.
    const char* d = std::getenv("SQLQ_TEST_POSTGRES_DIR");
    return d ? d : SQLQ_BUILD_DIR "/test-postgres";
}

int postgres_port() {
    std::ifstream in(postgres_dir() + "/port");
    int port = 0;
    if (!(in >> port)) throw std::runtime_error("no PostgreSQL fixture in " + postgres_dir());
    return port;
}

std::string postgres_url() {
    std::ifstream in(postgres_dir() + "/url");
    std::string url;
    if (!std::getline(in, url)) throw std::runtime_error("no PostgreSQL fixture in " + postgres_dir());
    return url;
}

std::string postgres_url_as(const std::string& role) {
    return "postgresql://" + role + ":test-pw-super@127.0.0.1:" + std::to_string(postgres_port()) + "/demo";
}

PgAdmin::PgAdmin(const std::string& url) : conn_(PQconnectdb(url.c_str())) {
    if (PQstatus(conn_.get()) != CONNECTION_OK)
        throw std::runtime_error(std::string("PgAdmin: ") + PQerrorMessage(conn_.get()));
}

std::vector<std::vector<std::string>> PgAdmin::query(const std::string& sql) {
    pg::Result r(PQexec(conn_.get(), sql.c_str()));
    auto st = PQresultStatus(r.get());
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        throw std::runtime_error("PgAdmin: " + sql + ": " + PQresultErrorMessage(r.get()));
    std::vector<std::vector<std::string>> rows;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
        rows.emplace_back();
        for (int j = 0; j < PQnfields(r.get()); ++j) rows.back().push_back(PQgetvalue(r.get(), i, j));
    }
    return rows;
}

int64_t PgAdmin::count(const std::string& sql) { return std::atoll(query(sql).at(0).at(0).c_str()); }

namespace {
std::string literal(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += '\'';
        out += c;
    }
    return out + "'";
}
}  // namespace

int64_t PgAdmin::active_backends(const std::string& app) {
    return count("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND application_name = " + literal(app));
}

int64_t PgAdmin::active_with(const std::string& text) {
    return count("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND application_name LIKE "
                 "'sqlq-worker%' AND strpos(query, " + literal(text) + ") > 0");
}

int64_t PgAdmin::backends(const std::string& app) {
    return count("SELECT count(*) FROM pg_stat_activity WHERE application_name = " + literal(app));
}

ScratchDatabase::ScratchDatabase() {
    static int n = 0;
    name = "sqlq_scratch_" + std::to_string(::getpid()) + "_" + std::to_string(++n);
    PgAdmin().query("CREATE DATABASE " + name + " OWNER sqlq_super");
    const std::string admin = postgres_url_as("sqlq_super");
    url = admin.substr(0, admin.rfind('/') + 1) + name;
}

ScratchDatabase::~ScratchDatabase() {
    try {
        PgAdmin().query("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
    } catch (...) {
    }
}

}  // namespace sqlq::test
