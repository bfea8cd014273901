#pragma once
// The sqlq configuration (etc/sqlq.conf, TOML). Every key is declared once, with its type,
// default and check, in config.cpp; a file with an unknown key, a wrong type or an impossible
// value is refused as "FILE:LINE: [section] key: problem".
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sqlq {

struct BrokerConfig {
    // One node, or the nodes of a cluster: a client connects to the first that answers, trying
    // the others in turn (amqp::Connection). Never empty.
    std::vector<std::string> urls = {"amqp://guest:guest@127.0.0.1:5672"};
    std::string queue = "sqlq.tasks";
    std::string queue_type = "quorum";  // "quorum" or "classic"
    int prefetch = 3;                   // etc/sqlq.conf: why 3
    int heartbeat_s = 10;
    int delivery_limit = 20;            // quorum queues only: a second guard behind max_attempts
    int reconnect_max_ms = 5000;
    int connect_timeout_ms = 5000;
    // The RabbitMQ node's Erlang name ("rabbit@host"), for `sqlq-supervisor start` to read its
    // consumer_timeout (rabbitmqctl eval); empty: compared with RabbitMQ's default instead.
    std::string node;

    std::string dead_letter_exchange() const { return queue + ".dlx"; }
    std::string dead_letter_queue() const { return queue + ".dead"; }
    // A classic queue lives on one node: in a cluster, while that node is down no client can
    // declare it, and no worker starts. So with several nodes and a quorum task queue the
    // dead-letter queue is a quorum queue too; one node keeps the classic one it always had.
    std::string dead_letter_queue_type() const {
        return urls.size() > 1 && queue_type == "quorum" ? "quorum" : "classic";
    }
};

struct StoreConfig {
    std::string path = "../var/sqlq.db";  // SQLite: one file, for the processes of one host
    std::string url;                      // PostgreSQL (postgresql://...): shared by hosts; replaces path
    std::string durability = "full";    // "full", "normal" or "off"
    int busy_timeout_ms = 10000;
    int lease_ms = 3000;
    // A worker that cannot record a task's outcome (disk full, I/O errors) for this long gives
    // the task up: it exits without acking, so the message is redelivered and the slot refilled.
    int64_t record_timeout_ms = 60000;
    int64_t result_ttl_s = 7 * 24 * 3600;
    int64_t max_result_bytes_per_user = 0;  // 0: no cap; else a user's oldest results go first
    int64_t max_result_bytes = 0;           // 0: no cap; else the oldest results go first
    // How a waiting client (wait, run, cancel) hears that a task ended: "on": the store's
    // notification (TaskStore::watch), with a look at least every wait_poll_ms in case one is
    // lost; "off": polling only, backing off from 5 ms to wait_poll_ms.
    std::string notify = "on";
    int64_t wait_poll_ms = 100;
};

struct QueryConfig {
    std::string database = "../var/demo.db";
    int64_t timeout_ms = 60000;
    int64_t max_rows = 100000;
    int64_t max_bytes = 64 * 1024 * 1024;
    int64_t max_sql_bytes = 1024 * 1024;  // a task's SQL text; submit refuses a longer one
    int max_attempts = 3;
    int64_t memory_limit_mb = 256;
    int64_t temp_limit_mb = 128;          // temporary files of one query (sorts, DISTINCT, big subqueries)
    bool allow_superuser = false;         // PostgreSQL: may the workers' role be a superuser or bypass RLS?
    int64_t max_running_per_user = 0;     // 0: no limit; a user's further tasks wait ("queued: user limit")
    int64_t max_queued_per_user = 0;      // 0: no limit; submit refuses beyond it (exit 7), storing nothing
};

struct SupervisorConfig {
    int workers = 4;
    std::string run_dir = "../var/run";
    int64_t stop_timeout_ms = 30000;
    int64_t watchdog_ms = 30000;
    int64_t cancel_grace_ms = 2000;
    int64_t deadline_grace_ms = 5000;   // busy on one task past query.timeout_ms + this: killed, task failed
    int64_t max_tasks_per_worker = 0;   // 0: never recycle by count
    int64_t max_worker_rss_mb = 0;      // 0: never recycle by memory
    int64_t sweep_interval_ms = 2000;
    int64_t republish_after_ms = 30000;
    int64_t start_timeout_ms = 60000;
    int64_t failed_start_ms = 2000;     // a worker that dies sooner than this after spawn failed to start
    int failed_starts_before_backoff = 3;
    int64_t backoff_initial_ms = 200;
    int64_t backoff_max_ms = 30000;
    std::string worker_path;            // empty: sqlq-worker next to sqlq-supervisor
    std::string log_file;               // empty: <run_dir>/supervisor.log when in the background
    // Where GET /metrics (Prometheus text format) is served, "HOST:PORT"; empty: not served.
    std::string metrics_listen;
};

// The web console, sqlq-web (docs/api.md).
struct WebConfig {
    bool enabled = false;                  // the supervisor keeps sqlq-web running (supervisor/keeper.h)
    std::string listen = "127.0.0.1:8080"; // HOST:PORT; an IPv4 or IPv6 ([::1]:8080) address
    std::string users_file = "../var/users";
    int64_t session_ttl_s = 12 * 3600;     // a session unused this long is signed out
    int64_t max_body_bytes = 2 * 1024 * 1024;  // a bigger request body is refused (413)
    int64_t request_timeout_ms = 10000;    // a request not read whole in this time: the connection is closed
    int64_t submits_per_minute = 60;       // per user; more are refused (429)
    int64_t login_failures_per_minute = 5; // per user name and per address; more are refused (429)
    int64_t tick_ms = 200;                 // how often the live updates look at the store (one query for all pages)
    int64_t max_page_rows = 1000;          // the most rows one result page holds
    std::string trusted_proxy;             // an address whose proxy_user_header is believed ("": none)
    std::string proxy_user_header = "X-Forwarded-User";
};

struct Config {
    std::string file;  // absolute path of the file it was read from
    BrokerConfig broker;
    StoreConfig store;
    QueryConfig query;
    SupervisorConfig supervisor;
    WebConfig web;
};

// Which file to read: the -c option if given, else $SQLQ_CONFIG, else ./etc/sqlq.conf,
// else /etc/sqlq/sqlq.conf.
std::string config_path(const std::string& option);

// Reads and checks a file; relative paths in it become relative to the file's directory.
// Throws sqlq::Error (exit code kExitUsage) naming file, line and key.
Config load_config(const std::string& path);

// load_config(config_path(option)), except that when no config is found anywhere the error
// lists every place it looked. What every binary calls with its -c option.
Config find_and_load_config(const std::string& option);

// For `sqlq-supervisor status` while the file has an error: the run directory it names, found
// without checking anything else. [supervisor] run_dir when the file is TOML and that key a
// string; when it is not TOML, a line `run_dir = "..."` under [supervisor]; else the default.
// Relative to the file's directory, like load_config. nullopt when the file cannot be read.
std::optional<std::string> best_effort_run_dir(const std::string& file);

// Parses config text (for tests and fuzzing); `name` is used in messages, `dir` for paths.
Config parse_config(const std::string& text, const std::string& name, const std::string& dir);

// [web] listen split into host and port (the host without IPv6 brackets); nullopt when it is not
// HOST:PORT with a port 0-65535 (0: any free port, which the tests use; parse_listen_address
// below, for [supervisor] metrics_listen, refuses 0; the two could become one). listen_problem() says what is wrong with it ("" when nothing).
std::optional<std::pair<std::string, int>> split_listen(const std::string& listen);
std::string listen_problem(const std::string& listen);

// A listening address "HOST:PORT": HOST an IPv4 address, an IPv6 address in brackets
// ("[::1]:9464") or "localhost"; PORT 1-65535. nullopt and `problem` set when it is none.
struct ListenAddress {
    std::string host;  // the address as inet_pton reads it ("127.0.0.1", "::1")
    int port = 0;
};
std::optional<ListenAddress> parse_listen_address(const std::string& s, std::string& problem);

// The URL with its password replaced by "***": the only form that may be printed.
std::string redact_url(const std::string& url);
// Every URL redacted, joined by ", " ([broker] url as logs and status show it).
std::string redact_urls(const std::vector<std::string>& urls);

// The scheme of a URL ("postgresql" for postgresql://host/db), or "" when `s` is not one (a
// file path). [query] database is either.
std::string url_scheme(const std::string& s);

}  // namespace sqlq
