#!/usr/bin/python3
"""The design sqlq replaces, as the benchmarks' reference: one pika consumer process with
prefetch 1 that, for each message, checks the task's status in the task store, marks it
running, runs the query, stores the result and the status, and only then acks. It uses sqlq's
own task store, demo database and queue, so it runs on exactly what sqlq runs on.

    reference_consumer.py --port P --queue Q --store TASKS.db --db DEMO.db [--sync FULL|NORMAL|OFF]
"""
import argparse
import json
import os
import socket
import sqlite3
import time

import pika
import pika.exceptions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--queue-type", default="quorum")
    ap.add_argument("--store", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--sync", default="FULL")
    a = ap.parse_args()

    def setup():
        store = sqlite3.connect(a.store, timeout=10, isolation_level=None)
        store.execute("PRAGMA journal_mode=WAL")
        store.execute(f"PRAGMA synchronous={a.sync}")
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", a.port, heartbeat=0))
        ch = conn.channel()
        # The same topology as sqlq's (a consumer declares what it consumes from).
        ch.exchange_declare(a.queue + ".dlx", "fanout", durable=True)
        args = {"x-queue-type": a.queue_type, "x-dead-letter-exchange": a.queue + ".dlx"}
        if a.queue_type == "quorum":
            args["x-delivery-limit"] = 20
        ch.queue_declare(a.queue, durable=True, arguments=args)
        ch.basic_qos(prefetch_count=1)
        # Inside the retry too: right after several consumers declared a fresh quorum queue, a
        # consume can fail (RabbitMQ 3.10: INTERNAL_ERROR, {badmatch,{error,noproc}}).
        ch.basic_consume(a.queue, on_message)
        return store, conn, ch

    target = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    owner = f"{socket.gethostname()}:{os.getpid()}"

    def on_message(ch, method, _props, body):
        task_id = json.loads(body)["task_id"]
        now = lambda: int(time.time() * 1000)
        # The task's SQL where sqlq's store keeps it (its own table since schema 3; the row's
        # column for rows the reference client stores itself).
        row = store.execute("SELECT status, coalesce((SELECT sql FROM task_sql WHERE task_id=tasks.id), tasks.sql) "
                            "FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None or row[0] in ("succeeded", "failed", "cancelled"):
            ch.basic_ack(method.delivery_tag)
            return
        store.execute("UPDATE tasks SET status='running', attempts=attempts+1, executions=executions+1, "
                      "owner=?, started_at=? WHERE id=? AND status IN ('queued','running')",
                      (owner, now(), task_id))
        try:
            cur = target.execute(row[1])
            cols = [d[0] for d in cur.description or []]
            rows = cur.fetchall()
            outcome = ("succeeded", None, json.dumps(cols), json.dumps(rows), len(rows))
        except sqlite3.Error as e:
            outcome = ("failed", str(e), None, None, None)
        store.execute("BEGIN IMMEDIATE")
        if outcome[2] is not None:
            store.execute("INSERT OR REPLACE INTO results(task_id, columns, rows, created_at) VALUES(?,?,?,?)",
                          (task_id, outcome[2], outcome[3], now()))
        store.execute("UPDATE tasks SET status=?, error=?, row_count=?, finished_at=?, outcomes=outcomes+1 "
                      "WHERE id=? AND status='running'", (outcome[0], outcome[1], outcome[4], now(), task_id))
        store.execute("COMMIT")
        ch.basic_ack(method.delivery_tag)

    # Several of these start at once on a fresh queue: switching the store to WAL and declaring
    # the same queue can fail for all but one of them at that moment. Try again, like a service
    # would, for up to 30 s.
    deadline = time.time() + 30
    while True:
        try:
            store, conn, ch = setup()
            break
        except (sqlite3.OperationalError, pika.exceptions.AMQPError) as e:
            if time.time() > deadline:
                raise
            print(f"reference_consumer: set-up failed ({e!r}); retrying", flush=True)
            time.sleep(0.2)
    ch.start_consuming()
    conn.close()


if __name__ == "__main__":
    main()
