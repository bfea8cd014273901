"""The console in production, against real processes: the supervisor keeping sqlq-web alive
([web] enabled), sessions that survive a restart of sqlq-web, and a CSV download larger than a
page that comes whole and right.
"""
import csv
import io
import os
import re
import signal
import socket
import subprocess
import unittest

from webenv import WebEnv, bin_path, wait_for


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serves(env):
    """Whether sqlq-web answers on env's address (the page)."""
    try:
        status, _, _ = env.client().request("GET", "/", raw=True)
        return status == 200
    except OSError:
        return False


def gone(pid):
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True


class SupervisedTest(unittest.TestCase):
    def test_the_supervisor_starts_sqlq_web_restarts_it_when_killed_and_stops_it(self):
        port = free_port()
        env = WebEnv(workers=1, listen="127.0.0.1:%d" % port, web_extra="enabled = true")
        try:
            env.start_fleet()
            env.use_address("127.0.0.1", port)
            web = wait_for(lambda: (lambda w: w if w and w["state"] == "running" and w["pid"] else None)(
                env.supervisor_status().get("web")), 30, "the supervisor to run sqlq-web")
            self.assertEqual(web["restarts"], 0)
            self.assertEqual(web["listen"], "127.0.0.1:%d" % port)
            first = web["pid"]
            wait_for(lambda: serves(env), 30, "sqlq-web to serve")
            alice = env.client("alice")
            tid = alice.submit("SELECT 41 + 1 AS answer")
            self.assertEqual(alice.wait(tid)["status"], "succeeded")

            os.kill(first, signal.SIGKILL)
            web = wait_for(lambda: (lambda w: w if w["pid"] not in (None, first) and w["state"] == "running" else None)(
                env.supervisor_status()["web"]), 30, "a new sqlq-web")
            self.assertEqual(web["restarts"], 1)
            self.assertEqual(web["last_exit"], "signal 9 (KILL)")
            wait_for(lambda: serves(env), 30, "the new sqlq-web to serve")
            # It serves, and the session made before the kill still holds (sessions are kept in
            # the run directory).
            status, me = alice.request("GET", "/api/me")
            self.assertEqual((status, me["user"]), (200, "alice"))
            tid = alice.submit("SELECT 'again' AS word")
            self.assertEqual(alice.wait(tid)["status"], "succeeded")
            status, page = alice.request("GET", "/api/tasks/%d/result" % tid)
            self.assertEqual(page["rows"], [["again"]])

            text = subprocess.run([bin_path("sqlq-supervisor"), "-c", env.config, "status"], capture_output=True,
                                  text=True).stdout
            self.assertRegex(text, r"web +running, pid %d, up .*127\.0\.0\.1:%d, 1 restarts, last exit signal 9"
                             % (web["pid"], port))

            r = subprocess.run([bin_path("sqlq-supervisor"), "-c", env.config, "stop"], capture_output=True, text=True,
                               timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            env.fleet = False
            self.assertTrue(gone(web["pid"]), "sqlq-web outlived the fleet's stop")
            self.assertFalse(serves(env))
        finally:
            env.close()

    def test_a_reload_starts_and_stops_sqlq_web_as_enabled_says(self):
        port = free_port()
        env = WebEnv(workers=1, listen="127.0.0.1:%d" % port)
        try:
            env.start_fleet()
            env.use_address("127.0.0.1", port)
            self.assertNotIn("web", env.supervisor_status())
            self.assertFalse(serves(env))

            def reload_with(enabled):
                text = re.sub(r"\[web\]\n(enabled = \w+\n)?", "[web]\nenabled = %s\n" % enabled, open(env.config).read())
                with open(env.config, "w") as f:
                    f.write(text)
                r = subprocess.run([bin_path("sqlq-supervisor"), "-c", env.config, "reload"], capture_output=True,
                                   text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)

            reload_with("true")
            web = wait_for(lambda: (lambda w: w if w and w["state"] == "running" else None)(
                env.supervisor_status().get("web")), 30, "sqlq-web started by the reload")
            wait_for(lambda: serves(env), 30, "sqlq-web to serve")
            reload_with("false")
            wait_for(lambda: "web" not in env.supervisor_status(), 30, "sqlq-web stopped by the reload")
            self.assertTrue(gone(web["pid"]))
            self.assertFalse(serves(env))
        finally:
            env.close()

    def test_a_sqlq_web_that_cannot_listen_backs_off_and_comes_up_once_it_can(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        env = WebEnv(workers=1, listen="127.0.0.1:%d" % port, web_extra="enabled = true")
        try:
            env.start_fleet()  # the fleet's start does not wait for the console
            web = wait_for(lambda: (lambda w: w if w["state"] == "backoff" and w["failed_starts"] >= 2 else None)(
                env.supervisor_status()["web"]), 30, "sqlq-web in backoff")
            self.assertIn("cannot listen on 127.0.0.1:%d" % port, web["last_error"])
            self.assertIsNone(web["pid"])
            blocker.close()
            env.use_address("127.0.0.1", port)
            wait_for(lambda: env.supervisor_status()["web"]["state"] == "running", 60, "sqlq-web to start")
            wait_for(lambda: serves(env), 30, "sqlq-web to serve")
        finally:
            blocker.close()
            env.close()


class SessionTest(unittest.TestCase):
    def test_a_session_survives_a_restart_of_sqlq_web(self):
        env = WebEnv(workers=1)
        try:
            env.start_web()
            alice = env.client("alice")
            bob = env.client("bob")
            self.assertEqual(bob.request("POST", "/api/logout", {})[0], 200)
            for how in (signal.SIGTERM, signal.SIGKILL):
                env.web.send_signal(how)
                env.web.wait(10)
                env.start_web()
                status, me = alice.request("GET", "/api/me")
                self.assertEqual(status, 200, "after %s: %s" % (how.name, me))
                self.assertEqual(me["user"], "alice")
                self.assertEqual(me["csrf"], alice.csrf)
                # A state-changing request with the CSRF token from before the restart.
                status, body = alice.request("POST", "/api/tasks", {"sql": "SELECT 1"})
                self.assertEqual(status, 201, body)
                # A signed-out session stays signed out.
                self.assertEqual(bob.request("GET", "/api/me")[0], 401)
            mode = os.stat(env.dir + "/run/web-sessions.json").st_mode & 0o777
            self.assertEqual(mode, 0o600)
            with open(env.dir + "/run/web-sessions.json") as f:
                self.assertNotIn("alice-pw", f.read())
        finally:
            env.close()


class CsvTest(unittest.TestCase):
    def test_a_csv_download_larger_than_a_page_comes_whole_and_right(self):
        env = WebEnv(workers=1, web_extra="max_page_rows = 1000")
        try:
            env.start_fleet()
            env.start_web()
            alice = env.client("alice")
            n = 30000
            tid = alice.submit("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
                               "SELECT x, 'row \"' || x || '\", with, commas' AS s, NULL AS nada, "
                               "CASE WHEN x %% 7 = 0 THEN char(10) || 'line' ELSE '' END AS nl, x * 0.5 AS half FROM c" % n)
            t = alice.wait(tid)
            self.assertEqual(t["status"], "succeeded", t["error"])
            status, page = alice.request("GET", "/api/tasks/%d/result?limit=1000" % tid)
            self.assertEqual((status, page["total"], len(page["rows"])), (200, n, 1000))

            status, body, resp = alice.request("GET", "/api/tasks/%d/result.csv" % tid, raw=True)
            self.assertEqual(status, 200)
            self.assertEqual(resp.getheader("Transfer-Encoding"), "chunked")
            self.assertGreater(len(body), 64 * 1024 * 4)  # several of the stream's pieces
            rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
            self.assertEqual(rows[0], ["x", "s", "nada", "nl", "half"])
            expected = [[str(x), 'row "%d", with, commas' % x, "", "\nline" if x % 7 == 0 else "", repr(x * 0.5)]
                        for x in range(1, n + 1)]
            self.assertEqual(len(rows) - 1, n)
            self.assertEqual(rows[1:], expected)
            self.assertTrue(body.endswith(b"\r\n"))
        finally:
            env.close()


if __name__ == "__main__":
    unittest.main()
