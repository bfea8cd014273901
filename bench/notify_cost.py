#!/usr/bin/python3
"""What the store's notification (inotify on the WAL) costs: a writer commits M small
transactions as fast as it can while N `sqlq wait` processes wait on a task that never ends.
Prints the writer's commits/s and the waiters' CPU (utime + stime from /proc), with the waiters
notified ([store] notify = "on") and polling ("off"), and with no waiter. No broker is needed:
a waiter only reads the store. Not part of the tests.

    notify_cost.py --sqlq build/client/sqlq [--waiters 10] [--commits 20000] [--rounds 3]
"""
import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def one(a, d, notify, waiters):
    store = os.path.join(d, f"s-{notify}-{waiters}-{time.time_ns()}.db")
    conf = os.path.join(d, "sqlq.conf")
    with open(conf, "w") as f:
        f.write(f'[store]\npath = "{store}"\ndurability = "normal"\nnotify = "{notify}"\n')
    subprocess.run([a.sqlq, "-c", conf, "list"], check=True, capture_output=True)
    db = sqlite3.connect(store, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    now = int(time.time() * 1000)
    ins = "INSERT INTO tasks(sql, submitter, created_at, sql_bytes) VALUES('SELECT 1', 'bench', ?, 8)"
    never = db.execute(ins, (now,)).lastrowid  # waited for, never ends
    busy = db.execute(ins, (now,)).lastrowid   # written to
    procs = [subprocess.Popen([a.sqlq, "-c", conf, "wait", str(never)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(waiters)]
    time.sleep(0.5)  # let them start: their start-up is not what is measured
    before = [cpu_s(p.pid) for p in procs]
    t = time.perf_counter()
    for i in range(a.commits):
        db.execute("UPDATE tasks SET lease_until=? WHERE id=?", (i, busy))
    elapsed = time.perf_counter() - t
    after = [cpu_s(p.pid) for p in procs]
    for p in procs:
        p.kill()
        p.wait()
    db.close()
    waiter_cpu = sum(after) - sum(before)
    return {"commits_per_s": a.commits / elapsed, "waiter_cpu_ms_per_s": 1000 * waiter_cpu / elapsed / max(waiters, 1),
            "waiter_cpu_us_per_commit": 1e6 * waiter_cpu / a.commits / max(waiters, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sqlq", required=True)
    ap.add_argument("--waiters", type=int, default=10)
    ap.add_argument("--commits", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):
            for name, notify, n in (("no waiter", "on", 0), ("notified", "on", a.waiters), ("polling", "off", a.waiters)):
                res.setdefault(name, []).append(one(a, d, notify, n))
    print(f"{a.commits} commits (durability normal), {a.waiters} waiters; median [min-max] of {a.rounds} rounds")
    for name, rs in res.items():
        f = lambda k: (f"{statistics.median(x[k] for x in rs):.1f} [{min(x[k] for x in rs):.1f}-"
                       f"{max(x[k] for x in rs):.1f}]")
        print(f"  {name:10s} writer {f('commits_per_s')} commits/s; per waiter {f('waiter_cpu_ms_per_s')} ms CPU/s, "
              f"{f('waiter_cpu_us_per_commit')} us CPU per commit")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
