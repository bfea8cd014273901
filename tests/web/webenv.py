"""The web console's test installation, for tests/web/*.py (run by CTest with /usr/bin/python3).

A temporary directory with its own config (a queue of its own on the fixture's private RabbitMQ
node, its own store, run dir and users file), a real fleet started with `sqlq-supervisor start`
(running sqlq-test-worker), and a real `sqlq-web` listening on a free port of its choosing.
"""
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

BUILD = os.environ.get("SQLQ_BUILD_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "../../build"))


def bin_path(name):
    return {
        "sqlq": BUILD + "/client/sqlq",
        "sqlq-supervisor": BUILD + "/supervisor/sqlq-supervisor",
        "sqlq-test-worker": BUILD + "/tests/sqlq-test-worker",
        "sqlq-web": BUILD + "/web/sqlq-web",
    }[name]


def broker_dir():
    return os.environ.get("SQLQ_TEST_BROKER_DIR") or BUILD + "/test-broker"


def wait_for(pred, timeout, what):
    """Polls pred every 10 ms (for states with no event to wait on: a log line, a row)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.01)


def slow_query(seconds):
    """A recursive CTE that computes for about `seconds` here (calibrated once), cancellable."""
    global _per_s
    if "_per_s" not in globals():
        db = sqlite3.connect(":memory:")
        t0 = time.monotonic()
        db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 300000) SELECT count(*) FROM c").fetchall()
        _per_s = 300000 / max(time.monotonic() - t0, 0.001)
    n = max(1000, int(_per_s * seconds))
    return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < %d) SELECT count(*) AS n FROM c" % n


class Client:
    """One browser-like client of the API: keeps its cookie and CSRF token."""

    def __init__(self, env):
        self.env = env
        self.cookie = None
        self.csrf = None

    def request(self, method, path, body=None, headers=None, raw=False):
        conn = http.client.HTTPConnection(self.env.host, self.env.port, timeout=30)
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = self.cookie
        if self.csrf and method != "GET":
            h.setdefault("X-CSRF-Token", self.csrf)
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        payload = r.read()
        conn.close()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                self.cookie = v.split(";", 1)[0]
        if raw:
            return r.status, payload, r
        try:
            return r.status, json.loads(payload)
        except ValueError:
            return r.status, payload

    def login(self, user, password):
        status, body = self.request("POST", "/api/login", {"user": user, "password": password})
        assert status == 200, (status, body)
        self.csrf = body["csrf"]
        return body

    def submit(self, sql):
        status, body = self.request("POST", "/api/tasks", {"sql": sql})
        assert status == 201, (status, body)
        return body["id"]

    def task(self, tid):
        status, body = self.request("GET", "/api/tasks/%d" % tid)
        assert status == 200, (status, body)
        return body

    def wait(self, tid, timeout=60):
        return wait_for(lambda: (lambda t: t if t["status"] in ("succeeded", "failed", "cancelled") else None)(self.task(tid)),
                        timeout, "task %d to end" % tid)


class WebEnv:
    USERS = {"alice": ("alice-pw", False), "bob": ("bob-pw", False), "root": ("root-pw", True)}

    def __init__(self, workers=2, web_extra="", query_extra="", listen="127.0.0.1:0"):
        self.dir = tempfile.mkdtemp(prefix="sqlq-web-test-")
        port = int(open(broker_dir() + "/port").read())
        self.config = self.dir + "/sqlq.conf"
        with open(self.config, "w") as f:
            f.write('[broker]\nurl = "amqp://guest:guest@127.0.0.1:%d"\nqueue = "sqlq.test.web.%s"\nqueue_type = "classic"\n'
                    'heartbeat_s = 5\n' % (port, secrets.token_hex(6)))
            f.write('[store]\npath = "sqlq.db"\nlease_ms = 1500\n')
            f.write('[query]\ndatabase = "%s/demo.db"\n%s\n' % (broker_dir(), query_extra))
            f.write('[supervisor]\nworkers = %d\nrun_dir = "run"\nworker_path = "%s"\n' % (workers, bin_path("sqlq-test-worker")))
            f.write('[web]\nlisten = "%s"\nusers_file = "users"\ntick_ms = 100\n%s\n' % (listen, web_extra))
        for name, (pw, admin) in self.USERS.items():
            args = [bin_path("sqlq-web"), "-c", self.config, "adduser", name] + (["--admin"] if admin else [])
            subprocess.run(args, input=pw + "\n", text=True, check=True, capture_output=True)
        self.web = None
        self.fleet = False

    def start_fleet(self):
        r = subprocess.run([bin_path("sqlq-supervisor"), "-c", self.config, "start"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        self.fleet = True

    def start_web(self):
        self.web_log = self.dir + "/web.log"
        self.web = subprocess.Popen([bin_path("sqlq-web"), "-c", self.config], stdin=subprocess.DEVNULL,
                                    stdout=open(self.web_log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        m = wait_for(lambda: self.web.poll() is None and re.search(r"listening on http://([0-9.]+):(\d+)", self.log())
                     or (self.web.poll() is not None and AssertionError("sqlq-web exited: " + self.log())), 30,
                     "sqlq-web to listen")
        if isinstance(m, AssertionError):
            raise m
        self.host, self.port = m.group(1), int(m.group(2))
        self.url = "http://%s:%d" % (self.host, self.port)

    def use_address(self, host, port):
        """Talk to a sqlq-web that something else started (the supervisor)."""
        self.host, self.port = host, port
        self.url = "http://%s:%d" % (host, port)

    def log(self):
        try:
            return open(self.web_log).read()
        except OSError:
            return ""

    def supervisor_status(self):
        r = subprocess.run([bin_path("sqlq-supervisor"), "-c", self.config, "status", "--json"], capture_output=True, text=True)
        return json.loads(r.stdout)

    def store(self):
        """The task store, read directly (for assertions the API does not make)."""
        return sqlite3.connect(self.dir + "/sqlq.db", timeout=10)

    def client(self, user=None):
        c = Client(self)
        if user:
            c.login(user, self.USERS[user][0])
        return c

    def close(self):
        if self.web and self.web.poll() is None:
            self.web.send_signal(signal.SIGTERM)
            try:
                self.web.wait(10)
            except subprocess.TimeoutExpired:
                self.web.kill()
                self.web.wait()
        if self.fleet:
            subprocess.run([bin_path("sqlq-supervisor"), "-c", self.config, "stop"], capture_output=True, timeout=120)
        if not os.environ.get("SQLQ_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
