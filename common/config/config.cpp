#include "config/config.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <toml++/toml.h>

#include "task/report.h"
#include "util/error.h"

namespace sqlq {
namespace fs = std::filesystem;

namespace {

// One declared key: where it lives, and how a TOML node becomes a field of Config.
struct Key {
    const char* section;
    const char* name;
    std::function<std::string(Config&, const toml::node&)> set;  // returns a problem, or ""
};

std::string where(const std::string& file, const toml::node& node) {
    const auto& src = node.source();
    return file + ":" + std::to_string(src.begin.line);
}

using IntRef = std::function<void(Config&, int64_t)>;
using StrRef = std::function<void(Config&, const std::string&)>;

Key integer(const char* section, const char* name, int64_t min, int64_t max, IntRef store) {
    return {section, name, [=](Config& c, const toml::node& n) -> std::string {
                auto v = n.value_exact<int64_t>();
                if (!v) return "must be an integer";
                if (*v < min || *v > max)
                    return "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                           ", not " + std::to_string(*v);
                store(c, *v);
                return "";
            }};
}

// An Erlang node name as rabbitmqctl -n takes it: NAME@HOST, letters, digits, "_", "-", ".".
bool node_name(const std::string& s) {
    auto at = s.find('@');
    if (at == 0 || at == std::string::npos || at + 1 == s.size() || s.find('@', at + 1) != std::string::npos)
        return false;
    for (unsigned char ch : s)
        if (!std::isalnum(ch) && ch != '_' && ch != '-' && ch != '.' && ch != '@') return false;
    return true;
}

Key text(const char* section, const char* name, std::vector<std::string> allowed, StrRef store) {
    return {section, name, [=](Config& c, const toml::node& n) -> std::string {
                auto v = n.value_exact<std::string>();
                if (!v) return "must be a string";
                if (!allowed.empty()) {
                    bool ok = false;
                    std::string list;
                    for (const auto& a : allowed) {
                        ok = ok || a == *v;
                        list += (list.empty() ? "\"" : ", \"") + a + "\"";
                    }
                    if (!ok) return "must be one of " + list + ", not \"" + *v + "\"";
                } else if (v->empty()) {
                    return "must not be empty";
                }
                store(c, *v);
                return "";
            }};
}

Key path(const char* section, const char* name, StrRef store) {
    return {section, name, [=](Config& c, const toml::node& n) -> std::string {
                auto v = n.value_exact<std::string>();
                if (!v) return "must be a string";
                store(c, *v);
                return "";
            }};
}

Key boolean(const char* section, const char* name, std::function<void(Config&, bool)> store) {
    return {section, name, [=](Config& c, const toml::node& n) -> std::string {
                auto v = n.value_exact<bool>();
                if (!v) return "must be true or false";
                store(c, *v);
                return "";
            }};
}

constexpr int64_t kDay = 24LL * 3600 * 1000;

const std::vector<Key>& keys() {
    static const std::vector<Key> all = {
        // One URL, or an array of them (the nodes of a cluster). A bad element is named by its
        // place and line, and shown redacted: it may hold a password.
        {"broker", "url", [](Config& c, const toml::node& n) -> std::string {
             auto check = [](const std::string& u) -> std::string {
                 if (u.rfind("amqp://", 0) != 0) return "must start with amqp:// (amqps is not supported)";
                 return "";
             };
             if (auto v = n.value_exact<std::string>()) {
                 if (auto problem = check(*v); !problem.empty()) return problem;
                 c.broker.urls = {*v};
                 return "";
             }
             const auto* array = n.as_array();
             if (!array) return "must be a string or an array of strings (the nodes of a cluster)";
             if (array->empty()) return "must name at least one node (an empty array)";
             std::vector<std::string> urls;
             for (size_t i = 0; i < array->size(); ++i) {
                 const toml::node& e = *array->get(i);
                 const std::string which = "element " + std::to_string(i + 1) + " (line " +
                                           std::to_string(e.source().begin.line) + ")";
                 auto v = e.value_exact<std::string>();
                 if (!v) return which + " must be a string";
                 if (auto problem = check(*v); !problem.empty())
                     return which + ", \"" + redact_url(*v) + "\", " + problem;
                 for (const auto& u : urls)
                     if (u == *v) return which + " repeats \"" + redact_url(*v) + "\"";
                 urls.push_back(*v);
             }
             c.broker.urls = std::move(urls);
             return "";
         }},
        text("broker", "queue", {}, [](Config& c, const std::string& v) { c.broker.queue = v; }),
        text("broker", "queue_type", {"quorum", "classic"},
             [](Config& c, const std::string& v) { c.broker.queue_type = v; }),
        integer("broker", "prefetch", 1, 65535, [](Config& c, int64_t v) { c.broker.prefetch = int(v); }),
        integer("broker", "heartbeat_s", 0, 600, [](Config& c, int64_t v) { c.broker.heartbeat_s = int(v); }),
        integer("broker", "delivery_limit", 1, 1000000,
                [](Config& c, int64_t v) { c.broker.delivery_limit = int(v); }),
        integer("broker", "reconnect_max_ms", 10, 600000,
                [](Config& c, int64_t v) { c.broker.reconnect_max_ms = int(v); }),
        integer("broker", "connect_timeout_ms", 10, 600000,
                [](Config& c, int64_t v) { c.broker.connect_timeout_ms = int(v); }),
        {"broker", "node", [](Config& c, const toml::node& n) -> std::string {
             auto v = n.value_exact<std::string>();
             if (!v) return "must be a string";
             if (!v->empty() && !node_name(*v))
                 return "must be a RabbitMQ node name NAME@HOST (like rabbit@mq1), not \"" + *v + "\"";
             c.broker.node = *v;
             return "";
         }},

        path("store", "path", [](Config& c, const std::string& v) { c.store.path = v; }),
        text("store", "url", {}, [](Config& c, const std::string& v) { c.store.url = v; }),
        text("store", "durability", {"full", "normal", "off"},
             [](Config& c, const std::string& v) { c.store.durability = v; }),
        integer("store", "busy_timeout_ms", 0, 600000,
                [](Config& c, int64_t v) { c.store.busy_timeout_ms = int(v); }),
        integer("store", "lease_ms", 300, 3600000, [](Config& c, int64_t v) { c.store.lease_ms = int(v); }),
        integer("store", "record_timeout_ms", 100, kDay,
                [](Config& c, int64_t v) { c.store.record_timeout_ms = v; }),
        integer("store", "result_ttl_s", 1, 3650LL * 24 * 3600,
                [](Config& c, int64_t v) { c.store.result_ttl_s = v; }),
        integer("store", "max_result_bytes_per_user", 0, 1LL << 50,
                [](Config& c, int64_t v) { c.store.max_result_bytes_per_user = v; }),
        integer("store", "max_result_bytes", 0, 1LL << 50, [](Config& c, int64_t v) { c.store.max_result_bytes = v; }),
        text("store", "notify", {"on", "off"}, [](Config& c, const std::string& v) { c.store.notify = v; }),
        integer("store", "wait_poll_ms", 5, kDay, [](Config& c, int64_t v) { c.store.wait_poll_ms = v; }),

        path("query", "database", [](Config& c, const std::string& v) { c.query.database = v; }),
        integer("query", "timeout_ms", 1, kDay, [](Config& c, int64_t v) { c.query.timeout_ms = v; }),
        integer("query", "max_rows", 1, 1LL << 40, [](Config& c, int64_t v) { c.query.max_rows = v; }),
        integer("query", "max_bytes", 1, 1LL << 40, [](Config& c, int64_t v) { c.query.max_bytes = v; }),
        integer("query", "max_sql_bytes", 1, 1LL << 30, [](Config& c, int64_t v) { c.query.max_sql_bytes = v; }),
        integer("query", "max_attempts", 1, 1000, [](Config& c, int64_t v) { c.query.max_attempts = int(v); }),
        integer("query", "memory_limit_mb", 1, 1 << 20,
                [](Config& c, int64_t v) { c.query.memory_limit_mb = v; }),
        integer("query", "temp_limit_mb", 1, 1 << 20, [](Config& c, int64_t v) { c.query.temp_limit_mb = v; }),
        boolean("query", "allow_superuser", [](Config& c, bool v) { c.query.allow_superuser = v; }),
        integer("query", "max_running_per_user", 0, 1 << 20,
                [](Config& c, int64_t v) { c.query.max_running_per_user = v; }),
        integer("query", "max_queued_per_user", 0, 1LL << 40,
                [](Config& c, int64_t v) { c.query.max_queued_per_user = v; }),

        integer("supervisor", "workers", 0, 4096, [](Config& c, int64_t v) { c.supervisor.workers = int(v); }),
        path("supervisor", "run_dir", [](Config& c, const std::string& v) { c.supervisor.run_dir = v; }),
        integer("supervisor", "stop_timeout_ms", 0, kDay,
                [](Config& c, int64_t v) { c.supervisor.stop_timeout_ms = v; }),
        integer("supervisor", "watchdog_ms", 100, kDay, [](Config& c, int64_t v) { c.supervisor.watchdog_ms = v; }),
        integer("supervisor", "cancel_grace_ms", 0, kDay,
                [](Config& c, int64_t v) { c.supervisor.cancel_grace_ms = v; }),
        integer("supervisor", "deadline_grace_ms", 100, kDay,
                [](Config& c, int64_t v) { c.supervisor.deadline_grace_ms = v; }),
        integer("supervisor", "max_tasks_per_worker", 0, 1LL << 40,
                [](Config& c, int64_t v) { c.supervisor.max_tasks_per_worker = v; }),
        integer("supervisor", "max_worker_rss_mb", 0, 1 << 20,
                [](Config& c, int64_t v) { c.supervisor.max_worker_rss_mb = v; }),
        integer("supervisor", "sweep_interval_ms", 50, kDay,
                [](Config& c, int64_t v) { c.supervisor.sweep_interval_ms = v; }),
        integer("supervisor", "republish_after_ms", 100, kDay,
                [](Config& c, int64_t v) { c.supervisor.republish_after_ms = v; }),
        integer("supervisor", "start_timeout_ms", 100, kDay,
                [](Config& c, int64_t v) { c.supervisor.start_timeout_ms = v; }),
        integer("supervisor", "failed_start_ms", 0, kDay,
                [](Config& c, int64_t v) { c.supervisor.failed_start_ms = v; }),
        integer("supervisor", "failed_starts_before_backoff", 1, 1000,
                [](Config& c, int64_t v) { c.supervisor.failed_starts_before_backoff = int(v); }),
        integer("supervisor", "backoff_initial_ms", 1, kDay,
                [](Config& c, int64_t v) { c.supervisor.backoff_initial_ms = v; }),
        integer("supervisor", "backoff_max_ms", 1, kDay,
                [](Config& c, int64_t v) { c.supervisor.backoff_max_ms = v; }),
        path("supervisor", "worker_path", [](Config& c, const std::string& v) { c.supervisor.worker_path = v; }),
        path("supervisor", "log_file", [](Config& c, const std::string& v) { c.supervisor.log_file = v; }),

        boolean("web", "enabled", [](Config& c, bool v) { c.web.enabled = v; }),
        text("web", "listen", {}, [](Config& c, const std::string& v) { c.web.listen = v; }),
        text("web", "users_file", {}, [](Config& c, const std::string& v) { c.web.users_file = v; }),
        integer("web", "session_ttl_s", 60, 365LL * 24 * 3600, [](Config& c, int64_t v) { c.web.session_ttl_s = v; }),
        integer("web", "max_body_bytes", 1024, 1LL << 30, [](Config& c, int64_t v) { c.web.max_body_bytes = v; }),
        integer("web", "request_timeout_ms", 100, 3600000,
                [](Config& c, int64_t v) { c.web.request_timeout_ms = v; }),
        integer("web", "submits_per_minute", 1, 1000000, [](Config& c, int64_t v) { c.web.submits_per_minute = v; }),
        integer("web", "login_failures_per_minute", 1, 1000000,
                [](Config& c, int64_t v) { c.web.login_failures_per_minute = v; }),
        integer("web", "tick_ms", 10, 60000, [](Config& c, int64_t v) { c.web.tick_ms = v; }),
        integer("web", "max_page_rows", 1, 1000000, [](Config& c, int64_t v) { c.web.max_page_rows = v; }),
        path("web", "trusted_proxy", [](Config& c, const std::string& v) { c.web.trusted_proxy = v; }),
        text("web", "proxy_user_header", {}, [](Config& c, const std::string& v) { c.web.proxy_user_header = v; }),
        {"supervisor", "metrics_listen", [](Config& c, const toml::node& n) -> std::string {
             auto v = n.value_exact<std::string>();
             if (!v) return "must be a string";
             std::string problem;
             if (!v->empty() && !parse_listen_address(*v, problem)) return problem;
             c.supervisor.metrics_listen = *v;
             return "";
         }},
    };
    return all;
}

std::string relative_to(const std::string& dir, const std::string& p) {
    if (p.empty() || fs::path(p).is_absolute()) return p;
    return (fs::path(dir) / p).lexically_normal().string();
}

}  // namespace

namespace {
const char* const kInstalledConfig = "/etc/sqlq/sqlq.conf";
}  // namespace

std::string config_path(const std::string& option) {
    if (!option.empty()) return option;
    if (const char* env = std::getenv("SQLQ_CONFIG"); env && *env) return env;
    // Not found also when the working directory is unreadable (`sudo -u sqlq sqlq` from a home).
    if (std::error_code ec; fs::exists("etc/sqlq.conf", ec)) return "etc/sqlq.conf";
    return kInstalledConfig;
}

Config find_and_load_config(const std::string& option) {
    const std::string path = config_path(option);
    const char* env = std::getenv("SQLQ_CONFIG");
    // Fell back to the installed place and nothing is there: "no config anywhere", not "your
    // -c is wrong".
    if (option.empty() && !(env && *env) && path == kInstalledConfig) {
        std::error_code ec;
        if (!fs::exists(path, ec) && !ec)
            throw Error(std::string("no config file: looked at -c (not given), $SQLQ_CONFIG (not set), "
                                    "./etc/sqlq.conf, ") + kInstalledConfig, kExitUsage);
    }
    return load_config(path);
}

Config parse_config(const std::string& text_in, const std::string& name, const std::string& dir) {
    toml::table root;
    try {
        root = toml::parse(text_in, name);
    } catch (const toml::parse_error& e) {
        throw Error(name + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()),
                    kExitUsage);
    }
    Config c;
    c.file = name;
    for (auto&& [section_name, section_node] : root) {
        const std::string section(section_name.str());
        const auto* table = section_node.as_table();
        bool known_section = false;
        for (const auto& k : keys()) known_section = known_section || section == k.section;
        if (!known_section)
            throw Error(where(name, section_node) + ": unknown section [" + section + "]", kExitUsage);
        if (!table)
            throw Error(where(name, section_node) + ": [" + section + "] must be a table", kExitUsage);
        for (auto&& [key_name, node] : *table) {
            const std::string key(key_name.str());
            const Key* spec = nullptr;
            for (const auto& k : keys())
                if (section == k.section && key == k.name) spec = &k;
            if (!spec) throw Error(where(name, node) + ": [" + section + "] " + key + ": unknown key", kExitUsage);
            if (auto problem = spec->set(c, node); !problem.empty())
                throw Error(where(name, node) + ": [" + section + "] " + key + ": " + problem, kExitUsage);
        }
    }
    // Checks that span keys.
    auto fail = [&](const std::string& section, const std::string& key, const std::string& problem) {
        const toml::node* node = root[section][key].node();
        std::string at = node ? where(name, *node) : name;
        throw Error(at + ": [" + section + "] " + key + ": " + problem, kExitUsage);
    };
    if (c.store.path.empty()) fail("store", "path", "must not be empty");
    if (!c.store.url.empty()) {
        const std::string scheme = url_scheme(c.store.url);
        if (scheme != "postgresql" && scheme != "postgres")
            fail("store", "url", "must start with postgresql:// (a PostgreSQL task store; [store] path names a SQLite one)");
        if (root["store"]["path"].node())
            fail("store", "url", "set either [store] path (SQLite, one host) or [store] url (PostgreSQL), not both");
    }
    if (c.query.database.empty()) fail("query", "database", "must not be empty");
    if (c.supervisor.run_dir.empty()) fail("supervisor", "run_dir", "must not be empty");
    if (c.supervisor.backoff_max_ms < c.supervisor.backoff_initial_ms)
        fail("supervisor", "backoff_max_ms", "must not be below backoff_initial_ms");
    // A worker says "alive" every kAliveIntervalMs when idle; a watchdog at or below that kills
    // healthy idle workers over and over. Twice the interval leaves room for one late report.
    if (c.supervisor.watchdog_ms < 2 * kAliveIntervalMs)
        fail("supervisor", "watchdog_ms",
             "must be at least " + std::to_string(2 * kAliveIntervalMs) + " (workers report alive every " +
                 std::to_string(kAliveIntervalMs) + " ms; less kills healthy workers), not " +
                 std::to_string(c.supervisor.watchdog_ms));
    // On a quorum queue the broker dead-letters a message after delivery_limit redeliveries. Each
    // attempt of a task takes at least one delivery, so a limit below max_attempts drops the
    // message while sqlq would still retry: the task is left queued or running with no message.
    if (c.broker.queue_type == "quorum" && c.broker.delivery_limit < c.query.max_attempts) {
        const std::string why = ": the broker would drop a task's message before sqlq gives the task up";
        if (root["broker"]["delivery_limit"].node())
            fail("broker", "delivery_limit",
                 "must not be below [query] max_attempts (" + std::to_string(c.query.max_attempts) + ")" + why);
        fail("query", "max_attempts",
             "must not be above [broker] delivery_limit (" + std::to_string(c.broker.delivery_limit) +
                 ") on a quorum queue" + why);
    }
    // Not checked here on purpose: [store] lease_ms against the supervisor's watchdog and hard
    // deadline (nothing to fit: a live owner on this host keeps its task whatever its lease, and
    // the supervisor ends a stuck one), and [query] timeout_ms against RabbitMQ's
    // consumer_timeout, a broker setting that no config file holds (`sqlq-supervisor start`
    // warns instead; see docs/operations.md, "Timeouts that must fit together").

    if (auto why = listen_problem(c.web.listen); !why.empty()) fail("web", "listen", why);

    c.store.path = relative_to(dir, c.store.path);
    // A URL names a server, not a file: it stays as written.
    if (url_scheme(c.query.database).empty()) c.query.database = relative_to(dir, c.query.database);
    c.supervisor.run_dir = relative_to(dir, c.supervisor.run_dir);
    c.supervisor.worker_path = relative_to(dir, c.supervisor.worker_path);
    c.supervisor.log_file = relative_to(dir, c.supervisor.log_file);
    c.web.users_file = relative_to(dir, c.web.users_file);
    return c;
}

Config load_config(const std::string& file) {
    std::ifstream in(file);
    if (!in) {
        const int err = errno;
        throw Error(file + ": cannot read the config file: " + std::strerror(err), kExitUsage);
    }
    std::stringstream buf;
    buf << in.rdbuf();
    auto abs = fs::absolute(file).lexically_normal();
    Config c = parse_config(buf.str(), file, abs.parent_path().string());
    c.file = abs.string();
    return c;
}

std::optional<std::string> best_effort_run_dir(const std::string& file) {
    std::ifstream in(file);
    if (!in) return std::nullopt;
    std::stringstream buf;
    buf << in.rdbuf();
    const std::string text = buf.str();
    std::string run_dir = SupervisorConfig{}.run_dir;
    try {
        toml::table root = toml::parse(text, file);
        if (auto v = root["supervisor"]["run_dir"].value_exact<std::string>(); v && !v->empty()) run_dir = *v;
    } catch (const toml::parse_error&) {
        // Not TOML (a half-typed line somewhere): look for the one line that matters.
        std::istringstream lines(text);
        std::string section;
        for (std::string line; std::getline(lines, line);) {
            auto first = line.find_first_not_of(" \t");
            if (first == std::string::npos) continue;
            line = line.substr(first);
            if (line[0] == '[') {
                section = line.substr(1, line.find(']') - 1);
                continue;
            }
            if (section != "supervisor" || line.rfind("run_dir", 0) != 0) continue;
            auto q1 = line.find('"'), q2 = line.find('"', q1 + 1);
            auto eq = line.find('=');
            if (eq != std::string::npos && q1 != std::string::npos && q2 != std::string::npos && eq < q1 &&
                line.find_first_not_of(" \t", 7) == eq && q2 > q1 + 1)
                run_dir = line.substr(q1 + 1, q2 - q1 - 1);
        }
    }
    return relative_to(fs::absolute(file).lexically_normal().parent_path().string(), run_dir);
}

std::optional<std::pair<std::string, int>> split_listen(const std::string& listen) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) return std::nullopt;
    std::string host = listen.substr(0, colon), port = listen.substr(colon + 1);
    if (host.front() == '[') {
        if (host.back() != ']' || host.size() < 3) return std::nullopt;
        host = host.substr(1, host.size() - 2);
    }
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    int p = std::stoi(port);
    if (p > 65535) return std::nullopt;
    return std::make_pair(host, p);
}

std::string listen_problem(const std::string& listen) {
    if (!split_listen(listen)) return "must be HOST:PORT (e.g. \"127.0.0.1:8080\", \"[::1]:8080\"), not \"" + listen + "\"";
    return "";
}

std::optional<ListenAddress> parse_listen_address(const std::string& s, std::string& problem) {
    const std::string shape = "must be HOST:PORT (\"127.0.0.1:9464\", \"[::1]:9464\"), not \"" + s + "\"";
    auto colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) {
        problem = shape;
        return std::nullopt;
    }
    std::string host = s.substr(0, colon);
    const std::string port = s.substr(colon + 1);
    const bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
    if (bracketed) host = host.substr(1, host.size() - 2);
    if (host == "localhost") host = "127.0.0.1";
    unsigned char buf[sizeof(in6_addr)];
    const bool v4 = !bracketed && inet_pton(AF_INET, host.c_str(), buf) == 1;
    const bool v6 = bracketed && inet_pton(AF_INET6, host.c_str(), buf) == 1;
    if (!v4 && !v6) {
        problem = shape + ": the host must be an IPv4 address, an IPv6 address in brackets, or localhost";
        return std::nullopt;
    }
    int n = 0;
    bool digits = !port.empty() && port.size() <= 5;
    for (char ch : port) {
        digits = digits && std::isdigit(static_cast<unsigned char>(ch));
        if (digits) n = n * 10 + (ch - '0');
    }
    if (!digits || n < 1 || n > 65535) {
        problem = shape + ": the port must be a number from 1 to 65535";
        return std::nullopt;
    }
    return ListenAddress{host, n};
}

std::string redact_url(const std::string& url) {
    // amqp://user:password@host...: hide what lies between the first ':' after the scheme and
    // the last '@', since a password may hold a raw '@' or '/' (not a valid URL, but its error
    // message must show none of it). Hiding too much (an '@' in the vhost) is harmless.
    auto scheme = url.find("://");
    if (scheme == std::string::npos) return url;
    std::string out = url;
    auto at = out.rfind('@');
    if (at != std::string::npos && at >= scheme + 3) {
        auto colon = out.find(':', scheme + 3);
        if (colon != std::string::npos && colon < at) out = out.substr(0, colon + 1) + "***" + out.substr(at);
    }
    // libpq's URLs may carry it as a parameter too: ...?password=SECRET&...
    auto query = out.find('?');
    for (size_t p = query; p != std::string::npos && p < out.size(); p = out.find('&', p + 1)) {
        if (out.compare(p + 1, 9, "password=") != 0) continue;
        const size_t v = p + 10;
        size_t e = out.find('&', v);
        if (e == std::string::npos) e = out.size();
        out.replace(v, e - v, "***");
    }
    return out;
}

std::string redact_urls(const std::vector<std::string>& urls) {
    std::string out;
    for (const auto& u : urls) out += (out.empty() ? "" : ", ") + redact_url(u);
    return out;
}

std::string url_scheme(const std::string& s) {
    // RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) followed here by "://".
    auto end = s.find("://");
    if (end == std::string::npos || end == 0 || !std::isalpha(static_cast<unsigned char>(s[0]))) return "";
    for (size_t i = 1; i < end; ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if (!std::isalnum(c) && c != '+' && c != '-' && c != '.') return "";
    }
    return s.substr(0, end);
}

}  // namespace sqlq
