#!/usr/bin/python3
"""The sqlq benchmarks (issue 7), driven against a private RabbitMQ node that bench/run.sh
starts. Prints tables, writes bench/results/*.json and bench/results/throughput.png.

Every figure is the median of several rounds with its min and max. Ratios (sqlq against the
ceiling, sqlq against the reference consumer) are taken inside one round, from measurements made
back to back, and then summarised the same way: these machines are shared and noisy.
"""
import argparse
import datetime
import json
import os
import platform
import random
import resource
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TERMINAL = ("succeeded", "failed", "cancelled")
TRIVIAL = "SELECT 1"
# An aggregate over the demo database's 200k-row table (about 35 ms of CPU on the reference machine).
MODERATE = "SELECT count(*), round(sum(amount), 2), max(amount) FROM orders"
# The same aggregate on the PostgreSQL demo database (round() of a double needs a numeric there).
# A query that runs until it is cancelled (hours on the demo file): the orphan measures' task.
SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) SELECT count(*) FROM c"
PG_MODERATE = "SELECT count(*), round(sum(amount)::numeric, 2), max(amount) FROM orders"
# A query that runs until it is cancelled.
LONG = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000000) SELECT count(*) FROM n"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def summary(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def fmt(s, unit="", scale=1.0, digits=0):
    if s is None:
        return "-"
    f = "{:.%df}" % digits
    return f"{f.format(s['median'] * scale)}{unit} [{f.format(s['min'] * scale)}–{f.format(s['max'] * scale)}]"


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def mem_of(pid):
    """RSS and PSS in kB from /proc/PID/smaps_rollup."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for ln in f:
                k, _, v = ln.partition(":")
                if k in ("Rss", "Pss"):
                    out[k.lower()] = int(v.split()[0])
    except OSError:
        return None
    return out


class Bench:
    def __init__(self, a):
        self.a = a
        self.build = a.build
        self.port = a.port
        self.work = a.work
        self.demo = a.demo
        self.bin = {
            "sqlq": os.path.join(a.build, "client", "sqlq"),
            "sup": os.path.join(a.build, "supervisor", "sqlq-supervisor"),
            "pub": os.path.join(a.build, "bench", "sqlq-bench-publisher"),
            "cons": os.path.join(a.build, "bench", "sqlq-bench-consumer"),
            "lat": os.path.join(a.build, "bench", "sqlq-bench-latency"),
            "claim_cost": os.path.join(a.build, "bench", "sqlq-bench-claim-cost"),
            "reference_pg": os.path.join(a.build, "bench", "sqlq-bench-reference-pg"),
        }
        self.seq = 0
        self.results = {}

    # --- plumbing ---

    def conf(self, qtype="quorum", durability="full", workers=4, database=None, prefetch=1, **extra):
        self.seq += 1
        d = os.path.join(self.work, f"run{self.seq:04d}")
        os.makedirs(d)
        sup = {"workers": workers, "run_dir": os.path.join(d, "run")}
        sup.update(extra)
        text = f"""[broker]
url = "amqp://guest:guest@127.0.0.1:{self.port}"
queue = "bench.e2e.{self.seq}"
queue_type = "{qtype}"
prefetch = {prefetch}
[store]
path = "{os.path.join(d, 'sqlq.db')}"
durability = "{durability}"
[query]
database = "{database or self.demo}"
[supervisor]
""" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sup.items())
        path = os.path.join(d, "sqlq.conf")
        with open(path, "w") as f:
            f.write(text)
        return {"path": path, "dir": d, "queue": f"bench.e2e.{self.seq}", "store": os.path.join(d, "sqlq.db"),
                "run_dir": sup["run_dir"], "qtype": qtype, "durability": durability}

    def run(self, *cmd, stdin=None, check=True):
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])}...: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        return r

    def pub(self, cmd, **kw):
        args = [self.bin["pub"], cmd, "--port", str(self.port)]
        for k, v in kw.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        out = self.run(*args).stdout.strip()
        return json.loads(out) if out else None

    def sup(self, c, cmd, *args, check=True):
        return self.run(self.bin["sup"], cmd, "-c", c["path"], *args, check=check)

    def sqlq(self, c, *args, stdin=None, check=True):
        return self.run(self.bin["sqlq"], "-c", c["path"], *args, stdin=stdin, check=check)

    def status(self, c):
        return json.loads(self.sup(c, "status", "--json").stdout)

    def drop_queue(self, c):
        for q in (c["queue"], c["queue"] + ".dead"):
            try:
                self.pub("delete", queue=q)
            except (RuntimeError, OSError):  # OSError: a build without the bench tools (-DSQLQ_BENCH=OFF)
                pass

    def wait_done(self, store, n, timeout=900):
        """Waits until n tasks are terminal; returns (last finished_at in s, succeeded count)."""
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
        deadline = time.time() + timeout
        while True:
            (done,) = db.execute("SELECT count(*) FROM tasks WHERE status IN ('succeeded','failed','cancelled')").fetchone()
            if done >= n:
                last, ok = db.execute("SELECT max(finished_at), count(*) FILTER (WHERE status='succeeded') FROM tasks").fetchone()
                db.close()
                return last / 1000.0, ok
            if time.time() > deadline:
                raise RuntimeError(f"{store}: only {done} of {n} tasks finished in {timeout} s")
            time.sleep(0.02)

    # --- 1. the ceiling ---

    def drain(self, qtype, consumers, prefetch, n):
        q = f"bench.ceiling.{qtype}"
        self.pub("declare", queue=q, type=qtype)
        self.pub("purge", queue=q)
        self.pub("publish", queue=q, type=qtype, count=n, confirm="batch", window=100)
        r = json.loads(self.run(self.bin["cons"], "--port", str(self.port), "--queue", q, "--count", str(n),
                                "--consumers", str(consumers), "--prefetch", str(prefetch)).stdout)
        return r["rate"]

    def flow(self, qtype, consumers, n):
        """The end-to-end ceiling: publish n messages with confirms while C consumers drain them."""
        q = f"bench.flow.{qtype}"
        self.pub("declare", queue=q, type=qtype)
        self.pub("purge", queue=q)
        r = json.loads(self.run(self.bin["cons"], "--port", str(self.port), "--queue", q, "--count", str(n),
                                "--consumers", str(consumers), "--prefetch", "1", "--publish", "1",
                                "--window", "500").stdout)
        return r["rate"]

    def publish_rate(self, qtype, confirm, n):
        q = f"bench.ceiling.{qtype}"
        self.pub("declare", queue=q, type=qtype)
        self.pub("purge", queue=q)
        r = self.pub("publish", queue=q, type=qtype, count=n, confirm=confirm, window=100)
        self.pub("purge", queue=q)
        return r["rate"]

    def ceiling(self):
        a = self.a
        rows = []
        for rnd in range(a.rounds):
            for qt in a.qtypes:
                for p in (1, 100):
                    for w in a.workers:
                        rate = self.drain(qt, w, p, a.trivial)
                        rows.append({"round": rnd, "queue_type": qt, "what": f"consume prefetch {p}", "consumers": w, "rate": rate})
                for w in a.workers:
                    rate = self.flow(qt, w, a.trivial)
                    rows.append({"round": rnd, "queue_type": qt, "what": "publish + consume prefetch 1", "consumers": w, "rate": rate})
                for confirm, n in (("each", a.publish_each), ("batch", a.trivial)):
                    rate = self.publish_rate(qt, confirm, n)
                    rows.append({"round": rnd, "queue_type": qt, "what": f"publish confirm {confirm}", "consumers": None, "rate": rate})
            log(f"ceiling: round {rnd + 1}/{a.rounds} done")
        out = []
        for key in sorted({(r["queue_type"], r["what"], r["consumers"] or 0) for r in rows}):
            xs = [r["rate"] for r in rows if (r["queue_type"], r["what"], r["consumers"] or 0) == key]
            out.append({"queue_type": key[0], "what": key[1], "consumers": key[2] or None, "rate": summary(xs)})
        self.results["ceiling"] = {"samples": rows, "summary": out}

    # --- 2 and 3. end to end: sqlq and the reference consumer ---

    def e2e_sqlq(self, qtype, workers, durability, sql, n, database=None, prefetch=1):
        c = self.conf(qtype, durability, workers, database=database, prefetch=prefetch, start_timeout_ms=120000)
        self.sup(c, "start")
        try:
            t0 = time.time()
            self.sqlq(c, "submit", "--user", "bench", "--batch", "-", stdin=(sql + "\n") * n)
            submitted = time.time() - t0
            last, ok = self.wait_done(c["store"], n)
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
        if ok != n:
            log(f"warning: sqlq {qtype}/{workers}/{durability}: {n - ok} of {n} tasks did not succeed")
        return n / (last - t0), submitted

    def e2e_reference(self, qtype, workers, durability, sql, n):
        c = self.conf(qtype, durability, workers)
        self.sqlq(c, "list")  # creates the task store with sqlq's schema
        sync = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}[durability]
        try:
            procs, logf = self.start_reference(c, workers, self.reference_argv(c, sync))
            try:
                t0 = time.time()
                self.sqlq(c, "submit", "--user", "bench", "--batch", "-", stdin=(sql + "\n") * n)
                last, ok = self.wait_done(c["store"], n)
            finally:
                self.stop_reference(procs, logf)
        finally:
            self.drop_queue(c)
        if ok != n:
            log(f"warning: reference {qtype}/{workers}/{durability}: {n - ok} of {n} tasks did not succeed")
        return n / (last - t0)

    def throughput(self):
        a = self.a
        rows = []
        for rnd in range(a.rounds):
            for qt in a.qtypes:
                for w in a.workers:
                    ceil = self.drain(qt, w, 1, a.trivial)
                    rows.append({"round": rnd, "queue_type": qt, "workers": w, "query": "ceiling", "durability": None,
                                 "system": "ceiling", "rate": ceil})
                    flow = self.flow(qt, w, a.trivial)
                    rows.append({"round": rnd, "queue_type": qt, "workers": w, "query": "ceiling", "durability": None,
                                 "system": "ceiling-flow", "rate": flow})
                    for query, sql, n, durs in (("trivial", TRIVIAL, a.trivial, a.durabilities),
                                                ("moderate", MODERATE, a.moderate, a.moderate_durabilities)):
                        for d in durs:
                            s, sub = self.e2e_sqlq(qt, w, d, sql, n)
                            r = self.e2e_reference(qt, w, d, sql, n)
                            base = {"round": rnd, "queue_type": qt, "workers": w, "query": query, "durability": d}
                            rows.append(dict(base, system="sqlq", rate=s, submit_s=sub, of_ceiling=s / ceil,
                                             of_flow=s / flow, of_reference=s / r))
                            rows.append(dict(base, system="reference", rate=r, of_ceiling=r / ceil, of_flow=r / flow))
                            log(f"throughput r{rnd + 1} {qt} w={w} {query} {d}: sqlq {s:.0f}/s, reference {r:.0f}/s, "
                                f"ceiling {ceil:.0f}/s (drain), {flow:.0f}/s (publish + consume)")
                            if query == "trivial":
                                # [broker] prefetch = 3: an outcome and the next claim in one
                                # transaction (docs/architecture.md, "One transaction per task").
                                s3, sub3 = self.e2e_sqlq(qt, w, d, sql, n, prefetch=3)
                                rows.append(dict(base, system="sqlq prefetch 3", rate=s3, submit_s=sub3,
                                                 of_ceiling=s3 / ceil, of_flow=s3 / flow, of_reference=s3 / r))
                                log(f"throughput r{rnd + 1} {qt} w={w} {query} {d}: sqlq prefetch 3 {s3:.0f}/s")
        out = []
        keys = sorted({(r["queue_type"], r["workers"], r["query"], r["durability"] or "", r["system"]) for r in rows})
        for k in keys:
            sel = [r for r in rows if (r["queue_type"], r["workers"], r["query"], r["durability"] or "", r["system"]) == k]
            out.append({"queue_type": k[0], "workers": k[1], "query": k[2], "durability": k[3] or None, "system": k[4],
                        "rate": summary([r["rate"] for r in sel]),
                        "of_ceiling": summary([r.get("of_ceiling") for r in sel]),
                        "of_flow": summary([r.get("of_flow") for r in sel]),
                        "of_reference": summary([r.get("of_reference") for r in sel])})
        self.results["throughput"] = {"samples": rows, "summary": out,
                                      "queries": {"trivial": TRIVIAL, "moderate": MODERATE},
                                      "tasks": {"trivial": a.trivial, "moderate": a.moderate}}

    # --- 4. respawn ---

    def parse_log(self, path):
        """(epoch seconds, slot, pid) of every 'ready' line of the supervisor's log."""
        out = []
        rx = re.compile(r"^(\S+) .*slot (\d+) pid (\d+): ready in")
        with open(path, errors="replace") as f:
            for ln in f:
                m = rx.match(ln)
                if m:
                    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
                    out.append((t, int(m.group(2)), int(m.group(3))))
        return out

    def wait_replaced(self, c, old, timeout=30):
        """Waits until no slot runs one of the old pids and every slot is ready."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status(c)
            ws = st["workers"]
            if len(ws) == st["target"] and all(w["state"] in ("ready", "busy") and w["pid"] not in old for w in ws):
                return {w["slot"]: w["pid"] for w in ws}
            time.sleep(0.01)
        raise RuntimeError("the fleet did not come back in time")

    def respawn(self):
        a = self.a
        c = self.conf("quorum", "full", a.respawn_workers)
        self.sup(c, "start")
        logpath = os.path.join(c["run_dir"], "supervisor.log")
        one, every, fleet = [], [], []
        try:
            for i in range(a.kills + a.kill_alls):
                # Kill only healthy workers: one that dies within failed_start_ms of its start is a
                # failed start, and a few in a row (rightly) put its slot into backoff.
                while True:
                    ws = self.status(c)["workers"]
                    ws.sort(key=lambda w: -w["uptime_ms"])
                    chosen = ws[:1] if i < a.kills else ws
                    young = min(w["uptime_ms"] for w in chosen)
                    if young >= 2200:
                        break
                    time.sleep((2200 - young) / 1000.0)
                victims = {w["pid"]: w["slot"] for w in chosen}
                t_kill = time.time()
                for pid in victims:
                    os.kill(pid, signal.SIGKILL)
                now_pids = self.wait_replaced(c, victims)
                time.sleep(0.05)  # the log line is flushed at once, but give the file a moment
                ready = self.parse_log(logpath)
                ms = []
                for pid, slot in victims.items():
                    t = [t for (t, s, p) in ready if s == slot and p == now_pids[slot]]
                    if t:
                        ms.append((t[-1] - t_kill) * 1000.0)
                if i < a.kills:
                    one.extend(ms)
                else:
                    every.extend(ms)
                    fleet.append(max(ms))
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)

        def stats(xs):
            return {"p50": pct(xs, 50), "p99": pct(xs, 99), "max": max(xs) if xs else None, "n": len(xs)}

        self.results["respawn"] = {"workers": a.respawn_workers, "one": stats(one), "all_per_worker": stats(every),
                                   "all_fleet": stats(fleet), "samples_one": one, "samples_all": every}

    # --- 5. cancel ---

    def cancel_samples(self, c, sql, n):
        """Submits `sql` n times to the running fleet of `c`, cancels each once it runs: the stop
        times the store recorded (cancel requested → cancelled, ms) and the times from the start
        of `sqlq cancel` until the task is seen ended (ms)."""
        stop_ms, wall_ms = [], []
        db = sqlite3.connect(f"file:{c['store']}?mode=ro", uri=True, timeout=30)
        try:
            for _ in range(n):
                tid = int(self.sqlq(c, "submit", "--user", "bench", sql).stdout.strip())
                while db.execute("SELECT status FROM tasks WHERE id=?", (tid,)).fetchone()[0] != "running":
                    time.sleep(0.005)
                time.sleep(0.1)  # well inside the query
                t = time.time()
                self.sqlq(c, "cancel", "--user", "bench", str(tid), check=False)
                while db.execute("SELECT status FROM tasks WHERE id=?", (tid,)).fetchone()[0] not in TERMINAL:
                    time.sleep(0.002)
                wall_ms.append((time.time() - t) * 1000.0)
                row = db.execute("SELECT status, finished_at - cancel_requested_at FROM tasks WHERE id=?", (tid,)).fetchone()
                if row[0] != "cancelled":
                    log(f"warning: cancel: task {tid} ended {row[0]}")
                stop_ms.append(row[1])
        finally:
            db.close()
        return stop_ms, wall_ms

    def cancel(self):
        a = self.a
        c = self.conf("quorum", "full", 2)
        self.sup(c, "start")
        try:
            stop_ms, wall_ms = self.cancel_samples(c, LONG, a.cancels)
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
        self.results["cancel"] = {
            "stop_ms": {"p50": pct(stop_ms, 50), "p99": pct(stop_ms, 99), "max": max(stop_ms), "n": len(stop_ms)},
            "observed_ms": {"p50": pct(wall_ms, 50), "p99": pct(wall_ms, 99), "max": max(wall_ms), "n": len(wall_ms)},
            "samples_stop_ms": stop_ms}

    # --- 11. the PostgreSQL target ---

    def postgres(self):
        """End-to-end tasks/s on a PostgreSQL target beside the same run on the SQLite demo file
        (the store is SQLite in both), and cancel latency of a running PostgreSQL query."""
        a = self.a
        if not a.pg_url:
            raise RuntimeError("no --pg-url (bench/run.sh starts a private PostgreSQL server)")
        rows = []
        for rnd in range(a.rounds):
            for w in a.workers:
                for query, sqls, n in (("trivial", (TRIVIAL, TRIVIAL), a.trivial),
                                       ("moderate", (MODERATE, PG_MODERATE), a.moderate)):
                    for target, db, sql in (("sqlite", None, sqls[0]), ("postgres", a.pg_url, sqls[1])):
                        rate, _ = self.e2e_sqlq("quorum", w, "normal", sql, n, database=db)
                        rows.append({"round": rnd, "workers": w, "query": query, "target": target, "rate": rate})
                    log(f"postgres r{rnd + 1} w={w}: " + ", ".join(
                        f"{r['query']} {r['target']} {r['rate']:.0f}/s" for r in rows[-4:] if r["workers"] == w))
        out = []
        for key in sorted({(r["workers"], r["query"], r["target"]) for r in rows}):
            xs = [r["rate"] for r in rows if (r["workers"], r["query"], r["target"]) == key]
            out.append({"workers": key[0], "query": key[1], "target": key[2], "rate": summary(xs)})

        # Cancel: `sqlq cancel` returns once the task is cancelled, and the worker records that only
        # after the server has ended the statement (or after closing the connection).
        c = self.conf("quorum", "normal", 2, database=a.pg_url)
        self.sup(c, "start")
        try:
            stop_ms, wall_ms = self.cancel_samples(c, "SELECT pg_sleep(600)", max(a.cancels, 60))  # n >= 50 even in --quick
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
        self.results["postgres"] = {
            "samples": rows, "summary": out, "tasks": {"trivial": a.trivial, "moderate": a.moderate},
            "cancel": {"stop_ms": {"p50": pct(stop_ms, 50), "p99": pct(stop_ms, 99), "max": max(stop_ms), "n": len(stop_ms)},
                       "command_ms": {"p50": pct(wall_ms, 50), "p99": pct(wall_ms, 99), "max": max(wall_ms), "n": len(wall_ms)}}}

    # --- 12. the cross-host overlap window ---

    def pg_super(self, db, sql):
        """One statement as the PostgreSQL server's superuser, over its socket: its rows, each a
        list of the |-separated values."""
        r = self.run(os.path.join(ROOT, "scripts", "postgres.sh"), "psql", self.a.pg_dir, "-d", db, "-tAc", sql)
        return [ln.split("|") for ln in r.stdout.splitlines() if ln]

    def overlap_round(self, variant, store_db, store_url, lease_ms, watchdog_ms, heartbeat_s):
        """Two hosts on one PostgreSQL store, one worker each; host B is this machine in a UTS
        namespace of its own (hostname hostb), so host A's worker is a remote owner for it and only
        its lease (or its supervisor's record of its loss) says when it is gone. A's worker runs a
        PostgreSQL query and is SIGSTOPped (wedged) at t=0; B is started then. Times from t=0: B's
        takeover (attempt 2's start, the store's clock), A's worker killed by its own supervisor
        (watchdog), A's statement gone from pg_stat_activity."""
        self.seq += 1
        queue = f"bench.overlap.{self.seq}"
        marker = f"overlap-{self.seq}-{int(time.time())}"
        conf = {}
        for host in ("a", "b"):
            conf[host] = self.store_conf(store_url, 1, queue=queue, host=host, query=self.a.pg_url,
                                         broker={"heartbeat_s": heartbeat_s}, store={"lease_ms": lease_ms},
                                         watchdog_ms=watchdog_ms)
        a, b = conf["a"], conf["b"]
        started_b = False
        self.sup(a, "start")
        try:
            tid = int(self.sqlq(a, "submit", "--user", "bench", f"SELECT pg_sleep(50), '{marker}'").stdout.strip())
            pid = self.running_pid(a, tid, "overlap, host A")
            app = f"sqlq-worker {pid}"
            active = f"(SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' AND state = 'active')"
            while self.pg_super(store_db, f"SELECT {active}")[0][0] != "1":
                time.sleep(0.02)
            t0 = time.time()
            os.kill(pid, signal.SIGSTOP)
            self.run("unshare", "--uts", "sh", "-c", 'hostname hostb && exec "$0" "$@"', self.bin["sup"], "start",
                     "-c", b["path"])
            started_b = True
            seen = {}
            deadline = t0 + 120
            wanted = ("takeover", "killed", "statement_gone")
            while not all(k in seen for k in wanted) and time.time() < deadline:
                now = time.time()
                n, attempts, started_at, owner = self.pg_super(
                    store_db, f"SELECT {active}, attempts, started_at, owner FROM sqlq_tasks WHERE id = {tid}")[0]
                if "takeover" not in seen and int(attempts) >= 2:
                    seen["takeover"] = int(started_at) / 1000.0 - t0
                    seen["by"] = owner.rsplit(":", 1)[0]
                if "killed" not in seen and not os.path.exists(f"/proc/{pid}"):
                    seen["killed"] = now - t0
                if "statement_gone" not in seen and n == "0":
                    seen["statement_gone"] = now - t0
                time.sleep(0.05)
            if not all(k in seen for k in wanted):
                raise RuntimeError(f"overlap: {variant}: only {sorted(seen)} within 120 s")
            self.sqlq(a, "cancel", "--no-wait", str(tid), check=False)
        finally:
            if started_b:
                self.sup(b, "stop", check=False)
            self.sup(a, "stop", check=False)
            self.drop_queue(a)
        seen["process_overlap"] = max(0.0, seen["killed"] - seen["takeover"])
        seen["statement_overlap"] = max(0.0, seen["statement_gone"] - seen["takeover"])
        log(f"overlap {variant}: takeover by {seen['by']} at {seen['takeover']:.2f} s, A killed at {seen['killed']:.2f} s, "
            f"A's statement gone at {seen['statement_gone']:.2f} s")
        return seen

    def overlap(self):
        """The cross-host overlap window (issue 13): how long a wedged worker's query on one host
        lives on beside the takeover by another host, at the default lease and watchdog and with
        the lease an operator can set to close it (1.5 x (watchdog_ms + 2 s), see
        docs/reliability.md), each with the default broker heartbeat and a short one."""
        a = self.a
        if not a.pg_url:
            raise RuntimeError("no --pg-url (bench/run.sh starts a private PostgreSQL server)")
        port = re.search(r"@[^:/]+:(\d+)/", a.pg_url).group(1)
        password = "overlap-store-pw"
        self.pg_super("postgres", "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqlq_overlap') "
                                  f"THEN CREATE ROLE sqlq_overlap LOGIN PASSWORD '{password}'; END IF; END $$")
        # The broker's heartbeat decides when it drops the wedged worker's connection and so when
        # B gets the delivery; the lease (or A's record of its worker's loss) when B may take over.
        variants = [("defaults", 3000, 30000, 10), ("heartbeat_s = 2", 3000, 30000, 2),
                    ("lease_ms = 48000", 48000, 30000, 10), ("lease_ms = 48000, heartbeat_s = 2", 48000, 30000, 2)]
        rows = []
        for rnd in range(a.overlap_rounds):
            for variant, lease, watchdog, heartbeat in variants:
                db = f"sqlq_overlap_{rnd}_{lease}_{heartbeat}"
                self.pg_super("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
                self.pg_super("postgres", f"CREATE DATABASE {db} OWNER sqlq_overlap")
                url = f"postgresql://sqlq_overlap:{password}@127.0.0.1:{port}/{db}"
                try:
                    r = self.overlap_round(variant, db, url, lease, watchdog, heartbeat)
                except RuntimeError as e:  # one round that went wrong must not lose the others
                    log(f"overlap {variant}, round {rnd + 1}: skipped: {e}")
                    continue
                finally:
                    self.pg_super("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
                r.update({"round": rnd, "variant": variant, "lease_ms": lease, "watchdog_ms": watchdog,
                          "heartbeat_s": heartbeat})
                rows.append(r)
        out = []
        for variant, lease, watchdog, heartbeat in variants:
            sel = [r for r in rows if r["variant"] == variant]
            out.append({"variant": variant, "lease_ms": lease, "watchdog_ms": watchdog, "heartbeat_s": heartbeat,
                        **{k: summary([r[k] for r in sel]) for k in
                           ("takeover", "killed", "statement_gone", "process_overlap", "statement_overlap")},
                        "taken_over_by": sorted({r["by"] for r in sel})})
        self.results["overlap"] = {"samples": rows, "summary": out}

    # --- 14. the PostgreSQL task store (issue 15) ---

    def pg_store(self, tag):
        """A fresh database on the private server for one run's task store: its URL (the role
        sqlq_bench_store owns it; dropped by pg_store_drop)."""
        port = re.search(r"@[^:/]+:(\d+)/", self.a.pg_url).group(1)
        if not getattr(self, "_pg_store_role", False):
            self.pg_super("postgres", "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqlq_bench_store') "
                                      "THEN CREATE ROLE sqlq_bench_store LOGIN PASSWORD 'bench-store-pw'; END IF; END $$")
            self._pg_store_role = True
        self.seq += 1
        db = f"sqlq_bench_store_{self.seq}_{tag}"
        self.pg_super("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        self.pg_super("postgres", f"CREATE DATABASE {db} OWNER sqlq_bench_store")
        return db, f"postgresql://sqlq_bench_store:bench-store-pw@127.0.0.1:{port}/{db}"

    def pg_store_drop(self, db):
        self.pg_super("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    def store_conf(self, store_url, workers, queue=None, host="", query=None, broker=None, store=None, **extra):
        """A config on a PostgreSQL task store; `queue` shares one queue between hosts; `query`
        the target (default: the SQLite demo file, as in the throughput runs); `broker`, `store`
        and the keyword arguments ([supervisor]) add keys to their sections."""
        self.seq += 1
        d = os.path.join(self.work, f"pgstore{self.seq:04d}{host}")
        os.makedirs(d)
        queue = queue or f"bench.pgstore.{self.seq}"
        sections = {
            "broker": {"url": f"amqp://guest:guest@127.0.0.1:{self.port}", "queue": queue, "queue_type": "quorum",
                       **(broker or {})},
            "store": {"url": store_url, **(store or {})},
            "query": {"database": query or self.demo},
            "supervisor": {"workers": workers, "run_dir": os.path.join(d, "run"), "start_timeout_ms": 120000, **extra},
        }
        path = os.path.join(d, "sqlq.conf")
        with open(path, "w") as f:
            for name, keys in sections.items():
                f.write(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()))
        return {"path": path, "dir": d, "queue": queue, "run_dir": sections["supervisor"]["run_dir"]}

    def pg_wait_done(self, db, n, timeout=900):
        """wait_done on a PostgreSQL store: (last finished_at in s, succeeded count)."""
        deadline = time.time() + timeout
        while True:
            done, last, ok = self.pg_super(db, "SELECT count(*) FILTER (WHERE status IN ('succeeded','failed','cancelled')), "
                                               "coalesce(max(finished_at), 0), count(*) FILTER (WHERE status = 'succeeded') "
                                               "FROM sqlq_tasks")[0]
            if int(done) >= n:
                return int(last) / 1000.0, int(ok)
            if time.time() > deadline:
                raise RuntimeError(f"{db}: only {done} of {n} tasks finished in {timeout} s")
            time.sleep(0.05)

    def start_host_b(self, c):
        """Starts a supervisor as a second host: this machine in a UTS namespace of its own."""
        self.run("unshare", "--uts", "sh", "-c", 'hostname hostb && exec "$0" "$@"', self.bin["sup"], "start",
                 "-c", c["path"])

    def pg_e2e(self, workers, n, hosts=1, prefetch=1):
        """Trivial tasks/s on a PostgreSQL task store: `hosts` supervisors (the second in a UTS
        namespace) sharing the store and the queue, `workers` in all, at [broker] `prefetch`."""
        db, url = self.pg_store(f"e2e{workers}x{hosts}p{prefetch}")
        confs = []
        try:
            queue = None
            for h in range(hosts):
                c = self.store_conf(url, workers // hosts, queue=queue, host="ab"[h], broker={"prefetch": prefetch})
                queue = c["queue"]
                (self.sup(c, "start") if h == 0 else self.start_host_b(c))
                confs.append(c)
            t0 = time.time()
            self.sqlq(confs[0], "submit", "--user", "bench", "--batch", "-", stdin=(TRIVIAL + "\n") * n)
            last, ok = self.pg_wait_done(db, n)
        finally:
            for c in confs:
                self.sup(c, "stop", check=False)
            if confs:
                self.drop_queue(confs[0])
            self.pg_store_drop(db)
        if ok != n:
            log(f"warning: pgstore {workers} workers, {hosts} hosts: {n - ok} of {n} tasks did not succeed")
        return n / (last - t0)

    def pg_e2e_reference(self, workers, n):
        """pg_e2e for the reference consumer: `workers` sqlq-bench-reference-pg on a fresh
        PostgreSQL store, consuming before sqlq (no fleet started) stores and publishes the tasks."""
        db, url = self.pg_store(f"ref{workers}")
        c = self.store_conf(url, workers)
        try:
            self.sqlq(c, "list")  # creates the task store with sqlq's schema
            procs, logf = self.start_reference(c, workers, [self.bin["reference_pg"], "--port", str(self.port), "--queue",
                                                            c["queue"], "--store-url", url, "--db", self.demo])
            try:
                t0 = time.time()
                self.sqlq(c, "submit", "--user", "bench", "--batch", "-", stdin=(TRIVIAL + "\n") * n)
                last, ok = self.pg_wait_done(db, n)
            finally:
                self.stop_reference(procs, logf)
        finally:
            self.drop_queue(c)
            self.pg_store_drop(db)
        if ok != n:
            log(f"warning: pgstore reference, {workers} consumers: {n - ok} of {n} tasks did not succeed")
        return n / (last - t0)

    def pg_running(self, db, tid):
        """(status, attempts, started_at ms, owner) of one task on a PostgreSQL store."""
        s, att, st, owner = self.pg_super(db, f"SELECT status, attempts, coalesce(started_at, 0), coalesce(owner, '') "
                                              f"FROM sqlq_tasks WHERE id = {tid}")[0]
        return s, int(att), int(st), owner

    def running_pid(self, c, tid, what):
        """The pid of the worker of fleet `c` running task tid, once one runs it (60 s at most)."""
        deadline = time.time() + 60
        while True:
            pid = next((w["pid"] for w in self.status(c)["workers"] if w.get("task") == tid), 0)
            if pid:
                return pid
            if time.time() > deadline:
                raise RuntimeError(f"{what}: task {tid} never ran")
            time.sleep(0.01)

    def rerun_ms(self, db, tid, t0, what):
        """Milliseconds from t0 (this machine's clock, the store's too) until task tid runs again:
        attempt 2's started_at."""
        deadline = t0 + 120
        while True:
            s, att, started, _ = self.pg_running(db, tid)
            if att >= 2 and s == "running":
                return (started / 1000.0 - t0) * 1000
            if time.time() > deadline:
                raise RuntimeError(f"{what}: task {tid} not running again within 120 s ({s}, attempt {att})")
            time.sleep(0.005)

    @staticmethod
    def spread(ms):
        return {"p50": pct(ms, 50), "p99": pct(ms, 99), "max": max(ms), "n": len(ms)}

    def orphan_samples(self, db, c, n):
        """n times: a long task runs; its worker is SIGKILLed at t0; the time until the task runs
        again is one sample."""
        out = []
        for _ in range(n):
            tid = int(self.sqlq(c, "submit", "--user", "bench", SLOW).stdout.strip())
            pid = self.running_pid(c, tid, "orphan")
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            out.append(self.rerun_ms(db, tid, t0, "orphan"))
            self.sqlq(c, "cancel", str(tid), check=False)
        return out

    def pgstore(self):
        """Issue 15's figures: tasks/s on the PostgreSQL task store at 1/4/8/40 workers beside the
        SQLite store and the reference consumer on the same PostgreSQL store, and with two hosts
        sharing it; how soon an orphaned task runs again (its worker killed, its supervisor alive;
        a whole host killed, so only the lease tells); and submit → `sqlq wait` returns, SELECT 1
        on an idle fleet of 4, on both stores."""
        a = self.a
        if not a.pg_url:
            raise RuntimeError("no --pg-url (bench/run.sh starts a private PostgreSQL server)")
        n = a.trivial
        rows = []
        for rnd in range(a.rounds):
            for w in a.workers:
                sqlite_rate, _ = self.e2e_sqlq("quorum", w, "full", TRIVIAL, n)
                pg_rate = self.pg_e2e(w, n)
                ref_rate = self.pg_e2e_reference(w, n)
                rows.append({"round": rnd, "workers": w, "hosts": 1, "prefetch": 1, "sqlite": sqlite_rate,
                             "postgres": pg_rate, "reference": ref_rate})
                # At prefetch 3 an outcome and the next claim share one transaction (one WAL flush
                # per task): 8 workers, against the same round's reference.
                pg3 = self.pg_e2e(w, n, prefetch=3) if w == 8 else None
                if pg3:
                    rows.append({"round": rnd, "workers": w, "hosts": 1, "prefetch": 3, "sqlite": None,
                                 "postgres": pg3, "reference": ref_rate})
                two = self.pg_e2e(w, n, hosts=2) if w >= 4 else None
                if two:
                    rows.append({"round": rnd, "workers": w, "hosts": 2, "prefetch": 1, "sqlite": None, "postgres": two,
                                 "reference": None})
                log(f"pgstore r{rnd + 1} w={w}: sqlite store {sqlite_rate:.0f}/s, postgres store {pg_rate:.0f}/s, "
                    f"reference on the postgres store {ref_rate:.0f}/s" + (f", two hosts {two:.0f}/s" if two else "")
                    + (f", postgres store at prefetch 3 {pg3:.0f}/s" if pg3 else ""))
        out = []
        for key in sorted({(r["workers"], r["hosts"], r.get("prefetch", 1)) for r in rows}):
            sel = [r for r in rows if (r["workers"], r["hosts"], r.get("prefetch", 1)) == key]
            one = key[1] == 1  # the reference: one host only
            out.append({"workers": key[0], "hosts": key[1], "prefetch": key[2],
                        "sqlite": summary([r["sqlite"] for r in sel]) if sel[0]["sqlite"] else None,
                        "postgres": summary([r["postgres"] for r in sel]),
                        "ratio": summary([r["postgres"] / r["sqlite"] for r in sel]) if sel[0]["sqlite"] else None,
                        "reference": summary([r["reference"] for r in sel]) if one else None,
                        "of_reference": summary([r["postgres"] / r["reference"] for r in sel]) if one else None})

        # Orphans. A worker SIGKILLed, its supervisor alive: the broker gives the delivery back at
        # once and the supervisor records the loss, so another worker takes over without the lease.
        res = {"samples": rows, "summary": out, "tasks": n}
        db, url = self.pg_store("orphan")
        c = self.store_conf(url, 4)
        self.sup(c, "start")
        try:
            ms = self.orphan_samples(db, c, a.kills)
            res["orphan_worker_ms"] = self.spread(ms)
            log(f"pgstore: worker killed → task running again p50 {pct(ms, 50):.0f} ms, p99 {pct(ms, 99):.0f} ms")
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
            self.pg_store_drop(db)

        # A whole host SIGKILLed (its supervisor and its worker, nothing recorded): host B takes
        # the task over once its lease (lease_ms, default 3000) has run out. B is started only once
        # the task runs on A (else the broker might hand it to B first), and stopped after.
        db, url = self.pg_store("host")
        samples = []
        try:
            for i in range(a.host_kills):
                host_a = self.store_conf(url, 1, host="a")
                host_b = self.store_conf(url, 2, queue=host_a["queue"], host="b")
                self.sup(host_a, "start")
                started_b = False
                try:
                    tid = int(self.sqlq(host_a, "submit", "--user", "bench", SLOW).stdout.strip())
                    pid = self.running_pid(host_a, tid, "host kill, host A")
                    self.start_host_b(host_b)
                    started_b = True
                    sup_pid = self.status(host_a)["pid"]
                    t0 = time.time()
                    os.kill(sup_pid, signal.SIGKILL)
                    os.kill(pid, signal.SIGKILL)
                    samples.append(self.rerun_ms(db, tid, t0, "host kill"))
                    self.sqlq(host_b, "cancel", str(tid), check=False)
                finally:
                    if started_b:
                        self.sup(host_b, "stop", check=False)
                    self.sup(host_a, "stop", check=False)
                    self.drop_queue(host_a)
            res["orphan_host_ms"] = dict(self.spread(samples), lease_ms=3000)
            log(f"pgstore: host killed → task running again p50 {pct(samples, 50):.0f} ms, p99 {pct(samples, 99):.0f} ms")
        finally:
            self.pg_store_drop(db)

        # submit → `sqlq wait` returns (two processes, as a script runs them), idle fleet of 4.
        def wait_samples(c):
            ms = []
            for i in range(a.latency_whole_n + 10):
                t0 = time.time()
                tid = self.sqlq(c, "submit", "--user", "bench", TRIVIAL).stdout.strip()
                self.sqlq(c, "wait", tid, "--timeout", "60")
                if i >= 10:
                    ms.append((time.time() - t0) * 1000)
            return self.spread(ms)
        c = self.conf("quorum", "full", 4)
        self.sup(c, "start")
        try:
            res["wait_sqlite_ms"] = wait_samples(c)
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
        db, url = self.pg_store("wait")
        c = self.store_conf(url, 4)
        self.sup(c, "start")
        try:
            res["wait_postgres_ms"] = wait_samples(c)
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
            self.pg_store_drop(db)
        log(f"pgstore: submit → wait, SQLite store p50 {res['wait_sqlite_ms']['p50']:.1f} ms, "
            f"PostgreSQL store p50 {res['wait_postgres_ms']['p50']:.1f} ms")
        res["machine"] = machine(a)
        self.results["pgstore"] = res

    # --- 6 and 7. memory and scale ---

    def fleet_memory(self, c):
        st = self.status(c)
        workers = [mem_of(w["pid"]) for w in st["workers"]]
        workers = [m for m in workers if m]
        sup = mem_of(st["pid"])
        return {"workers": len(workers),
                "worker_rss_kb": summary([m["rss"] for m in workers]),
                "worker_pss_kb": summary([m["pss"] for m in workers]),
                "supervisor_rss_kb": sup["rss"], "supervisor_pss_kb": sup["pss"],
                "fleet_rss_kb": sum(m["rss"] for m in workers) + sup["rss"],
                "fleet_pss_kb": sum(m["pss"] for m in workers) + sup["pss"]}

    def memory(self):
        c = self.conf("quorum", "full", 4)
        self.sup(c, "start")
        try:
            time.sleep(1)
            idle = self.fleet_memory(c)
            # Busy: every worker in a moderate aggregate; sample while they run.
            self.sqlq(c, "submit", "--user", "bench", "--batch", "-", stdin=(MODERATE + "\n") * 200)
            peak = {}
            db = sqlite3.connect(f"file:{c['store']}?mode=ro", uri=True, timeout=30)
            while db.execute("SELECT count(*) FROM tasks WHERE status IN ('queued','running')").fetchone()[0] > 0:
                for w in self.status(c)["workers"]:
                    m = mem_of(w["pid"])
                    if m and w["state"] == "busy":
                        p = peak.setdefault(w["pid"], {"rss": 0, "pss": 0})
                        p["rss"], p["pss"] = max(p["rss"], m["rss"]), max(p["pss"], m["pss"])
                time.sleep(0.01)
            db.close()
            busy = {"worker_rss_kb": summary([p["rss"] for p in peak.values()]),
                    "worker_pss_kb": summary([p["pss"] for p in peak.values()])}
            # Idle after work: the first idle poll (500 ms) closes the target's connection and
            # trims the heap; 2 s leave room for it.
            time.sleep(2)
            after = self.fleet_memory(c)
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
        self.results.setdefault("memory", {})["idle_4"] = idle
        self.results["memory"]["busy_peak"] = busy
        self.results["memory"]["idle_after_work"] = after

    def scale(self):
        a = self.a
        out = {}
        for n in a.fleets:
            starts, statuses, statuses_json, stops, mems = [], [], [], [], []
            for _ in range(a.scale_rounds):
                c = self.conf("quorum", "full", n, start_timeout_ms=120000)
                t = time.time()
                self.sup(c, "start")
                starts.append(time.time() - t)
                try:
                    time.sleep(1)
                    for _ in range(5):
                        t = time.time()
                        self.sup(c, "status")
                        statuses.append(time.time() - t)
                        t = time.time()
                        self.sup(c, "status", "--json")
                        statuses_json.append(time.time() - t)
                    mems.append(self.fleet_memory(c))
                finally:
                    t = time.time()
                    self.sup(c, "stop", check=False)
                    stops.append(time.time() - t)
                    self.drop_queue(c)
            out[str(n)] = {"start_s": summary(starts), "status_s": summary(statuses),
                           "status_json_s": summary(statuses_json), "stop_s": summary(stops), "memory": mems[-1]}
            log(f"scale: {n} workers: start {statistics.median(starts):.2f} s")
        self.results["scale"] = out

    # --- 7b. a thousand workers on one host (issue 17, part 6) ---

    def broker_pid(self):
        """The private node's pid (bench/run.sh starts it in WORK/node), or None."""
        try:
            with open(os.path.join(self.a.broker_dir, "pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def cpu_ns(pid):
        """CPU time of a process, all its threads, in ns (0 when it is gone): schedstat's run
        time, exact, where utime + stime are sampled in ticks of 10 ms (a thousand idle workers
        each use less than one tick in ten seconds)."""
        total = 0
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
        return total

    @staticmethod
    def open_fds(pid):
        try:
            return len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return None

    @staticmethod
    def fd_limit(pid):
        try:
            with open(f"/proc/{pid}/limits") as f:
                for ln in f:
                    if ln.startswith("Max open files"):
                        return int(ln.split()[3])
        except (OSError, ValueError, IndexError):
            pass
        return None

    class LogTail:
        """The supervisor's log, read as it grows: (epoch s, slot, pid, what) of each 'spawned'
        and 'ready in' line."""
        rx = re.compile(r"^(\S+) .*slot (\d+) pid (\d+): (spawned|ready in)")

        def __init__(self, path):
            self.f = open(path, errors="replace")
            self.f.seek(0, os.SEEK_END)
            self.part = ""

        def lines(self):
            out = []
            chunk = self.f.read()
            if not chunk:
                return out
            text = self.part + chunk
            *whole, self.part = text.split("\n")
            for ln in whole:
                m = self.rx.match(ln)
                if m:
                    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
                    out.append((t, int(m.group(2)), int(m.group(3)), m.group(4)))
            return out

        def close(self):
            self.f.close()

    def kill_and_time(self, tail, victims, timeout=30):
        """SIGKILLs victims {pid: slot} together; returns {slot: (ms until the replacement's
        'ready' line, new pid)}, timed from just before the first kill to each line's time."""
        t_kill = time.time()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        want = set(victims.values())
        done = {}
        deadline = time.time() + timeout
        while want - set(done):
            for t, slot, pid, what in tail.lines():
                if what == "ready in" and slot in want and pid not in victims and slot not in done:
                    done[slot] = ((t - t_kill) * 1000.0, pid)
            if time.time() > deadline:
                raise RuntimeError(f"slots {sorted(want - set(done))} not ready again within {timeout} s")
            time.sleep(0.002)
        return done

    def respawn_series(self, c, logpath, st, kills, tens, seed):
        """SIGKILLs one worker at a time `kills` times, then ten at once `tens` times, each time
        only workers older than failed_start_ms (a younger one is a failed start by design) and
        the longest-lived first; returns the ms from kill to each replacement's 'ready' line,
        those of the tens, and the ms until all ten of a kill were back."""
        by_slot = {w["slot"]: w["pid"] for w in st["workers"]}
        born = {s: 0.0 for s in by_slot}  # 0: since the start, well before
        order = sorted(by_slot)
        random.Random(seed).shuffle(order)
        rank = {s: i for i, s in enumerate(order)}
        one, ten, fleet10 = [], [], []
        tail = self.LogTail(logpath)

        def victims(k):
            while True:
                old = sorted((s for s in by_slot if time.time() - born[s] >= 2.2),
                             key=lambda s: (born[s], rank[s]))
                if len(old) >= k:
                    return old[:k]
                time.sleep(0.1)
        try:
            for i in range(kills + tens):
                slots = victims(1 if i < kills else 10)
                got = self.kill_and_time(tail, {by_slot[s]: s for s in slots})
                for s in slots:
                    by_slot[s] = got[s][1]
                    born[s] = time.time()
                ms = [got[s][0] for s in slots]
                if i < kills:
                    one += ms
                else:
                    ten += ms
                    fleet10.append(max(ms))
                time.sleep(0.05)
        finally:
            tail.close()
        return one, ten, fleet10

    def thousand(self):
        """A thousand workers on one host: start until all ready, idle memory and CPU, the
        broker's share, respawn with the fleet running, status, stop."""
        a = self.a
        n = a.thousand_workers
        rounds = []
        respawn_one, respawn_ten, ten_fleet, respawn_small = [], [], [], []
        for rnd in range(a.thousand_rounds):
            bpid = self.broker_pid()
            broker_before = mem_of(bpid) if bpid else None
            c = self.conf("quorum", "full", n, start_timeout_ms=300000)
            load = os.getloadavg()
            t = time.time()
            self.sup(c, "start")
            r = {"round": rnd, "start_s": time.time() - t, "load_at_start": load}
            logpath = os.path.join(c["run_dir"], "supervisor.log")
            try:
                with open(logpath, errors="replace") as f:
                    m = re.search(r"all (\d+) workers ready in (\d+) ms", f.read())
                r["ready_logged_ms"] = int(m.group(2)) if m else None
                time.sleep(3)  # settle: the last workers' first idle polls, the sweeper's first sweep
                st = self.status(c)
                pids = [w["pid"] for w in st["workers"]]
                mems = [m for m in (mem_of(p) for p in pids) if m]
                sup = mem_of(st["pid"])
                r["workers"] = len(mems)
                r["worker_pss_kb_mean"] = sum(m["pss"] for m in mems) / len(mems)
                r["worker_rss_kb_mean"] = sum(m["rss"] for m in mems) / len(mems)
                r["supervisor_rss_kb"], r["supervisor_pss_kb"] = sup["rss"], sup["pss"]
                r["supervisor_fds"], r["supervisor_fd_limit"] = self.open_fds(st["pid"]), self.fd_limit(st["pid"])
                if bpid:
                    bm = mem_of(bpid)
                    r["broker_rss_kb"] = bm["rss"]
                    r["broker_rss_kb_before"] = broker_before["rss"] if broker_before else None
                    r["broker_fds"], r["broker_fd_limit"] = self.open_fds(bpid), self.fd_limit(bpid)
                # Idle CPU over 10 s: what a fleet that waits costs the host.
                procs = {"supervisor": [st["pid"]], "workers": pids, "broker": [bpid] if bpid else []}
                before = {k: sum(self.cpu_ns(p) for p in v) for k, v in procs.items()}
                t0 = time.time()
                time.sleep(10)
                dt = time.time() - t0
                r["idle_cpu_pct"] = {k: (sum(self.cpu_ns(p) for p in v) - before[k]) / 1e9 / dt * 100.0
                                     for k, v in procs.items()}
                statuses, statuses_json = [], []
                for _ in range(10):
                    t = time.time()
                    self.sup(c, "status")
                    statuses.append((time.time() - t) * 1000.0)
                    t = time.time()
                    self.sup(c, "status", "--json")
                    statuses_json.append((time.time() - t) * 1000.0)
                r["status_ms"], r["status_json_ms"] = statuses, statuses_json
                # Respawn with the fleet running: SIGKILL one worker at a time, then ten at once.
                one, ten, fleet10 = self.respawn_series(c, logpath, st, a.thousand_kills, a.thousand_kill_tens, rnd)
                respawn_one += one
                respawn_ten += ten
                ten_fleet += fleet10
            finally:
                t = time.time()
                self.sup(c, "stop", check=False)
                r["stop_s"] = time.time() - t
                self.drop_queue(c)
            # The same kills on a fleet of 4, right after: what respawn costs on this machine now,
            # apart from the fleet's size.
            c4 = self.conf("quorum", "full", 4)
            self.sup(c4, "start")
            try:
                time.sleep(1)
                small, _, _ = self.respawn_series(c4, os.path.join(c4["run_dir"], "supervisor.log"), self.status(c4),
                                                  a.thousand_kills, 0, rnd)
                respawn_small += small
            finally:
                self.sup(c4, "stop", check=False)
                self.drop_queue(c4)
            r["load_at_end"] = os.getloadavg()
            rounds.append(r)
            log(f"thousand r{rnd + 1}: start {r['start_s']:.2f} s, worker PSS {r['worker_pss_kb_mean'] / 1024:.2f} MB, "
                f"status p50 {statistics.median(r['status_ms']):.0f} ms, stop {r['stop_s']:.2f} s, "
                f"idle CPU {r['idle_cpu_pct']}")

        def stats(xs):
            return {"p50": pct(xs, 50), "p99": pct(xs, 99), "max": max(xs) if xs else None, "n": len(xs)}

        self.results["thousand"] = {
            "workers": n, "rounds": rounds,
            "start_s": summary([r["start_s"] for r in rounds]),
            "worker_pss_kb": summary([r["worker_pss_kb_mean"] for r in rounds]),
            "worker_rss_kb": summary([r["worker_rss_kb_mean"] for r in rounds]),
            "supervisor_rss_kb": summary([r["supervisor_rss_kb"] for r in rounds]),
            "supervisor_pss_kb": summary([r["supervisor_pss_kb"] for r in rounds]),
            "broker_per_connection_kb": summary([(r["broker_rss_kb"] - r["broker_rss_kb_before"]) / n for r in rounds
                                                 if r.get("broker_rss_kb_before")]),
            "status_ms": stats([x for r in rounds for x in r["status_ms"]]),
            "status_json_ms": stats([x for r in rounds for x in r["status_json_ms"]]),
            "stop_s": summary([r["stop_s"] for r in rounds]),
            "respawn_one_ms": stats(respawn_one), "respawn_ten_ms": stats(respawn_ten),
            "respawn_ten_fleet_ms": stats(ten_fleet), "respawn_small_ms": stats(respawn_small),
            "idle_cpu_pct": {k: summary([r["idle_cpu_pct"][k] for r in rounds]) for k in ("supervisor", "workers", "broker")},
            "samples_respawn_one": respawn_one, "samples_respawn_ten": respawn_ten, "samples_respawn_small": respawn_small}

    # --- 13. CPU per task, by process (issue 17, part 4) ---

    @staticmethod
    def run_rusage(cmd):
        """Runs cmd to its end and returns its stdout. Its CPU, with that of the children it
        waited for, lands in this process's RUSAGE_CHILDREN (children_cpu())."""
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
        return r.stdout

    @staticmethod
    def children_cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def cpu(self):
        """CPU per task split by process while 8 workers drain pre-loaded trivial tasks: sqlq,
        the reference consumer, and the bare publish + consume ceiling throttled to sqlq's rate."""
        a = self.a
        n, w = a.cpu_tasks, 8
        bpid = self.broker_pid()
        if not bpid:
            raise RuntimeError(f"no broker pid in {a.broker_dir} (--broker-dir)")
        rows = []
        for rnd in range(a.rounds):
            load = os.getloadavg()[0]
            first = len(rows)  # this round's rows start here
            # sqlq: the tasks stored and published first (the submitter's CPU), then the fleet.
            # The broker's CPU from before the submit to the end of the drain: publish, confirm,
            # deliver and ack, as in the ceiling's run below. At `full` (the default, beside the
            # reference's FULL) and at `normal` (issue 17's target).
            # Each also at [broker] prefetch = 3 (an outcome and the next claim in one transaction).
            for durability, name, prefetch in (("full", "sqlq", 1), ("normal", "sqlq normal", 1),
                                               ("full", "sqlq prefetch 3", 3), ("normal", "sqlq normal prefetch 3", 3)):
                c = self.conf("quorum", durability, w, prefetch=prefetch)
                b0 = self.cpu_ns(bpid)
                t = self.children_cpu()
                self.sqlq(c, "submit", "--user", "bench", "--batch", "-", stdin=(TRIVIAL + "\n") * n)
                submitter = self.children_cpu() - t
                t0 = time.time()
                self.sup(c, "start")
                try:
                    last, ok = self.wait_done(c["store"], n)
                    st = self.status(c)
                    b1 = self.cpu_ns(bpid)
                    workers = sum(self.cpu_ns(x["pid"]) for x in st["workers"]) / 1e9  # since their fork: ~4 ms each of start-up
                    sup = self.cpu_ns(st["pid"]) / 1e9
                finally:
                    self.sup(c, "stop", check=False)
                    self.drop_queue(c)
                rows.append({"round": rnd, "system": name, "rate": n / (last - t0), "load": load, "ok": ok,
                             "us": {"broker": (b1 - b0) / 1e3 / n, "workers": workers * 1e6 / n,
                                    "supervisor": sup * 1e6 / n, "submitter": submitter * 1e6 / n}})
            rates = {name: next(r["rate"] for r in rows[::-1] if r["system"] == name)
                     for name in ("sqlq", "sqlq prefetch 3")}
            # The reference: the same pre-loaded tasks (stored and published by sqlq), 8 consumers.
            c = self.conf("quorum", "full", w)
            b0 = self.cpu_ns(bpid)
            t = self.children_cpu()
            self.sqlq(c, "submit", "--user", "bench", "--batch", "-", stdin=(TRIVIAL + "\n") * n)
            submitter = self.children_cpu() - t
            t0 = time.time()
            try:
                procs, logf = self.start_reference(c, w, wait=False)
                try:
                    last, ok = self.wait_done(c["store"], n)
                    b1 = self.cpu_ns(bpid)
                    consumers = sum(self.cpu_ns(p.pid) for p in procs) / 1e9  # with python's start-up
                finally:
                    self.stop_reference(procs, logf)
            finally:
                self.drop_queue(c)
            rows.append({"round": rnd, "system": "reference", "rate": n / (last - t0), "load": load, "ok": ok,
                         "us": {"broker": (b1 - b0) / 1e3 / n, "workers": consumers * 1e6 / n, "supervisor": None,
                                "submitter": submitter * 1e6 / n}})
            # The ceiling, throttled to sqlq's rate at `full`: 8 bare consumers, each sleeping after
            # its ack so that together they ack at about that rate, while one connection publishes
            # with confirms (the publisher is the submitter's counterpart). Once at prefetch 1's
            # rate, once at prefetch 3's (the default): the broker's cost per message falls as the
            # rate rises, so each sqlq row is compared with the bare flow at its own rate.
            for sysname, of in (("ceiling", "sqlq"), ("ceiling prefetch 3", "sqlq prefetch 3")):
                q = "bench.cpu.ceiling"
                self.pub("declare", queue=q, type="quorum")
                self.pub("purge", queue=q)
                delay_us = max(0, int(w * 1e6 / rates[of]) - 150)  # ~150 µs: a bare consume + ack's own time
                b0 = self.cpu_ns(bpid)
                t = self.children_cpu()
                out = self.run_rusage([self.bin["cons"], "--port", str(self.port), "--queue", q, "--count", str(n),
                                       "--consumers", str(w), "--prefetch", "1", "--publish", "1", "--window", "500",
                                       "--delay-us", str(delay_us)])
                both = self.children_cpu() - t
                b1 = self.cpu_ns(bpid)
                r = json.loads(out)
                rows.append({"round": rnd, "system": sysname, "rate": r["rate"], "load": load, "ok": n,
                             "delay_us": delay_us,
                             "us": {"broker": (b1 - b0) / 1e3 / n, "workers": both * 1e6 / n, "supervisor": None,
                                    "submitter": None}})
            # Issue 17 part 5's drain ceiling, in the same round: the same number of persistent
            # messages pre-loaded, drained by 8 bare consumers at prefetch 1 at full speed.
            drain = self.drain("quorum", w, 1, n)
            for x in rows[first:]:
                x["drain"] = drain
            log(f"cpu r{rnd + 1}: " + ", ".join(
                f"{x['system']} {x['rate']:.0f}/s broker {x['us']['broker']:.0f} µs workers {x['us']['workers']:.0f} µs"
                for x in rows[first:]) + f"; bare drain {drain:.0f}/s")
        out = []
        for sysname in ("sqlq", "sqlq normal", "sqlq prefetch 3", "sqlq normal prefetch 3", "reference", "ceiling",
                        "ceiling prefetch 3"):
            sel = [r for r in rows if r["system"] == sysname]
            if not sel:
                continue
            out.append({"system": sysname, "rate": summary([r["rate"] for r in sel]),
                        "of_drain": summary([r["rate"] / r["drain"] for r in sel]) if all(r.get("drain") for r in sel) else None,
                        **{k: summary([r["us"][k] for r in sel if r["us"][k] is not None])
                           for k in ("broker", "workers", "supervisor", "submitter")},
                        "total": summary([sum(v for v in r["us"].values() if v) for r in sel])})
        self.results["cpu"] = {"tasks": n, "workers": w, "samples": rows, "summary": out}

    # --- 8. submit ---

    def submit(self):
        a = self.a
        single, batch = [], []
        for _ in range(a.rounds):
            c = self.conf("quorum", "full", 1)
            t = time.time()
            for _ in range(a.submit_single):
                self.sqlq(c, "submit", "--user", "bench", TRIVIAL)
            single.append(a.submit_single / (time.time() - t))
            t = time.time()
            self.sqlq(c, "submit", "--user", "bench", "--batch", "-", stdin=(TRIVIAL + "\n") * a.trivial)
            batch.append(a.trivial / (time.time() - t))
            self.drop_queue(c)
        self.results["submit"] = {"one_process_per_task": summary(single), "batch": summary(batch),
                                  "batch_size": a.trivial, "single_count": a.submit_single}

    # --- 10. latency: what one user feels, on an idle fleet ---

    @staticmethod
    def split(samples):
        """Latency of each sample and its steps, in ms: the client's clock (µs) and the task's
        own times (ms, the store's clock on this host)."""
        keys = ("total", "submit", "queue", "run", "record_notify", "result", "whole")
        out = {k: [] for k in keys}
        for x in samples:
            if "t2_us" in x:  # a long-lived client: submit and outcome from its own clock
                out["total"].append((x["t2_us"] - x["t0_us"]) / 1000)
                out["submit"].append((x["t1_us"] - x["t0_us"]) / 1000)
                out["record_notify"].append(x["t2_us"] / 1000 - x["finished_ms"])
                out["result"].append((x["t3_us"] - x["t2_us"]) / 1000)
            else:  # a whole process: its start and its exit
                out["whole"].append((x["t3_us"] - x["t0_us"]) / 1000)
                out["submit"].append(x["created_ms"] - x["t0_us"] / 1000)  # start-up until the row is stamped
                out["record_notify"].append(x["t3_us"] / 1000 - x["finished_ms"])  # ... until the process is gone
            out["queue"].append(x["started_ms"] - x["created_ms"])
            out["run"].append(x["finished_ms"] - x["started_ms"])
        res = {}
        for k, xs in out.items():
            if xs:
                res[k] = {"p50": pct(xs, 50), "p99": pct(xs, 99), "mean": statistics.mean(xs), "max": max(xs), "n": len(xs)}
        return res

    def reference_argv(self, c, sync="FULL"):
        """One reference consumer (reference_consumer.py) on fleet c's queue and SQLite store."""
        return ["/usr/bin/python3", os.path.join(HERE, "reference_consumer.py"), "--port", str(self.port),
                "--queue", c["queue"], "--queue-type", c["qtype"], "--store", c["store"], "--db", self.demo,
                "--sync", sync]

    def start_reference(self, c, workers, argv=None, wait=True):
        """Starts `workers` reference consumers on fleet c's queue, each `argv` (by default
        reference_consumer.py at FULL), logging to c's reference.log; with wait, returns once all
        of them consume (the queue exists once the first has declared it). Returns (procs, log)
        for stop_reference."""
        logf = open(os.path.join(c["dir"], "reference.log"), "w")
        procs = [subprocess.Popen(argv or self.reference_argv(c), stdout=logf, stderr=logf) for _ in range(workers)]
        deadline = time.time() + 120
        while wait:
            try:
                self.pub("consumers", queue=c["queue"], wait=workers, timeout_ms=120000)
                break
            except RuntimeError:
                if time.time() > deadline or any(p.poll() is not None for p in procs):
                    self.stop_reference(procs, logf)
                    with open(logf.name, errors="replace") as f:
                        raise RuntimeError(f"reference consumers did not all start: {f.read()[-1500:]}")
                time.sleep(0.1)
        return procs, logf

    @staticmethod
    def stop_reference(procs, logf):
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        logf.close()

    def row_times(self, store, task_id):
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
        created, started, finished = db.execute(
            "SELECT created_at, started_at, finished_at FROM tasks WHERE id=?", (task_id,)).fetchone()
        db.close()
        return {"created_ms": created, "started_ms": started, "finished_ms": finished}

    def latency(self):
        a = self.a
        n, n_whole, n_mod = a.latency_n, a.latency_whole_n, a.latency_moderate_n
        now_us = lambda: time.time_ns() // 1000
        res = {"workers": 4, "durability": "full", "queue_type": "quorum", "machine": machine(a)}
        # What the fsyncs cost (a diagnostic, not a target): the long-lived client at durability off.
        c = self.conf("quorum", "off", 4)
        self.sup(c, "start")
        try:
            out = self.run(self.bin["lat"], "--config", c["path"], "--count", str(n), "--sql", TRIVIAL).stdout
            res["sqlq_client_trivial_off"] = self.split([json.loads(ln) for ln in out.splitlines()])
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
        # sqlq: a fleet of 4, idle between tasks.
        c = self.conf("quorum", "full", 4)
        self.sup(c, "start")
        try:
            for name, sql, count in (("trivial", TRIVIAL, n), ("moderate", MODERATE, n_mod)):
                out = self.run(self.bin["lat"], "--config", c["path"], "--count", str(count), "--sql", sql).stdout
                res[f"sqlq_client_{name}"] = self.split([json.loads(ln) for ln in out.splitlines()])
                log(f"latency: sqlq long-lived client, {name}: p50 {res[f'sqlq_client_{name}']['total']['p50']:.2f} ms")
            samples = []
            for i in range(n_whole + 10):
                t0 = now_us()
                r = self.sqlq(c, "run", "--json", "--user", "bench", TRIVIAL)
                t3 = now_us()
                if i >= 10:
                    samples.append(dict(self.row_times(c["store"], json.loads(r.stdout)["id"]), t0_us=t0, t3_us=t3))
            res["sqlq_run_process"] = self.split(samples)
            log(f"latency: sqlq run, whole process: p50 {res['sqlq_run_process']['whole']['p50']:.1f} ms")
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
        # The reference: 4 pika consumers, a client that stores, publishes and polls.
        c = self.conf("quorum", "full", 4)
        self.sqlq(c, "list")  # the task store with sqlq's schema
        procs, logf = self.start_reference(c, 4)
        try:
            client = ["/usr/bin/python3", os.path.join(HERE, "reference_client.py"), "--port", str(self.port),
                      "--queue", c["queue"], "--store", c["store"]]
            for name, sql, count in (("trivial", TRIVIAL, n), ("moderate", MODERATE, n_mod)):
                out = self.run(*client, "--count", str(count), "--sql", sql).stdout
                res[f"reference_client_{name}"] = self.split([json.loads(ln) for ln in out.splitlines()])
                log(f"latency: reference client, {name}: p50 {res[f'reference_client_{name}']['total']['p50']:.2f} ms")
            samples = []
            for _ in range(n_whole):
                t0 = now_us()
                out = self.run(*client, "--count", "1", "--warmup", "0").stdout
                t3 = now_us()
                samples.append(dict(self.row_times(c["store"], json.loads(out)["id"]), t0_us=t0, t3_us=t3))
            res["reference_process"] = self.split(samples)
        finally:
            self.stop_reference(procs, logf)
            self.drop_queue(c)
        self.results["latency"] = res


    # --- 9. a metrics scrape ---

    def metrics(self):
        """What GET /metrics costs: its latency on an idle fleet with an empty store and again with
        a store of a.trivial * 10 finished tasks (a scrape reads no store, so the two should match),
        and the trivial-task throughput of 8 workers without a scraper and with one scraping 10
        times a second (Prometheus scrapes every 15-60 s), back to back in each round, in
        alternating order."""
        import http.client
        import socket
        import threading
        a = self.a
        with socket.socket() as s_:
            s_.bind(("127.0.0.1", 0))
            mport = s_.getsockname()[1]
        c = self.conf("quorum", "full", 8, metrics_listen=f"127.0.0.1:{mport}", start_timeout_ms=120000)

        def scrapes(k):
            conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=10)
            out, size = [], 0
            for _ in range(k):
                t0 = time.perf_counter()
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read()
                out.append(time.perf_counter() - t0)
                if r.status != 200:
                    raise RuntimeError(f"/metrics: HTTP {r.status}")
                size = len(body)
            conn.close()
            return out, size

        def batch(n, scraping):
            stop = threading.Event()
            count = [0]

            def scraper():
                conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=10)
                while not stop.wait(0.1):
                    conn.request("GET", "/metrics")
                    conn.getresponse().read()
                    count[0] += 1
                conn.close()
            th = threading.Thread(target=scraper) if scraping else None
            db = sqlite3.connect(c["store"], timeout=30)
            (before,) = db.execute("SELECT count(*) FROM tasks").fetchone()
            db.close()
            if th:
                th.start()
            t0 = time.time()
            try:
                self.sqlq(c, "submit", "--user", "bench", "--batch", "-", stdin=(TRIVIAL + "\n") * n)
                last, _ = self.wait_done(c["store"], before + n)
            finally:
                stop.set()
                if th:
                    th.join()
            return n / (last - t0), count[0]

        self.sup(c, "start")
        try:
            idle, size = scrapes(300)
            rows = []
            for rnd in range(a.rounds + 1):
                # Alternating which goes first (ABBA): the store grows and the machine drifts.
                if rnd % 2 == 0:
                    plain, _ = batch(a.trivial * 3, False)
                    scraped, k = batch(a.trivial * 3, True)
                else:
                    scraped, k = batch(a.trivial * 3, True)
                    plain, _ = batch(a.trivial * 3, False)
                rows.append({"round": rnd, "plain": plain, "scraped": scraped, "scrapes": k, "ratio": scraped / plain})
                log(f"metrics: round {rnd + 1}/{a.rounds + 1}: {plain:.0f} tasks/s, {scraped:.0f} with {k} scrapes")
            while True:  # the store at a.trivial * 10 finished tasks or more
                db = sqlite3.connect(c["store"], timeout=30)
                (n,) = db.execute("SELECT count(*) FROM tasks").fetchone()
                db.close()
                if n >= a.trivial * 10:
                    break
                batch(a.trivial, False)
            full, _ = scrapes(300)
        finally:
            self.sup(c, "stop", check=False)
            self.drop_queue(c)
        self.results["metrics"] = {
            "bytes": size, "stored_tasks": n,
            "idle_empty_store_ms": {"p50": pct(idle, 50) * 1000, "p99": pct(idle, 99) * 1000},
            "idle_full_store_ms": {"p50": pct(full, 50) * 1000, "p99": pct(full, 99) * 1000},
            "throughput": {"plain": summary([r["plain"] for r in rows]), "scraped": summary([r["scraped"] for r in rows]),
                           "ratio": summary([r["ratio"] for r in rows])},
            "samples": rows}

    def fairness(self):
        """Fairness between users (issue 18), 8 workers, moderate queries, quorum, full.
        One heavy user: A submits a.fair_backlog tasks; in one run alone (A's throughput), in the
        other with B submitting 1 task once the fleet is saturated: B's wait (submit -> start) in
        query durations, what first in, first out would have made it wait (A's tasks queued ahead
        of it, drained at A's rate), and A's throughput against the run alone, back to back in
        each round, in alternating order. Ten users: user i submits i+1 tasks every 100 ms for
        a.fair_seconds; each user's share of the tasks started while every user had tasks
        queued, against an equal share."""
        import threading
        a = self.a

        def store_rows(c, q, args=()):
            db = sqlite3.connect(f"file:{c['store']}?mode=ro", uri=True, timeout=30)
            try:
                return db.execute(q, args).fetchall()
            finally:
                db.close()

        def heavy(with_b):
            c = self.conf("quorum", "full", 8, start_timeout_ms=120000)
            self.sup(c, "start")
            try:
                t0 = time.time()
                self.sqlq(c, "submit", "--user", "alice", "--batch", "-", stdin=(MODERATE + "\n") * a.fair_backlog)
                b_id = None
                if with_b:
                    # Saturated: 8 running and the rest of the backlog queued.
                    while store_rows(c, "SELECT count(*) FROM tasks WHERE status='running'")[0][0] < 8:
                        time.sleep(0.01)
                    time.sleep(0.5)
                    b_id = int(self.sqlq(c, "submit", "--user", "bob", MODERATE).stdout.strip())
                self.wait_done(c["store"], a.fair_backlog + (1 if with_b else 0))
            finally:
                self.sup(c, "stop", check=False)
                self.drop_queue(c)
            (first, last, n) = store_rows(c, "SELECT min(started_at), max(finished_at), count(*) FROM tasks "
                                             "WHERE submitter='alice' AND status='succeeded'")[0]
            durs = [r[0] for r in store_rows(c, "SELECT finished_at - started_at FROM tasks WHERE submitter='alice'")]
            dur = pct(durs, 50)
            rate = n / ((last - first) / 1000.0)
            out = {"alice_rate": rate, "duration_ms": dur}
            if b_id is not None:
                (created, started) = store_rows(c, "SELECT created_at, started_at FROM tasks WHERE id=?", (b_id,))[0]
                (ahead,) = store_rows(c, "SELECT count(*) FROM tasks WHERE submitter='alice' AND started_at > ?",
                                      (created,))[0]
                out.update({"b_wait_ms": started - created, "b_wait_durations": (started - created) / dur,
                            "fifo_wait_durations": ahead / rate * 1000.0 / dur})
            return out

        # The store's cost of the choice, per task: claim_next against claim by id.
        cost = []
        for users in (1, 10, 100):
            store = os.path.join(self.work, f"claim-cost-{users}.db")
            r = json.loads(self.run(self.bin["claim_cost"], "--store", store, "--tasks", str(a.fair_backlog),
                                    "--users", str(users), "--rounds", str(a.rounds), "--durability", "off").stdout)
            cost.append({"users": users, "fifo_us": summary(r["fifo_us"]), "fair_us": summary(r["fair_us"])})
            log(f"fairness: claim cost, {users} users: {cost[-1]['fifo_us']['median']:.1f} us by id, "
                f"{cost[-1]['fair_us']['median']:.1f} us fair")

        rows = []
        for rnd in range(a.rounds):
            order = (False, True) if rnd % 2 == 0 else (True, False)
            got = {w: heavy(w) for w in order}
            rows.append({"round": rnd, "alone": got[False]["alice_rate"], "with_b": got[True]["alice_rate"],
                         "ratio": got[True]["alice_rate"] / got[False]["alice_rate"],
                         "duration_ms": got[True]["duration_ms"], "b_wait_ms": got[True]["b_wait_ms"],
                         "b_wait_durations": got[True]["b_wait_durations"],
                         "fifo_wait_durations": got[True]["fifo_wait_durations"]})
            log(f"fairness: round {rnd + 1}/{a.rounds}: B waited {got[True]['b_wait_durations']:.2f} durations "
                f"(FIFO: {got[True]['fifo_wait_durations']:.1f}); A {rows[-1]['ratio'] * 100:.1f} % of alone")

        # Ten users at different rates.
        shares = []
        for rnd in range(a.rounds):
            c = self.conf("quorum", "full", 8, start_timeout_ms=120000)
            self.sup(c, "start")
            stop = threading.Event()
            try:
                def submitter(i):
                    while not stop.wait(0.1):
                        self.sqlq(c, "submit", "--user", f"user{i}", "--batch", "-", stdin=(MODERATE + "\n") * (i + 1))
                threads = [threading.Thread(target=submitter, args=(i,)) for i in range(10)]
                t0 = int(time.time() * 1000)
                for th in threads:
                    th.start()
                time.sleep(a.fair_seconds)
                stop.set()
                for th in threads:
                    th.join()
                t1 = int(time.time() * 1000)
            finally:
                self.sup(c, "stop", check=False)
                self.drop_queue(c)
            # The window: from when every user has submitted (1 s in) to the submitters' end,
            # within which each user has tasks queued (they submit faster than the fleet runs).
            lo, hi = t0 + 1000, t1
            got = dict(store_rows(c, "SELECT submitter, count(*) FROM tasks WHERE started_at BETWEEN ? AND ? "
                                     "GROUP BY submitter", (lo, hi)))
            total = sum(got.values())
            ratios = {u: got.get(u, 0) / (total / 10.0) for u in (f"user{i}" for i in range(10))}
            shares.append({"round": rnd, "started": total, "ratios": ratios,
                           "min": min(ratios.values()), "max": max(ratios.values())})
            log(f"fairness: ten users, round {rnd + 1}/{a.rounds}: {total} started, shares "
                f"{min(ratios.values()):.2f}-{max(ratios.values()):.2f} of equal")
        self.results["fairness"] = {
            "backlog": a.fair_backlog, "seconds": a.fair_seconds, "samples": rows, "ten_users": shares, "claim_cost": cost,
            "alice_ratio": summary([r["ratio"] for r in rows]),
            "b_wait_durations": summary([r["b_wait_durations"] for r in rows]),
            "fifo_wait_durations": summary([r["fifo_wait_durations"] for r in rows]),
            "share_min": summary([r["min"] for r in shares]), "share_max": summary([r["max"] for r in shares])}


def machine(a):
    info = {"cores": os.cpu_count(), "kernel": platform.release(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    q = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    info["rabbitmq"] = q("dpkg-query", "-W", "-f=${Version}", "rabbitmq-server")
    info["sqlite"] = sqlite3.sqlite_version
    info["rabbitmq_c"] = q("dpkg-query", "-W", "-f=${Version}", "librabbitmq4")
    # What an fsync costs here: it bounds every durable commit.
    path = os.path.join(a.work, "fsync.probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    ts = []
    for _ in range(50):
        os.pwrite(fd, b"x" * 4096, 0)
        t = time.perf_counter()
        os.fdatasync(fd)
        ts.append((time.perf_counter() - t) * 1000)
    os.close(fd)
    os.unlink(path)
    info["fdatasync_ms"] = {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}
    info["load_before"] = os.getloadavg()
    return info


def report(res):
    lines = []
    m = res["machine"]
    lines.append(f"machine: {m.get('cpu', '?')}, {m['cores']} cores, {m.get('memory_gb', '?')} GB, kernel {m['kernel']}, "
                 f"RabbitMQ {m['rabbitmq']}, SQLite {m['sqlite']}, fdatasync {m['fdatasync_ms']['median']:.2f} ms")
    lines.append("figures: median [min–max] over rounds\n")
    if "ceiling" in res:
        rows = [[s["queue_type"], s["what"], s["consumers"] or "-", fmt(s["rate"])] for s in res["ceiling"]["summary"]]
        lines += ["1. ceiling (bare rabbitmq-c, msg/s)", table(["queue", "what", "consumers", "msg/s"], rows), ""]
    if "throughput" in res:
        t = res["throughput"]
        rows = []
        for s in t["summary"]:
            if s["system"].startswith("ceiling"):
                what = "drain" if s["system"] == "ceiling" else "publish + consume"
                rows.append([s["queue_type"], "-", "-", s["workers"], f"ceiling ({what})", fmt(s["rate"]), "", "", ""])
                continue
            rows.append([s["queue_type"], s["query"], s["durability"], s["workers"], s["system"], fmt(s["rate"]),
                         fmt(s["of_ceiling"], "%", 100), fmt(s["of_flow"], "%", 100),
                         fmt(s["of_reference"], "×", 1, 1) if s["system"].startswith("sqlq") else ""])
        lines += [f"2-3. end to end, tasks/s from first submit to last terminal status "
                  f"({t['tasks']['trivial']} trivial / {t['tasks']['moderate']} moderate tasks); ratios taken inside each round",
                  table(["queue", "query", "durability", "workers", "system", "tasks/s", "of drain ceiling",
                         "of publish+consume ceiling", "× reference"], rows), ""]
    if "respawn" in res:
        r = res["respawn"]
        f = lambda s: f"p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, max {s['max']:.1f} ms (n={s['n']})" if s["n"] else "-"
        lines += [f"4. respawn, SIGKILL → replacement's consumer registered ({r['workers']} workers)",
                  f"   one worker:        {f(r['one'])}",
                  f"   all, per worker:   {f(r['all_per_worker'])}",
                  f"   all, whole fleet:  {f(r['all_fleet'])}", ""]
    if "cancel" in res:
        cc = res["cancel"]
        lines += ["5. cancel of a running query",
                  f"   cancel recorded → cancelled: p50 {cc['stop_ms']['p50']} ms, p99 {cc['stop_ms']['p99']} ms, max {cc['stop_ms']['max']} ms (n={cc['stop_ms']['n']})",
                  f"   `sqlq cancel` start → seen cancelled: p50 {cc['observed_ms']['p50']:.0f} ms, p99 {cc['observed_ms']['p99']:.0f} ms", ""]
    if "memory" in res or "scale" in res:
        rows = []
        mm = res.get("memory", {})
        if "idle_4" in mm:
            i = mm["idle_4"]
            rows.append(["idle worker", fmt(i["worker_rss_kb"], " MB", 1 / 1024, 1), fmt(i["worker_pss_kb"], " MB", 1 / 1024, 1)])
            rows.append(["busy worker (peak, moderate query)", fmt(mm["busy_peak"]["worker_rss_kb"], " MB", 1 / 1024, 1),
                         fmt(mm["busy_peak"]["worker_pss_kb"], " MB", 1 / 1024, 1)])
            if "idle_after_work" in mm:
                a = mm["idle_after_work"]
                rows.append(["idle worker after 200 moderate queries", fmt(a["worker_rss_kb"], " MB", 1 / 1024, 1),
                             fmt(a["worker_pss_kb"], " MB", 1 / 1024, 1)])
            rows.append(["supervisor (4 workers)", f"{i['supervisor_rss_kb'] / 1024:.1f} MB", f"{i['supervisor_pss_kb'] / 1024:.1f} MB"])
        for n, s in res.get("scale", {}).items():
            mem = s["memory"]
            rows.append([f"fleet of {n} + supervisor (total)", f"{mem['fleet_rss_kb'] / 1024:.0f} MB", f"{mem['fleet_pss_kb'] / 1024:.0f} MB"])
            rows.append([f"supervisor with {n}", f"{mem['supervisor_rss_kb'] / 1024:.1f} MB", f"{mem['supervisor_pss_kb'] / 1024:.1f} MB"])
        lines += ["6. memory", table(["what", "RSS", "PSS"], rows), ""]
    if "scale" in res:
        rows = [[n, fmt(s["start_s"], " s", 1, 2), fmt(s["status_s"], " ms", 1000), fmt(s["status_json_s"], " ms", 1000),
                 fmt(s["stop_s"], " s", 1, 2)] for n, s in res["scale"].items()]
        lines += ["7. scale", table(["workers", "start (all ready)", "status", "status --json", "stop"], rows), ""]
    if "thousand" in res:
        t = res["thousand"]
        p = lambda d: "-" if not d or d.get("p50") is None else f"p50 {d['p50']:.0f} ms, p99 {d['p99']:.0f} ms, max {d['max']:.0f} ms (n={d['n']})"
        r0 = t["rounds"][-1]
        rows = [["start until all ready", fmt(t["start_s"], " s", 1, 2), "< 10 s"],
                ["idle worker PSS (sum / N)", fmt(t["worker_pss_kb"], " MB", 1 / 1024, 2), "< 2 MB"],
                ["idle worker RSS (mean)", fmt(t["worker_rss_kb"], " MB", 1 / 1024, 1), ""],
                ["supervisor RSS / PSS", fmt(t["supervisor_rss_kb"], " MB", 1 / 1024, 1) + " / " +
                 fmt(t["supervisor_pss_kb"], " MB", 1 / 1024, 1), ""],
                ["supervisor open fds (limit)", f"{r0.get('supervisor_fds')} ({r0.get('supervisor_fd_limit')})", ""],
                ["broker RSS per connection", fmt(t["broker_per_connection_kb"], " kB", 1, 0), ""],
                ["broker open fds (limit)", f"{r0.get('broker_fds')} ({r0.get('broker_fd_limit')})", ""],
                ["respawn, one SIGKILLed", p(t["respawn_one_ms"]), "p99 < 100 ms"],
                ["respawn, ten at once (per worker)", p(t["respawn_ten_ms"]), ""],
                ["respawn, ten at once (all ten back)", p(t["respawn_ten_fleet_ms"]), ""],
                ["respawn, one SIGKILLed, fleet of 4 (same round)", p(t.get("respawn_small_ms")), ""],
                ["`status`", p(t["status_ms"]), "< 100 ms"],
                ["`status --json`", p(t["status_json_ms"]), ""],
                ["stop", fmt(t["stop_s"], " s", 1, 2), ""]]
        for k in ("supervisor", "workers", "broker"):
            rows.append([f"idle CPU, {k} (% of one core)", fmt(t["idle_cpu_pct"][k], " %", 1, 1), ""])
        lines += [f"7b. a thousand workers on one host ({t['workers']} workers, {len(t['rounds'])} rounds; load at start → end "
                  + ", ".join(f"{r['load_at_start'][0]:.1f} → {r.get('load_at_end', [0])[0]:.1f}" for r in t["rounds"]) + ")",
                  table(["measure", "result", "target"], rows), ""]
    if "cpu" in res:
        cp = res["cpu"]
        names = {"sqlq": "sqlq (8 workers), full", "sqlq normal": "sqlq (8 workers), normal",
                 "sqlq prefetch 3": "sqlq (8 workers), full, prefetch 3",
                 "sqlq normal prefetch 3": "sqlq (8 workers), normal, prefetch 3",
                 "reference": "reference consumer (8), FULL",
                 "ceiling": "bare publish + consume, throttled to sqlq's full rate",
                 "ceiling prefetch 3": "bare publish + consume, throttled to sqlq's full, prefetch 3 rate"}
        rows = [[names[x["system"]], fmt(x["rate"], "/s"), fmt(x.get("of_drain"), "%", 100) if x.get("of_drain") else "-",
                 fmt(x["broker"], " µs"), fmt(x["workers"], " µs"),
                 fmt(x["supervisor"], " µs"), fmt(x["submitter"], " µs"), fmt(x["total"], " µs")] for x in cp["summary"] if x["system"] in names]
        lines += [f"13. CPU per task by process, µs: {cp['tasks']} pre-loaded trivial tasks drained by {cp['workers']} consumers; "
                  "broker: from the submit's start to the drain's end; ceiling: its consumers and publisher together; "
                  "of the bare drain: the rate against 8 bare consumers draining as many pre-loaded messages in the same round",
                  table(["system", "tasks/s", "of the bare drain", "broker", "workers / consumers", "supervisor", "submitter",
                         "total"], rows), ""]
    if "submit" in res:
        s = res["submit"]
        lines += ["8. submit (durability full, quorum)",
                  f"   one `sqlq submit` process per task: {fmt(s['one_process_per_task'], ' tasks/s')}",
                  f"   `sqlq submit --batch -` ({s['batch_size']} lines): {fmt(s['batch'], ' tasks/s')}", ""]
    if "metrics" in res:
        m = res["metrics"]
        t = m["throughput"]
        lines += ["9. GET /metrics (8 workers, quorum; a scrape reads no store)",
                  table(["what", "p50", "p99"],
                        [["scrape, empty store", f"{m['idle_empty_store_ms']['p50']:.2f} ms", f"{m['idle_empty_store_ms']['p99']:.2f} ms"],
                         [f"scrape, {m['stored_tasks']} tasks stored", f"{m['idle_full_store_ms']['p50']:.2f} ms",
                          f"{m['idle_full_store_ms']['p99']:.2f} ms"]]),
                  f"   body: {m['bytes']} bytes",
                  f"   trivial tasks/s, no scraper: {fmt(t['plain'], ' tasks/s')}; scraped 10/s: {fmt(t['scraped'], ' tasks/s')}; "
                  f"ratio (same round): {fmt(t['ratio'], '', 1, 3)}", ""]
    if "latency" in res:
        L = res["latency"]
        f = lambda d, k, q: f"{d[k][q]:.2f}" if d and k in d else "-"
        rows = []
        for key, what in (("sqlq_client_trivial", "sqlq, long-lived client, SELECT 1"),
                          ("sqlq_client_trivial_off", "sqlq, long-lived client, SELECT 1, durability off"),
                          ("reference_client_trivial", "reference, long-lived polling client, SELECT 1"),
                          ("sqlq_client_moderate", "sqlq, long-lived client, moderate"),
                          ("reference_client_moderate", "reference, long-lived polling client, moderate"),
                          ("sqlq_run_process", "sqlq run, whole process, SELECT 1"),
                          ("reference_process", "reference client, whole process, SELECT 1")):
            d = L.get(key)
            if not d:
                continue
            tot = "whole" if "whole" in d else "total"
            rows.append([what, f(d, tot, "p50"), f(d, tot, "p99"), f(d, "submit", "p50"), f(d, "queue", "mean"),
                         f(d, "run", "mean"), f(d, "record_notify", "p50"), f(d, "result", "p50")])
        m = L.get("machine", {})
        lines += [f"10. latency, ms ({L['workers']} idle workers, durability {L['durability']} unless said, "
                  f"{L['queue_type']} queue); queue and run are means of the task's ms timestamps"
                  + (f"; measured {m['date']}, load average {m['load_before'][0]:.1f}, fdatasync median "
                     f"{m['fdatasync_ms']['median']:.2f} ms" if m else ""),
                  table(["what", "p50", "p99", "submit p50", "queue (mean)", "claim+run (mean)",
                         "record+notify p50", "result p50"], rows), ""]
    if "postgres" in res:
        pg = res["postgres"]
        rows = [[s["workers"], s["query"], s["target"], fmt(s["rate"])] for s in pg["summary"]]
        cc = pg["cancel"]
        lines += [f"11. PostgreSQL target (quorum, store durability normal; {pg['tasks']['trivial']} trivial / "
                  f"{pg['tasks']['moderate']} moderate tasks), tasks/s beside the SQLite demo file",
                  table(["workers", "query", "target", "tasks/s"], rows),
                  f"   cancel of a running pg_sleep: recorded → cancelled p50 {cc['stop_ms']['p50']} ms, p99 {cc['stop_ms']['p99']} ms, "
                  f"max {cc['stop_ms']['max']} ms (n={cc['stop_ms']['n']}); `sqlq cancel` command p50 {cc['command_ms']['p50']:.0f} ms, "
                  f"p99 {cc['command_ms']['p99']:.0f} ms", ""]
    if "pgstore" in res:
        p = res["pgstore"]
        rows = [[s["workers"], s["hosts"], s.get("prefetch", 1), fmt(s["sqlite"]) if s["sqlite"] else "-", fmt(s["postgres"]),
                 fmt(s["ratio"], "%", 100) if s["ratio"] else "-", fmt(s.get("reference")),
                 fmt(s.get("of_reference"), "×", 1, 1)] for s in p["summary"]]
        o = lambda k: (f"p50 {p[k]['p50']:.0f} ms, p99 {p[k]['p99']:.0f} ms, max {p[k]['max']:.0f} ms (n={p[k]['n']})"
                       if k in p else "-")
        lines += [f"14. PostgreSQL task store (quorum, SELECT 1 on the SQLite demo file, {p['tasks']} tasks), tasks/s; "
                  "SQLite store at durability full; two hosts: the second in a UTS namespace, half the workers each; "
                  "reference: as many sqlq-bench-reference-pg on the PostgreSQL store",
                  table(["workers", "hosts", "prefetch", "SQLite store", "PostgreSQL store", "PostgreSQL / SQLite",
                         "reference, PostgreSQL store", "PostgreSQL × reference"], rows),
                  f"   orphan, worker SIGKILLed (supervisor alive) → task running again: {o('orphan_worker_ms')}",
                  f"   orphan, whole host SIGKILLed (lease_ms 3000) → running again on the other host: {o('orphan_host_ms')}",
                  f"   submit → `sqlq wait` returns (two processes, idle fleet of 4): SQLite store {o('wait_sqlite_ms')}; "
                  f"PostgreSQL store {o('wait_postgres_ms')}", ""]
    if "fairness" in res:
        f = res["fairness"]
        rows = [[c["users"], fmt(c["fifo_us"], "", 1, 1), fmt(c["fair_us"], "", 1, 1)] for c in f.get("claim_cost", [])]
        lines += [f"fairness: the store's claim + finish per task, {f['backlog']} queued (SQLite, durability off: CPU only), µs",
                  table(["users", "claim by id (FIFO)", "claim_next (fair)"], rows)]
        rows = [[r["round"] + 1, f"{r['duration_ms']:.0f}", f"{r['b_wait_durations']:.2f}", f"{r['fifo_wait_durations']:.1f}",
                 f"{r['alone']:.0f}", f"{r['with_b']:.0f}", f"{r['ratio'] * 100:.1f} %"] for r in f["samples"]]
        lines += [f"fairness: 8 workers, moderate queries; A submits {f['backlog']}, then B submits 1 "
                  f"(B's wait in query durations; FIFO: what first in, first out would have made it wait)",
                  table(["round", "duration ms", "B waited", "FIFO", "A alone/s", "A with B/s", "A with B"], rows)]
        rows = [[r["round"] + 1, r["started"], f"{r['min']:.2f}", f"{r['max']:.2f}",
                 " ".join(f"{r['ratios'][u]:.2f}" for u in sorted(r["ratios"], key=lambda u: int(u[4:])))]
                for r in f["ten_users"]]
        lines += [f"ten users, user i submitting i+1 tasks every 100 ms for {f['seconds']} s: "
                  "each one's share of the tasks started, against equal (1.00)",
                  table(["round", "started", "min", "max", "user0 .. user9"], rows), ""]
    if "overlap" in res:
        o = res["overlap"]
        rows = [[f"{s['lease_ms'] / 1000:g} s", f"{s['watchdog_ms'] / 1000:g} s", f"{s['heartbeat_s']} s", fmt(s["takeover"], " s", 1, 1),
                 fmt(s["killed"], " s", 1, 1), fmt(s["statement_gone"], " s", 1, 1), fmt(s["process_overlap"], " s", 1, 1),
                 fmt(s["statement_overlap"], " s", 1, 1)] for s in o["summary"]]
        lines += ["12. cross-host overlap: PostgreSQL store and target, one worker on host A and one on host B (a UTS "
                  "namespace); A's worker SIGSTOPped mid-query at t=0; times from t=0",
                  table(["lease_ms", "watchdog_ms", "heartbeat_s", "B takes over", "A's worker killed", "A's statement gone",
                         "A's worker beside B's run", "two statements at once"], rows), ""]
    return "\n".join(lines)


def plot(res, outdir):
    """throughput.png: one panel per queue type (each with its own series, at most six), the
    legend under each panel: twelve series in one key over the lines could not be read."""
    t = res.get("throughput")
    if not t:
        return
    series = {}  # queue type -> {series name -> [(workers, median, min, max)]}
    for s in t["summary"]:
        if s["query"] not in ("trivial", "ceiling"):
            continue
        name = {"ceiling": "ceiling: drain (bare consumers, prefetch 1)",
                "ceiling-flow": "ceiling: publish + consume (bare, prefetch 1)"}.get(
                    s["system"], f"{s['system']}, durability {s['durability']}")
        series.setdefault(s["queue_type"], {}).setdefault(name, []).append(
            (s["workers"], s["rate"]["median"], s["rate"]["min"], s["rate"]["max"]))
    dat = os.path.join(outdir, "throughput.dat")
    index, panels = 0, []
    with open(dat, "w") as f:
        for qtype in sorted(series):
            plots = []
            for name, pts in series[qtype].items():
                f.write(f'"{name}"\n')
                for p in sorted(pts):
                    f.write("%d %.1f %.1f %.1f\n" % p)
                f.write("\n\n")
                plots.append(f"'{dat}' index {index} using 1:2:3:4 with yerrorlines lw 2 title columnheader(1)")
                index += 1
            panels.append((qtype, ", ".join(plots)))
    png = os.path.join(outdir, "throughput.png")
    ymax = max(p[3] for q in series.values() for pts in q.values() for p in pts) * 1.05
    script = f"""set terminal pngcairo size 1000,{430 * len(panels) + 40} font ',10'
set output '{png}'
set multiplot layout {len(panels)},1 title 'Trivial tasks (SELECT 1), end to end: tasks/s against workers (median, min–max)'
set xlabel 'workers (consumers)'
set ylabel 'tasks/s'
set logscale x 2
set xtics (1, 4, 8, 40)
set yrange [0:{ymax:.0f}]
set key outside right center vertical Left reverse noenhanced box
set grid
"""
    for qtype, plots in panels:
        script += f"set title '{qtype} queue'\nplot {plots}\n"
    script += "unset multiplot\n"
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def replot(outdir):
    """Redraws throughput.png from the throughput.json of an earlier run, measuring nothing."""
    with open(os.path.join(outdir, "throughput.json")) as f:
        plot({"throughput": json.load(f)}, outdir)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replot", action="store_true", help="only redraw throughput.png from OUT/throughput.json")
    ap.add_argument("--build")
    ap.add_argument("--port", type=int)
    ap.add_argument("--work")
    ap.add_argument("--demo")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pg-url", default="", help="a PostgreSQL target with the demo data (section postgres)")
    ap.add_argument("--pg-dir", default="", help="that server's directory (scripts/postgres.sh; default WORK/pg)")
    ap.add_argument("--broker-dir", default="", help="the RabbitMQ node's directory (scripts/broker.sh; default WORK/node)")
    ap.add_argument("--thousand-workers", type=int, default=1000, help="the fleet size of section thousand")
    ap.add_argument("--workers", dest="workers_override", default="", help="comma-separated consumer counts (throughput, ceiling), in place of the mode's")
    ap.add_argument("--durabilities", dest="durabilities_override", default="", help="comma-separated durabilities of the trivial throughput runs, in place of the mode's")
    ap.add_argument("--only", default="", help="comma-separated sections: ceiling,throughput,respawn,cancel,memory,scale,submit,metrics,latency,postgres,overlap,fairness,thousand,cpu,pgstore")
    a = ap.parse_args()
    if a.replot:
        replot(a.out)
        return 0
    for need in ("build", "port", "work", "demo"):
        if getattr(a, need) is None:
            ap.error(f"--{need} is required (unless --replot)")
    if a.quick:
        a.rounds, a.qtypes, a.workers = 3, ["quorum"], [1, 4, 8, 40]
        a.trivial, a.moderate, a.publish_each = 1000, 100, 300
        a.durabilities, a.moderate_durabilities = ["full", "off"], ["full"]
        a.kills, a.kill_alls, a.respawn_workers, a.cancels = 20, 5, 4, 20
        a.fleets, a.scale_rounds, a.submit_single = [40, 200], 1, 30
        a.thousand_rounds, a.thousand_kills, a.thousand_kill_tens = 1, 50, 5
        a.cpu_tasks = 5000
        a.latency_n, a.latency_whole_n, a.latency_moderate_n = 100, 50, 30
        a.fair_backlog, a.fair_seconds = 500, 6
        a.overlap_rounds = 1
        a.host_kills = 5
    else:
        a.rounds, a.qtypes, a.workers = 3, ["quorum", "classic"], [1, 4, 8, 40]
        a.trivial, a.moderate, a.publish_each = 5000, 1000, 1000
        # Moderate tasks only at the default durability: their query's CPU is the whole bound, and
        # durability made no difference to them in any run (see docs/performance.md).
        a.durabilities, a.moderate_durabilities = ["full", "off"], ["full"]
        a.kills, a.kill_alls, a.respawn_workers, a.cancels = 60, 15, 4, 60
        a.fleets, a.scale_rounds, a.submit_single = [40, 200], 3, 100
        a.thousand_rounds, a.thousand_kills, a.thousand_kill_tens = 3, 60, 10
        a.cpu_tasks = 20000
        a.latency_n, a.latency_whole_n, a.latency_moderate_n = 500, 500, 100
        a.fair_backlog, a.fair_seconds = 2000, 15
        a.overlap_rounds = 3
        a.host_kills = 20
    a.pg_dir = a.pg_dir or os.path.join(a.work, "pg")
    a.broker_dir = a.broker_dir or os.path.join(a.work, "node")
    os.makedirs(a.out, exist_ok=True)
    if a.workers_override:
        a.workers = [int(x) for x in a.workers_override.split(",")]
    if a.durabilities_override:
        a.durabilities = a.durabilities_override.split(",")
    all_sections = ["ceiling", "throughput", "respawn", "cancel", "memory", "scale", "thousand", "submit", "metrics", "latency",
                    "postgres", "overlap", "fairness", "cpu", "pgstore"]
    sections = [s for s in a.only.split(",") if s] or all_sections
    earlier = {}
    if a.only:  # re-measure some sections: keep the others' figures from the earlier run
        for s in all_sections:
            path = os.path.join(a.out, f"{s}.json")
            if s not in sections and os.path.exists(path):
                with open(path) as f:
                    earlier[s] = json.load(f)
    for f in os.listdir(a.out):  # no stale figures from an earlier run (web.json is bench/web.sh's)
        if f.endswith((".json", ".dat", ".png", ".txt")) and f[:-5] not in earlier and f != "web.json":
            os.unlink(os.path.join(a.out, f))
    os.makedirs(a.work, exist_ok=True)
    b = Bench(a)
    b.results["machine"] = machine(a)
    b.results["mode"] = "quick" if a.quick else "full"
    b.results.update(earlier)
    for s in sections:
        log(f"== {s}")
        t = time.time()
        try:
            getattr(b, s)()
        except Exception as e:  # one broken section must not lose the others' figures
            log(f"{s}: FAILED: {e}")
            b.results.setdefault("errors", {})[s] = str(e)
        log(f"== {s}: {time.time() - t:.0f} s")
        for k, v in b.results.items():
            with open(os.path.join(a.out, f"{k}.json"), "w") as f:
                json.dump(v, f, indent=1)
    text = report(b.results)
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    plot(b.results, a.out)
    return 1 if "errors" in b.results else 0


if __name__ == "__main__":
    sys.exit(main())
