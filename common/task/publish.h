#pragma once
// Publishing task messages with publisher confirms, and marking the confirmed tasks published:
// the one path by which `sqlq submit` (and every other front end) and the supervisor's sweeper
// put tasks on the queue. The rows must already be stored: a message always points at a row.
#include <cstdint>
#include <functional>
#include <vector>

#include "amqp/connection.h"
#include "task/store.h"

namespace sqlq {

struct Published {
    std::vector<int64_t> confirmed;  // in the order given; each one marked published
    size_t asked = 0;
    bool all() const { return confirmed.size() == asked; }
};

// Publishes one message per id on `queue` (confirms must be enabled on `conn`), at most
// `window` unconfirmed at a time, waiting up to `confirm_timeout_ms` for each window's
// confirms; marks the confirmed ones published in the store, and adds them to `out.confirmed`.
// A task not confirmed stays unpublished, for the sweeper. Throws amqp::AmqpError when the
// broker fails mid-way: the tasks confirmed before that are marked already and in `out`.
// `progress`, when given, is called after each window with the ids handled so far (confirmed or
// not) and the ids given.
using PublishProgress = std::function<void(size_t done, size_t total)>;
void publish_tasks(Published& out, amqp::Connection& conn, TaskStore& store, const std::string& queue,
                   const std::vector<int64_t>& ids, int confirm_timeout_ms, size_t window = 500,
                   const PublishProgress& progress = {});
inline Published publish_tasks(amqp::Connection& conn, TaskStore& store, const std::string& queue,
                               const std::vector<int64_t>& ids, int confirm_timeout_ms, size_t window = 500,
                               const PublishProgress& progress = {}) {
    Published out;
    publish_tasks(out, conn, store, queue, ids, confirm_timeout_ms, window, progress);
    return out;
}

}  // namespace sqlq
