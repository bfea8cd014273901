#include "task/pg_watch.h"

#include <cerrno>
#include <ctime>
#include <poll.h>

#include "util/clock.h"
#include "util/error.h"

namespace sqlq {

PgWatch::PgWatch(pg::ConnParams params, std::string url) : params_(std::move(params)), url_(std::move(url)) {
    if (!listen()) throw Error("cannot listen for the task store's changes");
}

bool PgWatch::listen() {
    last_try_ = mono_ms();
    std::string why;
    pg::Conn c = params_.connect(url_, why);
    if (!c) return false;
    pg::Result r(PQexec(c.get(), "LISTEN sqlq_tasks"));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return false;
    conn_ = std::move(c);
    return true;
}

bool PgWatch::drain() {
    if (!PQconsumeInput(conn_.get())) {
        conn_.reset();  // broken: made again by the next wait()
        return true;
    }
    bool notified = false;
    while (PGnotify* n = PQnotifies(conn_.get())) {
        notified = true;
        PQfreemem(n);
    }
    return notified;
}

bool PgWatch::wait(int64_t timeout_ms) {
    const int64_t deadline = mono_ms() + std::max<int64_t>(timeout_ms, 0);
    for (;;) {
        if (!conn_) {
            if (mono_ms() - last_try_ >= 1000 && listen()) return true;  // back: look again
            // Down: sleep out the timeout (a signal ends it early).
            const int64_t left = deadline - mono_ms();
            if (left <= 0) return false;
            timespec ts{time_t(left / 1000), long(left % 1000) * 1000000};
            nanosleep(&ts, nullptr);
            return false;
        }
        if (drain()) return true;
        const int64_t left = deadline - mono_ms();
        if (left <= 0) return false;
        pollfd p{PQsocket(conn_.get()), POLLIN, 0};
        const int rc = ::poll(&p, 1, int(std::min<int64_t>(left, 60000)));
        if (rc < 0 && errno == EINTR) return false;  // a signal: the caller looks at its flag
        if (rc == 0 && mono_ms() >= deadline) return false;
    }
}

}  // namespace sqlq
