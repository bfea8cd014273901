#include "task/publish.h"

#include <algorithm>

#include "task/message.h"

namespace sqlq {

void publish_tasks(Published& out, amqp::Connection& conn, TaskStore& store, const std::string& queue,
                   const std::vector<int64_t>& ids, int confirm_timeout_ms, size_t window,
                   const PublishProgress& progress) {
    out.asked += ids.size();
    window = std::max<size_t>(window, 1);
    for (size_t first = 0; first < ids.size(); first += window) {
        const size_t last = std::min(ids.size(), first + window);
        uint64_t tag0 = 0, tag1 = 0;
        for (size_t i = first; i < last; ++i) {
            uint64_t tag = conn.publish(queue, encode_message(ids[i]));
            if (i == first) tag0 = tag;
            tag1 = tag;
        }
        // Tags are consecutive on a channel in confirm mode: id i went out as tag0 + (i - first).
        auto acked = conn.wait_confirms(tag0, tag1, confirm_timeout_ms);
        std::vector<int64_t> ok;
        for (size_t i = first; i < last; ++i)
            if (acked.count(tag0 + (i - first))) ok.push_back(ids[i]);
        store.mark_published(ok);
        out.confirmed.insert(out.confirmed.end(), ok.begin(), ok.end());
        if (progress) progress(last, ids.size());
    }
}

}  // namespace sqlq
