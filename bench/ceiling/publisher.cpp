// sqlq-bench-publisher: the broker's publish ceiling with confirms, and the queue helpers the
// bench driver needs (declare, purge, delete, wait for consumers). Prints one JSON object.
//
//   sqlq-bench-publisher publish --port P --queue Q [--type classic|quorum] --count N
//                                [--confirm each|batch] [--window 100]
//   sqlq-bench-publisher declare|purge|delete --port P --queue Q [--type T]
//   sqlq-bench-publisher consumers --port P --queue Q --wait N [--timeout-ms 60000]
//       waits until the queue has N consumers; prints the ms it took
#include <cstdio>
#include <ctime>
#include <string>

#include "amqp_min.h"
#include "args.h"

namespace {

int publish(bench::Conn& c, const bench::Args& a) {
    const std::string queue = a.str("queue", "bench.ceiling");
    const long count = a.num("count", 10000);
    const bool each = a.str("confirm", "batch") == "each";
    const long window = each ? 1 : a.num("window", 100);
    c.declare(queue, a.str("type", "classic"));
    c.select_confirms();
    const int64_t t0 = bench::now_ns();
    uint64_t tag = 0;
    for (long i = 0; i < count; i += window) {
        for (long j = i; j < std::min(count, i + window); ++j)
            c.publish(queue, "{\"v\":1,\"task_id\":" + std::to_string(1000000 + j) + "}"), ++tag;
        c.wait_confirmed(tag);
    }
    const double s = double(bench::now_ns() - t0) / 1e9;
    std::printf("{\"messages\":%ld,\"window\":%ld,\"seconds\":%.6f,\"rate\":%.1f}\n", count, window, s,
                double(count) / s);
    return 0;
}

int wait_consumers(bench::Conn& c, const bench::Args& a) {
    const std::string queue = a.str("queue", "bench.ceiling");
    const uint32_t want = uint32_t(a.num("wait", 1));
    const int64_t t0 = bench::now_ns(), limit = a.num("timeout-ms", 60000) * 1'000'000;
    for (;;) {
        uint32_t messages = 0, consumers = 0;
        c.inspect(queue, messages, consumers);
        if (consumers == want) {
            std::printf("{\"consumers\":%u,\"ms\":%.3f}\n", consumers, double(bench::now_ns() - t0) / 1e6);
            return 0;
        }
        if (bench::now_ns() - t0 > limit) {
            std::fprintf(stderr, "sqlq-bench-publisher: %s has %u consumers, not %u\n", queue.c_str(), consumers,
                         want);
            return 1;
        }
        timespec ts{0, 5'000'000};
        nanosleep(&ts, nullptr);
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: sqlq-bench-publisher publish|declare|purge|delete|consumers --port P ...\n");
        return 2;
    }
    const std::string cmd = argv[1];
    try {
        bench::Args a(argc, argv, 2);
        bench::Conn c(a.str("host", "127.0.0.1"), int(a.num("port", 5672)));
        int rc = 0;
        const std::string queue = a.str("queue", "bench.ceiling");
        if (cmd == "publish") rc = publish(c, a);
        else if (cmd == "declare") c.declare(queue, a.str("type", "classic"));
        else if (cmd == "purge") c.purge(queue);
        else if (cmd == "delete") c.remove(queue);
        else if (cmd == "consumers") rc = wait_consumers(c, a);
        else throw std::runtime_error("unknown command " + cmd);
        c.close();
        return rc;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sqlq-bench-publisher %s: %s\n", cmd.c_str(), e.what());
        return 1;
    }
}
