"""The console's HTTP API against real processes: sqlq-web, a fleet, the fixture's RabbitMQ node.

What the handler's unit tests (tests/unit/web.tests.cpp) cannot show: queries really run and
their results come back, the event stream carries each status change to its owner only, a stop
takes effect in a running worker, and the server survives bad and slow clients.
"""
import csv
import io
import json
import os
import socket
import subprocess
import time
import unittest

from webenv import WebEnv, bin_path, slow_query, wait_for


class EventStream:
    """GET /api/events read as a browser's EventSource reads it."""

    def __init__(self, env, client):
        self.sock = socket.create_connection((env.host, env.port), timeout=10)
        self.sock.sendall(("GET /api/events HTTP/1.1\r\nHost: x\r\nCookie: %s\r\nAccept: text/event-stream\r\n\r\n"
                           % client.cookie).encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"text/event-stream" in head

    def _until(self, sep):
        while sep not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the event stream ended")
            self.buf += data
        out, self.buf = self.buf.split(sep, 1)
        return out

    def _chunk(self):
        size = int(self._until(b"\r\n").split(b";")[0], 16)
        while len(self.buf) < size + 2:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the event stream ended")
            self.buf += data
        out, self.buf = self.buf[:size], self.buf[size + 2:]
        return out

    def events(self, timeout):
        """Task events until `timeout` passes with none (a generator)."""
        pending = b""
        self.sock.settimeout(timeout)
        while True:
            try:
                pending += self._chunk()
            except socket.timeout:
                return
            while b"\n\n" in pending:
                ev, pending = pending.split(b"\n\n", 1)
                lines = ev.decode().split("\n")
                if lines and lines[0] == "event: task":
                    yield json.loads(lines[1][len("data: "):])

    def close(self):
        self.sock.close()


class ApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = WebEnv(web_extra="request_timeout_ms = 3000\nmax_body_bytes = 65536\n")
        cls.env.start_fleet()
        cls.env.start_web()

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def test_a_query_runs_and_its_result_comes_back_in_pages_and_as_csv(self):
        alice = self.env.client("alice")
        tid = alice.submit("SELECT id, name, NULL AS nada FROM customers ORDER BY id LIMIT 25")
        t = alice.wait(tid)
        self.assertEqual(t["status"], "succeeded", t["error"])
        status, page = alice.request("GET", "/api/tasks/%d/result?offset=20&limit=10" % tid)
        self.assertEqual(status, 200)
        self.assertEqual(page["columns"], ["id", "name", "nada"])
        self.assertEqual(page["total"], 25)
        self.assertEqual(len(page["rows"]), 5)
        self.assertIsNone(page["rows"][0][2])
        status, body, resp = alice.request("GET", "/api/tasks/%d/result.csv" % tid, raw=True)
        self.assertEqual(status, 200)
        self.assertEqual(resp.getheader("Transfer-Encoding"), "chunked")
        rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
        self.assertEqual(rows[0], ["id", "name", "nada"])
        self.assertEqual(len(rows), 26)
        self.assertEqual(rows[21][0], str(page["rows"][0][0]))
        self.assertEqual(rows[21][1], page["rows"][0][1])
        # The same task through the CLI: one service, one truth.
        cli = subprocess.run([bin_path("sqlq"), "-c", self.env.config, "show", str(tid), "--json"],
                             capture_output=True, text=True)
        self.assertEqual(json.loads(cli.stdout)["submitter"], "alice")

    def test_a_failed_query_says_why(self):
        alice = self.env.client("alice")
        tid = alice.submit("SELECT * FROM no_such_table")
        t = alice.wait(tid)
        self.assertEqual(t["status"], "failed")
        self.assertIn("no such table", t["error"])
        status, body = alice.request("GET", "/api/tasks/%d/result" % tid)
        self.assertEqual(status, 409)
        self.assertIn("no such table", body["error"])

    def test_the_event_stream_carries_each_change_to_its_owner_only(self):
        alice, bob = self.env.client("alice"), self.env.client("bob")
        sa, sb = EventStream(self.env, alice), EventStream(self.env, bob)
        try:
            tid = alice.submit(slow_query(0.5))
            seen = []
            for ev in sa.events(timeout=30):
                if ev["task"]["id"] == tid:
                    seen.append(ev["task"]["status"])
                    if ev["task"]["status"] in ("succeeded", "failed", "cancelled"):
                        break
            self.assertEqual(seen[-1], "succeeded")
            self.assertIn("running", seen)
            self.assertEqual([e for e in sb.events(timeout=0.5) if e["task"]["id"] == tid], [])
        finally:
            sa.close()
            sb.close()

    def test_stop_ends_a_running_query_and_it_never_runs_again(self):
        alice = self.env.client("alice")
        stream = EventStream(self.env, alice)
        try:
            tid = alice.submit(slow_query(60))
            for ev in stream.events(timeout=30):
                if ev["task"]["id"] == tid and ev["task"]["status"] == "running":
                    break
            else:
                self.fail("task never ran")
            t0 = time.monotonic()
            status, body = alice.request("POST", "/api/tasks/%d/cancel" % tid)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["result"], "requested")
            final = None
            for ev in stream.events(timeout=10):
                if ev["task"]["id"] == tid and ev["task"]["status"] != "running":
                    final = ev["task"]
                    break
            took = time.monotonic() - t0
            self.assertIsNotNone(final)
            self.assertEqual(final["status"], "cancelled")
            self.assertEqual(final["cancelled_by"], "alice")
            self.assertLess(took, 1.0, "the page heard of the stop %.2f s after it was asked" % took)
        finally:
            stream.close()
        row = self.env.store().execute("SELECT status, executions, outcomes FROM tasks WHERE id=?", (tid,)).fetchone()
        self.assertEqual(row, ("cancelled", 1, 1))

    def test_a_slow_client_is_cut_off_and_others_are_served_meanwhile(self):
        slow = socket.create_connection((self.env.host, self.env.port))
        slow.sendall(b"GET /api/me HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        t0 = time.monotonic()
        alice = self.env.client("alice")
        for _ in range(5):
            self.assertEqual(alice.request("GET", "/api/me")[0], 200)
        # Served while the slow one is still open (request_timeout_ms is 3 s here).
        slow.setblocking(False)
        with self.assertRaises(BlockingIOError):
            slow.recv(100)
        self.assertLess(time.monotonic() - t0, 2.9, "the others took too long to show anything")
        slow.setblocking(True)
        slow.settimeout(15)
        self.assertEqual(slow.recv(100), b"")  # then closed by the server, with nothing sent
        self.assertGreater(time.monotonic() - t0, 2.9)
        slow.close()

    def test_a_huge_body_is_refused_before_it_is_read(self):
        s = socket.create_connection((self.env.host, self.env.port), timeout=10)
        s.sendall(b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000000\r\n\r\n" + b"x" * 1000)
        reply = s.recv(4096).decode()
        s.close()
        self.assertTrue(reply.startswith("HTTP/1.1 413"), reply)
        self.assertIn("max_body_bytes", reply)

    def test_a_malformed_request_gets_400_and_the_server_goes_on(self):
        s = socket.create_connection((self.env.host, self.env.port), timeout=10)
        s.sendall(b"GARBAGE\x01 / HTTP/9\r\n\r\n")
        reply = s.recv(4096).decode()
        s.close()
        self.assertTrue(reply.startswith("HTTP/1.1 400"), reply)
        self.assertIn('"error"', reply)
        self.assertEqual(self.env.client("bob").request("GET", "/api/me")[0], 200)

    def test_an_admin_sees_the_fleet(self):
        root = self.env.client("root")
        status, f = root.request("GET", "/api/fleet")
        self.assertEqual(status, 200, f)
        self.assertEqual(len(f["supervisor"]["workers"]), 2)
        self.assertIn(f["supervisor"]["workers"][0]["state"], ("ready", "busy", "waiting", "starting"))
        self.assertIn("messages", f["queue"])
        self.assertIn("succeeded", f["tasks"])
        self.assertEqual(self.env.client("alice").request("GET", "/api/fleet")[0], 403)

    def test_wrong_passwords_are_logged_without_the_password(self):
        c = self.env.client()
        status, body = c.request("POST", "/api/login", {"user": "bob", "password": "hunter2-secret"})
        self.assertEqual(status, 401)
        wait_for(lambda: "sign-in failed for user 'bob'" in self.env.log(), 5, "the failure in the log")
        self.assertNotIn("hunter2-secret", self.env.log())


class UserLimitsTest(unittest.TestCase):
    def test_a_submit_past_the_users_queue_limit_gets_429_and_stores_nothing(self):
        env = WebEnv(query_extra="max_queued_per_user = 2\n")
        try:
            env.start_web()  # no fleet: the tasks stay queued
            alice = env.client("alice")
            alice.submit("SELECT 1")
            alice.submit("SELECT 2")
            status, body = alice.request("POST", "/api/tasks", {"sql": "SELECT 3"})
            self.assertEqual(status, 429, body)
            self.assertIn("max_queued_per_user = 2", body["error"])
            cli = subprocess.run([bin_path("sqlq"), "-c", env.config, "list", "--user", "alice", "--json"],
                                 capture_output=True, text=True)
            self.assertEqual(len(json.loads(cli.stdout)), 2)
            # Another user's queue is their own.
            env.client("bob").submit("SELECT 1")
        finally:
            env.close()


class LifecycleTest(unittest.TestCase):
    def test_sigterm_stops_it_cleanly(self):
        env = WebEnv()
        try:
            env.start_web()
            self.assertEqual(env.client("alice").request("GET", "/api/me")[0], 200)
            env.web.terminate()
            self.assertEqual(env.web.wait(10), 0)
            self.assertIn("stopped", env.log())
        finally:
            env.close()

    def test_adduser_refuses_a_bad_name_and_an_empty_password(self):
        env = WebEnv()
        try:
            r = subprocess.run([bin_path("sqlq-web"), "-c", env.config, "adduser", "a b"], input="pw\n",
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)
            self.assertIn("not a valid user name", r.stderr)
            r = subprocess.run([bin_path("sqlq-web"), "-c", env.config, "adduser", "carol"], input="",
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)
            self.assertIn("no password on standard input", r.stderr)
            mode = os.stat(env.dir + "/users").st_mode & 0o777
            self.assertEqual(mode, 0o600)
        finally:
            env.close()

    def test_a_listen_address_in_use_is_one_clear_error(self):
        env = WebEnv()
        try:
            env.start_web()
            text = open(env.config).read().replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:%d"' % env.port)
            other = env.dir + "/other.conf"
            open(other, "w").write(text)
            r = subprocess.run([bin_path("sqlq-web"), "-c", other], capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, 1)
            self.assertIn("cannot listen on 127.0.0.1:%d" % env.port, r.stderr)
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main()
