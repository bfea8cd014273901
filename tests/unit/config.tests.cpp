#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "util/error.h"

using namespace sqlq;
namespace fs = std::filesystem;

namespace {
// Changes the working directory for one test, and back.
struct ScopedCwd {
    fs::path before = fs::current_path();
    explicit ScopedCwd(const fs::path& dir) { fs::current_path(dir); }
    ~ScopedCwd() { fs::current_path(before); }
};

// Unsets an environment variable for one test, and restores it.
struct ScopedUnsetEnv {
    std::string name;
    std::optional<std::string> before;
    explicit ScopedUnsetEnv(std::string n) : name(std::move(n)) {
        if (const char* v = std::getenv(name.c_str())) before = v;
        ::unsetenv(name.c_str());
    }
    ~ScopedUnsetEnv() {
        if (before)
            ::setenv(name.c_str(), before->c_str(), 1);
        else
            ::unsetenv(name.c_str());
    }
};

// A temporary directory holding one config file path.
struct TempConfigDir {
    std::string dir, file;
    TempConfigDir() {
        char tmpl[] = "/tmp/sqlq-config-XXXXXX";
        dir = fs::path(mkdtemp(tmpl)).lexically_normal().string();
        file = dir + "/sqlq.conf";
    }
    ~TempConfigDir() { fs::remove_all(dir); }
};

std::string message_of(const std::string& text) {
    try {
        parse_config(text, "test.conf", "/etc/x");
    } catch (const Error& e) {
        CHECK(e.exit_code() == kExitUsage);
        return e.what();
    }
    return "";
}
}  // namespace

TEST_CASE("the shipped config parses and every path is made relative to its file", "[config]") {
    Config c = load_config(std::string(SQLQ_SOURCE_DIR) + "/etc/sqlq.conf");
    CHECK(c.broker.queue == "sqlq.tasks");
    CHECK(c.broker.queue_type == "quorum");
    CHECK(c.broker.prefetch == 3);
    CHECK(c.query.max_attempts == 3);
    CHECK(c.supervisor.workers == 4);
    CHECK(c.store.path == std::filesystem::path(SQLQ_SOURCE_DIR).lexically_normal().string() + "/var/sqlq.db");
    CHECK(c.query.database.find("/var/demo.db") != std::string::npos);
}

TEST_CASE("a bad config is refused naming the file, the line and the key", "[config]") {
    SECTION("unknown key") {
        CHECK(message_of("[broker]\nqueue = \"q\"\nprefech = 2\n") == "test.conf:3: [broker] prefech: unknown key");
    }
    SECTION("unknown section") {
        CHECK(message_of("[brokr]\nqueue = \"q\"\n") == "test.conf:1: unknown section [brokr]");
    }
    SECTION("wrong type") {
        CHECK(message_of("[supervisor]\nworkers = \"four\"\n") ==
              "test.conf:2: [supervisor] workers: must be an integer");
    }
    SECTION("impossible value") {
        CHECK(message_of("[query]\n\ntimeout_ms = -5\n") ==
              "test.conf:3: [query] timeout_ms: must be between 1 and 86400000, not -5");
    }
    SECTION("value not in the list") {
        CHECK(message_of("[broker]\nqueue_type = \"stream\"\n") ==
              "test.conf:2: [broker] queue_type: must be one of \"quorum\", \"classic\", not \"stream\"");
    }
    SECTION("a TOML syntax error") {
        CHECK(message_of("[broker]\nqueue = \n").rfind("test.conf:2: ", 0) == 0);
    }
    SECTION("a url that is not amqp") {
        CHECK(message_of("[broker]\nurl = \"http://x\"\n") ==
              "test.conf:2: [broker] url: must start with amqp:// (amqps is not supported)");
    }
    SECTION("a broker node that is no node name") {
        CHECK(message_of("[broker]\nnode = \"mq1\"\n") ==
              "test.conf:2: [broker] node: must be a RabbitMQ node name NAME@HOST (like rabbit@mq1), not \"mq1\"");
        CHECK(message_of("[broker]\nnode = \"rabbit@mq1 -e x\"\n") != "");
        CHECK(message_of("[broker]\nnode = \"@mq1\"\n") != "");
        CHECK(message_of("[broker]\nnode = \"rabbit@mq-1.example.com\"\n") == "");
        CHECK(message_of("[broker]\nnode = \"\"\n") == "");
    }
}

TEST_CASE("keys that cannot work together are refused at the line of the key to change", "[config][cross]") {
    SECTION("a watchdog not above twice the workers' alive interval kills healthy idle workers") {
        CHECK(message_of("[supervisor]\nworkers = 2\nwatchdog_ms = 300\n") ==
              "test.conf:3: [supervisor] watchdog_ms: must be at least 1000 (workers report alive every 500 ms; "
              "less kills healthy workers), not 300");
        CHECK(message_of("[supervisor]\nwatchdog_ms = 999\n") != "");
        CHECK(message_of("[supervisor]\nwatchdog_ms = 1000\n") == "");
    }
    SECTION("a quorum queue's delivery limit below max_attempts drops messages sqlq would retry") {
        CHECK(message_of("[broker]\nqueue_type = \"quorum\"\ndelivery_limit = 2\n[query]\nmax_attempts = 3\n") ==
              "test.conf:3: [broker] delivery_limit: must not be below [query] max_attempts (3): the broker would "
              "drop a task's message before sqlq gives the task up");
        CHECK(message_of("[query]\nmax_attempts = 50\n") ==
              "test.conf:2: [query] max_attempts: must not be above [broker] delivery_limit (20) on a quorum queue: "
              "the broker would drop a task's message before sqlq gives the task up");
        CHECK(message_of("[broker]\nqueue_type = \"classic\"\n[query]\nmax_attempts = 50\n") == "");
    }
}

TEST_CASE("a config with an error still names its run directory, for status", "[config][status]") {
    TempConfigDir d;
    auto with = [&](const std::string& text) {
        std::ofstream(d.file) << text;
        return best_effort_run_dir(d.file);
    };
    CHECK(with("[supervisor]\nrun_dir = \"/srv/run\"\nworkerz = 3\n") == "/srv/run");  // TOML, bad key
    CHECK(with("[supervisor]\nrun_dir = \"rd\"\nworkers = \n") == d.dir + "/rd");       // not TOML
    const std::string by_default = (fs::path(d.dir) / "../var/run").lexically_normal().string();
    CHECK(with("[broker]\nrun_dir = \"no\"\n[supervisor]\nworkers = = 1\n") == by_default);
    CHECK(with("[supervisor]\nworkers = 3\n") == by_default);
    CHECK_FALSE(best_effort_run_dir(d.dir + "/none.conf"));
}

TEST_CASE("a missing config file is one clear error", "[config]") {
    REQUIRE_THROWS_WITH(load_config("/nonexistent/sqlq.conf"),
                        "/nonexistent/sqlq.conf: cannot read the config file: No such file or directory");
}

TEST_CASE("with no config anywhere, the error lists every place that was looked at", "[config]") {
    if (fs::exists("/etc/sqlq/sqlq.conf")) {
        WARN("/etc/sqlq/sqlq.conf exists (sqlq is installed): the fallback cannot be missing here");
        return;
    }
    ScopedCwd cwd(fs::temp_directory_path());  // no ./etc/sqlq.conf
    ScopedUnsetEnv env("SQLQ_CONFIG");
    REQUIRE(!fs::exists("etc/sqlq.conf"));
    REQUIRE(config_path("") == "/etc/sqlq/sqlq.conf");
    REQUIRE_THROWS_WITH(find_and_load_config(""),
                        "no config file: looked at -c (not given), $SQLQ_CONFIG (not set), ./etc/sqlq.conf, "
                        "/etc/sqlq/sqlq.conf");
    SECTION("a -c naming that same file is not a fallback: the plain error") {
        REQUIRE_THROWS_WITH(find_and_load_config("/etc/sqlq/sqlq.conf"),
                            "/etc/sqlq/sqlq.conf: cannot read the config file: No such file or directory");
    }
}

TEST_CASE("the config is looked for in order: -c, $SQLQ_CONFIG, ./etc/sqlq.conf, /etc/sqlq/sqlq.conf", "[config]") {
    ScopedCwd cwd(std::string(SQLQ_SOURCE_DIR));  // a checkout: ./etc/sqlq.conf exists
    ScopedUnsetEnv env("SQLQ_CONFIG");
    CHECK(config_path("mine.conf") == "mine.conf");
    CHECK(config_path("") == "etc/sqlq.conf");
    ::setenv("SQLQ_CONFIG", "/srv/sqlq.conf", 1);
    CHECK(config_path("") == "/srv/sqlq.conf");
    CHECK(config_path("mine.conf") == "mine.conf");
}

TEST_CASE("broker passwords are redacted", "[config]") {
    CHECK(redact_url("amqp://guest:secret@host:5672/vh") == "amqp://guest:***@host:5672/vh");
    CHECK(redact_url("amqp://host:5672") == "amqp://host:5672");
    CHECK(redact_url("amqp://user@host") == "amqp://user@host");
    // A raw '@' in the password (found by the fault suite): none of it shows.
    CHECK(redact_url("amqp://u:Secret@Part2@127.0.0.1:5672/vh") == "amqp://u:***@127.0.0.1:5672/vh");
    CHECK(redact_url("amqp://u:pa/ss@host/vh") == "amqp://u:***@host/vh");
}

TEST_CASE("[broker] url is one node, or an array of a cluster's nodes", "[config][broker]") {
    const std::string one = "amqp://u:pw@h1:5672";
    CHECK(parse_config("[broker]\nurl = \"" + one + "\"\n", "test.conf", "/etc/x").broker.urls ==
          std::vector<std::string>{one});
    CHECK(parse_config("", "test.conf", "/etc/x").broker.urls == std::vector<std::string>{"amqp://guest:guest@127.0.0.1:5672"});
    auto c = parse_config("[broker]\nurl = [\n  \"amqp://u:pw@h1:5672\",\n  \"amqp://u:pw@h2:5673/vh\",\n]\n",
                          "test.conf", "/etc/x");
    CHECK(c.broker.urls == std::vector<std::string>{"amqp://u:pw@h1:5672", "amqp://u:pw@h2:5673/vh"});
    CHECK(redact_urls(c.broker.urls) == "amqp://u:***@h1:5672, amqp://u:***@h2:5673/vh");
    // A classic dead-letter queue would live on one node only: a cluster's is a quorum queue.
    CHECK(c.broker.dead_letter_queue_type() == "quorum");
    CHECK(parse_config("", "test.conf", "/etc/x").broker.dead_letter_queue_type() == "classic");

    SECTION("an empty array") {
        CHECK(message_of("[broker]\nurl = []\n") == "test.conf:2: [broker] url: must name at least one node (an empty array)");
    }
    SECTION("an element that is not a string, named by its place and line") {
        CHECK(message_of("[broker]\nurl = [\n  \"amqp://h1\",\n  5672,\n]\n") ==
              "test.conf:2: [broker] url: element 2 (line 4) must be a string");
    }
    SECTION("an element of another scheme, shown without its password") {
        auto m = message_of("[broker]\nurl = [\"amqp://h1\", \"http://u:Secret-77@h2\"]\n");
        CHECK(m == "test.conf:2: [broker] url: element 2 (line 2), \"http://u:***@h2\", must start with amqp:// "
                   "(amqps is not supported)");
        CHECK(m.find("Secret-77") == std::string::npos);
    }
    SECTION("the same node twice") {
        CHECK(message_of("[broker]\nurl = [\"amqp://u:pw@h1\", \"amqp://u:pw@h1\"]\n") ==
              "test.conf:2: [broker] url: element 2 (line 2) repeats \"amqp://u:***@h1\"");
    }
    SECTION("neither a string nor an array") {
        CHECK(message_of("[broker]\nurl = 5\n") ==
              "test.conf:2: [broker] url: must be a string or an array of strings (the nodes of a cluster)");
    }
}

TEST_CASE("[query] database is a file relative to the config, or a URL kept as written", "[config]") {
    CHECK(parse_config("[query]\ndatabase = \"data/t.db\"\n", "test.conf", "/etc/x").query.database == "/etc/x/data/t.db");
    CHECK(parse_config("[query]\ndatabase = \"postgresql://u:p@h:5432/db\"\n", "test.conf", "/etc/x").query.database ==
          "postgresql://u:p@h:5432/db");
    CHECK(url_scheme("postgresql://h/db") == "postgresql");
    CHECK(url_scheme("../var/demo.db") == "");
    CHECK(url_scheme("/srv/a://b.db") == "");
    CHECK(url_scheme("://x") == "");
}

TEST_CASE("[store] url names a PostgreSQL store instead of path, and only one of the two", "[config][store]") {
    auto c = parse_config("[store]\nurl = \"postgresql://sqlq:pw@db:5432/sqlq\"\n", "test.conf", "/etc/x");
    CHECK(c.store.url == "postgresql://sqlq:pw@db:5432/sqlq");
    CHECK(parse_config("[store]\nurl = \"postgres://db/sqlq\"\n", "test.conf", "/etc/x").store.url == "postgres://db/sqlq");
    CHECK(parse_config("", "test.conf", "/etc/x").store.url.empty());
    CHECK(message_of("[store]\nurl = \"mysql://db/sqlq\"\n") ==
          "test.conf:2: [store] url: must start with postgresql:// (a PostgreSQL task store; [store] path names a "
          "SQLite one)");
    CHECK(message_of("[store]\npath = \"t.db\"\nurl = \"postgresql://db/sqlq\"\n") ==
          "test.conf:3: [store] url: set either [store] path (SQLite, one host) or [store] url (PostgreSQL), not both");
}

TEST_CASE("the [web] section: defaults, the shipped values, and a bad listen address named", "[config][web]") {
    Config c = load_config(std::string(SQLQ_SOURCE_DIR) + "/etc/sqlq.conf");
    CHECK_FALSE(c.web.enabled);
    CHECK(c.web.listen == "127.0.0.1:8080");
    CHECK(c.web.users_file == std::filesystem::path(SQLQ_SOURCE_DIR).lexically_normal().string() + "/var/users");
    CHECK(c.web.tick_ms == 200);
    CHECK(split_listen("[::1]:0") == std::make_pair(std::string("::1"), 0));
    CHECK(split_listen("0.0.0.0:65535") == std::make_pair(std::string("0.0.0.0"), 65535));
    CHECK_FALSE(split_listen("localhost"));
    CHECK_FALSE(split_listen("127.0.0.1:65536"));
    CHECK_FALSE(split_listen(":80"));
    CHECK(message_of("[web]\nlisten = \"127.0.0.1\"\n") ==
          "test.conf:2: [web] listen: must be HOST:PORT (e.g. \"127.0.0.1:8080\", \"[::1]:8080\"), not \"127.0.0.1\"");
    CHECK(message_of("[web]\nenabled = 1\n") == "test.conf:2: [web] enabled: must be true or false");
    CHECK(message_of("[web]\ntick_ms = 5\n") == "test.conf:2: [web] tick_ms: must be between 10 and 60000, not 5");
    CHECK(message_of("[web]\nenabled = true\nmax_page_rows = 10\n") == "");
}

TEST_CASE("[supervisor] metrics_listen is off by default and takes HOST:PORT", "[config][metrics]") {
    CHECK(parse_config("", "test.conf", "/etc/x").supervisor.metrics_listen.empty());
    CHECK(load_config(std::string(SQLQ_SOURCE_DIR) + "/etc/sqlq.conf").supervisor.metrics_listen.empty());
    SECTION("accepted") {
        for (const char* ok : {"127.0.0.1:9464", "0.0.0.0:1", "[::1]:65535", "[::]:9464", "localhost:9464"}) {
            INFO(ok);
            auto c = parse_config(std::string("[supervisor]\nmetrics_listen = \"") + ok + "\"\n", "test.conf", "/etc/x");
            CHECK(c.supervisor.metrics_listen == ok);
        }
        std::string problem;
        auto a = parse_listen_address("localhost:9464", problem);
        REQUIRE(a);
        CHECK(a->host == "127.0.0.1");
        CHECK(a->port == 9464);
        a = parse_listen_address("[::1]:80", problem);
        REQUIRE(a);
        CHECK(a->host == "::1");
    }
    SECTION("refused, naming the line, the key and the shape") {
        for (const char* bad : {"9464", ":9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                                "127.0.0.1:94x4", "example.com:9464", "::1:9464", "[127.0.0.1]:9464", "[::1]"}) {
            INFO(bad);
            std::string m = message_of(std::string("[supervisor]\n\nmetrics_listen = \"") + bad + "\"\n");
            CHECK(m.rfind("test.conf:3: [supervisor] metrics_listen: must be HOST:PORT", 0) == 0);
            CHECK(m.find(std::string("not \"") + bad + "\"") != std::string::npos);
        }
        CHECK(message_of("[supervisor]\nmetrics_listen = 9464\n") ==
              "test.conf:2: [supervisor] metrics_listen: must be a string");
    }
}
