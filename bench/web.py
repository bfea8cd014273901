"""The web console's figures (issue 16), printed as tables and written to
bench/results/web.json. Not a test: nothing here passes or fails.

  1. Run -> first row on screen for SELECT 1 on an idle fleet, measured inside headless
     Chromium (performance.now() at the click, a MutationObserver at the first result cell).
  2. API latency at a steady 200 requests/s (open loop: requests are sent on schedule whether
     or not earlier ones have answered), GET /api/tasks/N and GET /api/tasks.
  3. The task store's load from the live updates with 1, 100 and 500 open event streams, idle
     and while tasks run: the hub's store queries per second (sqlq-web counts them), and whether
     every stream heard every change.

Run through bench/web.sh (a private RabbitMQ node, the test build's binaries).
"""
import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
import http.client

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/web"))
from webenv import WebEnv  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def run_to_first_row(env, n):
    from browser_test import Browser
    b = Browser(env)
    try:
        b.sign_in("alice")
        b.by_id("editor").send_keys("SELECT 1 AS one")
        times = []
        for _ in range(n + 3):
            ms = b.d.execute_async_script("""
                const done = arguments[arguments.length - 1];
                const before = document.getElementById('detail').dataset.id || '';
                const seen = () => {
                  const d = document.getElementById('detail');
                  const td = document.querySelector('#result-table tbody td');
                  return d.dataset.id && d.dataset.id !== before && d.dataset.status === 'succeeded'
                      && !document.getElementById('result').hidden && td && td.textContent === '1';
                };
                const t0 = performance.now();
                const obs = new MutationObserver(() => { if (seen()) { obs.disconnect(); done(performance.now() - t0); } });
                obs.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
                document.getElementById('run').click();
            """)
            times.append(ms)
        return times[3:]  # the first few warm the connections
    finally:
        b.quit()


def api_latency(env, rate, seconds, path):
    c = env.client("alice")
    lat, errors = [], []
    lock = threading.Lock()
    threads = 8
    per = rate / threads
    start = time.monotonic() + 0.2

    def worker(k):
        conn = http.client.HTTPConnection(env.host, env.port, timeout=10)
        i = 0
        while True:
            due = start + (i + k / threads) / per
            if due > start + seconds:
                break
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            conn.request("GET", path, headers={"Cookie": c.cookie})
            r = conn.getresponse()
            r.read()
            # Measured from when it was due: a late send counts against the server (open loop).
            took = (time.monotonic() - due) * 1000
            with lock:
                (lat if r.status == 200 else errors).append(took)
            i += 1
        conn.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lat, errors


class Streams:
    """n open event streams (idle pages), each counting the task events it hears."""

    def __init__(self, env, cookie, n):
        self.socks, self.counts, self.stop = [], [0] * n, False
        for i in range(n):
            s = socket.create_connection((env.host, env.port))
            s.sendall(("GET /api/events HTTP/1.1\r\nHost: x\r\nCookie: %s\r\n\r\n" % cookie).encode())
            self.socks.append(s)
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self):
        import selectors
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        while not self.stop:
            for key, _ in sel.select(0.2):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                self.counts[key.data] += data.count(b"event: task")

    def close(self):
        self.stop = True
        self.thread.join()
        for s in self.socks:
            s.close()


def live(env, root):
    status, f = root.request("GET", "/api/fleet")
    return f["live"]


def store_load(env, pages, seconds, tasks_per_s):
    root = env.client("root")
    alice = env.client("alice")
    streams = Streams(env, root.cookie, pages)  # admin streams: every change goes to every page
    time.sleep(1.5)  # let them connect (the fleet's answer is cached for a second)
    before = live(env, root)
    t0 = time.monotonic()
    submitted = 0
    while time.monotonic() - t0 < seconds:
        if tasks_per_s:
            alice.submit("SELECT %d" % submitted)
            submitted += 1
            time.sleep(max(0, t0 + submitted / tasks_per_s - time.monotonic()))
        else:
            time.sleep(0.2)
    took = time.monotonic() - t0
    time.sleep(1.5)  # the last changes reach the streams; the fleet cache expires
    after = live(env, root)
    streams.close()
    return {
        "pages": pages, "open_streams": after["streams"], "tasks_per_s": tasks_per_s,
        "store_queries_per_s": round((after["store_queries"] - before["store_queries"]) / (took + 1.5), 2),
        "events_per_page_min": min(streams.counts), "events_per_page_max": max(streams.counts),
        "tasks": submitted,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    quick = a.quick
    env = WebEnv(workers=2, web_extra="submits_per_minute = 100000\n")
    out = {"tick_ms": 100}
    try:
        env.start_fleet()
        env.start_web()
        print("== 1. Run -> first row on screen, SELECT 1, idle fleet (2 workers), in headless Chromium")
        t = run_to_first_row(env, 20 if quick else 100)
        out["first_row_ms"] = {"n": len(t), "p50": round(pct(t, 50), 1), "p99": round(pct(t, 99), 1),
                               "min": round(min(t), 1), "max": round(max(t), 1)}
        print("  n=%d  p50 %.1f ms  p99 %.1f ms  (min %.1f, max %.1f)" % (len(t), pct(t, 50), pct(t, 99), min(t), max(t)))

        print("== 2. API latency at 200 requests/s (open loop, 8 keep-alive connections)")
        alice = env.client("alice")
        tid = alice.submit("SELECT 1")
        alice.wait(tid)
        out["api"] = []
        for path in ["/api/tasks/%d" % tid, "/api/tasks?limit=50"]:
            lat, err = api_latency(env, 200, 5 if quick else 15, path)
            row = {"path": path, "n": len(lat), "errors": len(err), "p50": round(pct(lat, 50), 2),
                   "p99": round(pct(lat, 99), 2), "max": round(max(lat), 2)}
            out["api"].append(row)
            print("  %-22s n=%d errors=%d  p50 %.2f ms  p99 %.2f ms  max %.2f ms" %
                  (path, row["n"], row["errors"], row["p50"], row["p99"], row["max"]))

        print("== 3. Store load of the live updates (tick_ms = 100)")
        print("  %6s %8s %12s %18s %22s" % ("pages", "tasks/s", "streams open", "store queries/s", "events per page min-max"))
        out["store_load"] = []
        for pages in [1, 100, 500]:
            for rate in [0, 5]:
                r = store_load(env, pages, 4 if quick else 10, rate)
                out["store_load"].append(r)
                print("  %6d %8d %12d %18.2f %15d-%d  (of %d tasks)" % (pages, rate, r["open_streams"],
                      r["store_queries_per_s"], r["events_per_page_min"], r["events_per_page_max"], r["tasks"]))
    finally:
        env.close()
    if not quick:
        with open(os.path.join(a.out, "web.json"), "w") as f:
            json.dump(out, f, indent=1)
        print("wrote", os.path.join(a.out, "web.json"))


if __name__ == "__main__":
    main()
