#!/usr/bin/python3
"""The client of the design sqlq replaces, for the latency bench: it stores the task row itself
(sqlq's schema, SQLite synchronous as given), publishes the message with pika (persistent, with
publisher confirms), then polls the row until the task ends, 5 ms at first and doubling up to
100 ms (what `sqlq wait` did before it was notified), and reads the result. Served by
reference_consumer.py. Prints one JSON line per task, like sqlq-bench-latency.

    reference_client.py --port P --queue Q --store TASKS.db [--count N] [--warmup W] [--sql S]
                        [--sync FULL|NORMAL|OFF]

--count 1 --warmup 0 is one whole process per task (python and pika's start-up included in what
the caller times).
"""
import argparse
import json
import sqlite3
import time

import pika


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--sql", default="SELECT 1")
    ap.add_argument("--sync", default="FULL")
    a = ap.parse_args()

    store = sqlite3.connect(a.store, timeout=10, isolation_level=None)
    store.execute(f"PRAGMA synchronous={a.sync}")
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", a.port, heartbeat=0))
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    now_us = lambda: time.time_ns() // 1000
    for i in range(-a.warmup, a.count):
        t0 = now_us()
        cur = store.execute("INSERT INTO tasks(sql, submitter, created_at, sql_bytes) VALUES(?,?,?,?)",
                            (a.sql, "bench", t0 // 1000, len(a.sql.encode())))
        task_id = cur.lastrowid
        ch.basic_publish("", a.queue, json.dumps({"v": 1, "task_id": task_id}).encode(), props, mandatory=False)
        store.execute("UPDATE tasks SET published=1, published_at=? WHERE id=?", (now_us() // 1000, task_id))
        t1 = now_us()
        pause = 0.005
        while True:
            status, created, started, finished = store.execute(
                "SELECT status, created_at, started_at, finished_at FROM tasks WHERE id=?", (task_id,)).fetchone()
            if status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
        t2 = now_us()
        store.execute("SELECT rows FROM results WHERE task_id=?", (task_id,)).fetchone()
        t3 = now_us()
        if status != "succeeded":
            raise SystemExit(f"reference_client: task {task_id} {status}")
        if i >= 0:
            print(json.dumps({"id": task_id, "t0_us": t0, "t1_us": t1, "t2_us": t2, "t3_us": t3,
                              "created_ms": created, "started_ms": started, "finished_ms": finished}), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
