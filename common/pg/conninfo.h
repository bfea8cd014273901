#pragma once
// A libpq URL made into connection parameters, and libpq's messages made fit to show: shared by
// the PostgreSQL query target and the PostgreSQL task store.
#include <cstdint>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include "pg/handles.h"

namespace sqlq::pg {

// libpq's messages end with a newline, and a connection failure can hold several lines: one line.
std::string tidy(std::string s);
// `msg` with the password of `url` (what redact_url hides) replaced by ***.
std::string scrub(std::string msg, const std::string& url);

// The parameters of a URL, then ours: `options` after the URL's own (so that the URL cannot
// undo them), our application_name and UTF8 (replacing the URL's), TCP keepalives unless the URL
// sets them. connect_timeout is taken out (the caller waits itself, non-blocking).
struct ConnParams {
    std::vector<std::string> keys, values;
    int64_t connect_timeout_ms = 10000;
    // Throws Error naming `what` (e.g. "[store] url") when libpq cannot read the URL; the message
    // never holds the password.
    static ConnParams from_url(const std::string& url, const std::string& what, const std::string& options,
                               const std::string& application_name);
    // A connection started (PQconnectStartParams), not yet made: PQconnectPoll it.
    Conn start() const;
    // A connection made, waiting at most connect_timeout_ms; null with `error` (tidy, without
    // the password of `url`) when it could not be made.
    Conn connect(const std::string& url, std::string& error) const;
};

}  // namespace sqlq::pg
