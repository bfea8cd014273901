// libFuzzer target: arbitrary SQL through open_target() (the SQLite query target, as a worker
// runs it) against a small database made here: two tables, an index, a view, an FTS4 and an
// FTS5 table. The caps are low (50 ms, 100 rows, 64 KB, 32 MB of heap, 4 MB of temporary
// space) so that each input ends fast. Whatever the input:
//   - nothing crashes (ASan, UBSan);
//   - nothing is written: the database file's bytes and the folder's listing are as made;
//   - every outcome is clean: ok with a result, or error / timeout with a message; never
//     `stopped`, since nothing asks it to stop.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include "sqlite/db.h"
#include "target/target.h"

namespace {

namespace fs = std::filesystem;

struct Fixture {
    std::string dir;
    sqlq::QueryConfig cfg;
    std::string bytes;            // the database file as made
    std::set<std::string> files;  // the folder as made
    std::unique_ptr<sqlq::Target> target;

    Fixture() {
        char tmpl[] = "/tmp/sqlq-target-fuzz-XXXXXX";
        if (!mkdtemp(tmpl)) std::abort();
        dir = tmpl;
        cfg.database = dir + "/t.db";
        cfg.timeout_ms = 50;
        cfg.max_rows = 100;
        cfg.max_bytes = 64 * 1024;
        cfg.memory_limit_mb = 32;
        cfg.temp_limit_mb = 4;
        {
            sqlq::sqlite::Db db(cfg.database, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
            db.exec("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL, d BLOB);"
                    "CREATE INDEX t_b ON t(b);"
                    "CREATE TABLE u(x, y, z DEFAULT 'z');"
                    "CREATE VIEW v AS SELECT a, b FROM t WHERE a % 2 = 0;"
                    "CREATE VIRTUAL TABLE f4 USING fts4(body);"
                    "CREATE VIRTUAL TABLE f5 USING fts5(title, body);"
                    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < 200) "
                    "INSERT INTO t SELECT n, printf('row %d', n), n / 7.0, randomblob(n % 17) FROM c;"
                    "INSERT INTO u VALUES (1, '{\"k\":[1,2,3]}', NULL), ('two', x'00ff', 2.5);"
                    "INSERT INTO f4 VALUES ('running fast'), ('hello world');"
                    "INSERT INTO f5 VALUES ('greeting', 'hello world'), ('sport', 'running fast');");
        }
        bytes = read(cfg.database);
        files = listing();
        target = sqlq::open_target(cfg);
    }
    ~Fixture() {
        target.reset();
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    static std::string read(const std::string& path) {
        std::ifstream in(path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::set<std::string> listing() const {
        std::set<std::string> names;
        for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
        return names;
    }
};

Fixture& fixture() {
    static Fixture f;  // destroyed at exit(), which is how libFuzzer ends
    return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Fixture& f = fixture();
    const std::string sql(reinterpret_cast<const char*>(data), size);
    auto out = f.target->run(sql, [] { return false; });
    switch (out.kind) {
    case sqlq::QueryOutcome::Kind::ok:
        if (out.result.columns_json.empty() || out.result.rows_json.empty()) std::abort();
        break;
    case sqlq::QueryOutcome::Kind::error:
    case sqlq::QueryOutcome::Kind::timeout:
        if (out.error.empty()) std::abort();  // a failure always says why
        break;
    case sqlq::QueryOutcome::Kind::stopped:
        std::abort();  // nothing asked it to stop
    }
    if (Fixture::read(f.cfg.database) != f.bytes) std::abort();  // the query wrote
    if (f.listing() != f.files) std::abort();                     // or left a journal, WAL or temp file there
    return 0;
}
