#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "config/config.h"
#include "util/error.h"

using namespace sqlq;

namespace {
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
    CHECK(c.broker.prefetch == 1);
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
}

TEST_CASE("a missing config file is one clear error", "[config]") {
    REQUIRE_THROWS_WITH(load_config("/nonexistent/sqlq.conf"),
                        "/nonexistent/sqlq.conf: cannot read the config file: No such file or directory");
}

TEST_CASE("broker passwords are redacted", "[config]") {
    CHECK(redact_url("amqp://guest:secret@host:5672/vh") == "amqp://guest:***@host:5672/vh");
    CHECK(redact_url("amqp://host:5672") == "amqp://host:5672");
    CHECK(redact_url("amqp://user@host") == "amqp://user@host");
    // A raw '@' in the password (found by the fault suite): none of it shows.
    CHECK(redact_url("amqp://u:Secret@Part2@127.0.0.1:5672/vh") == "amqp://u:***@127.0.0.1:5672/vh");
    CHECK(redact_url("amqp://u:pa/ss@host/vh") == "amqp://u:***@host/vh");
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
