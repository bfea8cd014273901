// sqlq-bench-consumer: the broker's consume ceiling. C processes (one connection each, like
// sqlq's workers) drain N messages that are already in the queue, acking each one and doing
// nothing else. Prints one JSON object: messages per second from the release of the consumers
// to the last ack.
//
// With --publish, the queue starts empty and the parent publishes the N messages while the
// consumers drain them: persistent, with confirms in windows of --window (as `sqlq submit
// --batch` does). That is the broker's end-to-end ceiling, the same message flow as a task's:
// publish, confirm, deliver, ack. The clock runs from the first publish to the last ack.
//
// With --delay-us D, each consumer sleeps D µs after each ack: the same flow at a lower rate
// (bench.py's cpu section throttles it to sqlq's, to compare CPU per message at equal rates).
//
//   sqlq-bench-consumer --port P --queue Q --count N [--consumers C] [--prefetch 1]
//                       [--publish 1 [--window 500]] [--delay-us D]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "amqp_min.h"
#include "args.h"

namespace {

// Shared by the parent and its children (an anonymous shared mapping made before fork).
struct Shared {
    std::atomic<int> ready{0};
    std::atomic<int> go{0};
    std::atomic<int> failed{0};
    std::atomic<long> acked{0};
    std::atomic<int64_t> done_ns{0};
};

void nap_us(long us) {
    timespec ts{0, us * 1000};
    nanosleep(&ts, nullptr);
}

int child(Shared& sh, const bench::Args& a, long count) {
    try {
        bench::Conn c(a.str("host", "127.0.0.1"), int(a.num("port", 5672)));
        c.qos(int(a.num("prefetch", 1)));
        const long delay_us = a.num("delay-us", 0);
        if (delay_us < 0 || delay_us >= 1'000'000) throw std::runtime_error("--delay-us must be 0 to 999999");
        ++sh.ready;
        // Everyone starts together, so the drain rate is that of C consumers, not of the first.
        while (!sh.go.load()) nap_us(200);
        c.consume(a.str("queue", "bench.ceiling"));
        long seen = 0;
        int64_t seen_at = bench::now_ns();
        while (sh.acked.load() < count) {
            // Fewer messages than `count` in the queue: give up instead of waiting forever.
            if (long n = sh.acked.load(); n != seen) seen = n, seen_at = bench::now_ns();
            else if (bench::now_ns() - seen_at > 10'000'000'000)
                throw std::runtime_error("no message for 10 s: the queue holds fewer than --count");
            amqp_maybe_release_buffers(c.get());
            amqp_envelope_t env;
            timeval tv{0, 50'000};
            amqp_rpc_reply_t r = amqp_consume_message(c.get(), &env, &tv, 0);
            if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) continue;
            c.check(r, "consume");
            uint64_t tag = env.delivery_tag;
            amqp_destroy_envelope(&env);
            c.ack(tag);
            if (sh.acked.fetch_add(1) + 1 == count) sh.done_ns = bench::now_ns();
            if (delay_us > 0) nap_us(delay_us);
        }
        c.close();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sqlq-bench-consumer[%d]: %s\n", getpid(), e.what());
        ++sh.failed;
        ++sh.ready;
        return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        bench::Args a(argc, argv, 1);
        const long count = a.num("count", 10000);
        const int consumers = int(a.num("consumers", 1));
        void* mem = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) throw std::runtime_error("mmap failed");
        auto* sh = new (mem) Shared;
        for (int i = 0; i < consumers; ++i) {
            pid_t pid = fork();
            if (pid < 0) throw std::runtime_error("fork failed");
            if (pid == 0) _exit(child(*sh, a, count));
        }
        while (sh->ready.load() < consumers) nap_us(500);
        const int64_t t0 = bench::now_ns();
        sh->go = 1;
        if (a.num("publish", 0)) {
            bench::Conn pub(a.str("host", "127.0.0.1"), int(a.num("port", 5672)));
            pub.select_confirms();
            const long window = a.num("window", 500);
            const std::string queue = a.str("queue", "bench.ceiling"), body = "{\"v\":1,\"task_id\":1}";
            uint64_t tag = 0;
            for (long i = 0; i < count; i += window) {
                for (long j = i; j < std::min(count, i + window); ++j) pub.publish(queue, body), ++tag;
                pub.wait_confirmed(tag);
            }
            pub.close();
        }
        int bad = 0;
        for (int i = 0; i < consumers; ++i) {
            int st = 0;
            wait(&st);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++bad;
        }
        if (bad || sh->failed) throw std::runtime_error(std::to_string(bad) + " consumer(s) failed");
        const double s = double(sh->done_ns.load() - t0) / 1e9;
        std::printf("{\"messages\":%ld,\"consumers\":%d,\"prefetch\":%ld,\"seconds\":%.6f,\"rate\":%.1f}\n", count,
                    consumers, a.num("prefetch", 1), s, double(count) / s);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sqlq-bench-consumer: %s\n", e.what());
        return 1;
    }
}
