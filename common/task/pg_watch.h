#pragma once
// The PostgreSQL store's watch (TaskStore::watch): LISTEN on the channel sqlq_tasks, on a
// connection of its own. A trigger on the tasks table notifies it once per statement that
// changes a status or requests a cancel (task/pg_store.cpp), on commit, whichever host made it.
#include <cstdint>
#include <string>

#include "pg/conninfo.h"
#include "task/store.h"

namespace sqlq {

class PgWatch final : public StoreWatch {
public:
    // Connects and listens; throws Error when the server cannot be reached (TaskStore::watch()
    // then falls back to polling).
    PgWatch(pg::ConnParams params, std::string url);

    // A broken connection is made again (at most once a second) and reported as a change: what
    // was notified while it was down is lost, so the caller looks.
    bool wait(int64_t timeout_ms) override;
    bool live() const override { return bool(conn_); }
    int fd() const override { return conn_ ? PQsocket(conn_.get()) : -1; }

private:
    bool listen();    // connects and LISTENs; false (and no connection) when it cannot
    bool drain();     // reads what arrived; true when a notification was among it
    pg::ConnParams params_;
    std::string url_;
    pg::Conn conn_;
    int64_t last_try_ = 0;  // mono_ms of the last attempt to connect
};

}  // namespace sqlq
