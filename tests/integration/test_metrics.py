#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The health and metrics endpoint ([metrics] listen): Prometheus text format
0.0.4 at /metrics, /healthz, and the HTTP edge cases, against a real relay
delivering to aiosmtpd MX peers on loopback.

Every scrape is parsed strictly (each line a HELP, TYPE or well-formed sample
line; every family with HELP and TYPE before its samples; counters named
*_total; no series twice). The counters are checked to move by exactly what
was sent: a delivered message, a bounced one (its bounce delivered too), a
deferred one, a REQUIRETLS delivery (MTA-STS cache hit), a REQUIRETLS bounce
5.7.30, a policy fetch that fails; the TLS outcomes against the relay's own
tls_sessions table. Then the queue gauges (deferred, held), active SMTP
connections, /healthz, 404/405/400/505, an oversized request (431, then the
connection is closed), the 10 s request timeout (408), metrics off by
default, and a bind failure being a clear startup error.

One lab and one relay for the file (setUpClass); relay 2 and 3 are started
only for the off-by-default and bind-failure checks.

Run: meson test -C build metrics --print-errorlogs
"""

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab import Lab, LabCase, LabError, wait_for  # noqa: E402
from relaycase import SANITIZER_RE, log_tail  # noqa: E402

BIN = os.environ.get("STRICTRELAY_BIN") or os.path.join(SRCDIR, "build", "strictrelay")
METRICS_PORT = 9325
QID = r"[0-9A-HJKMNP-TV-Z]{12}"
RFC8460_RESULTS = ["starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                   "certificate-not-trusted", "validation-failure", "tlsa-invalid",
                   "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
                   "sts-policy-invalid", "sts-webpki-invalid"]

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE_RE = re.compile(r"^(%s)(?:\{(%s(?:,%s)*)?\})? (\S+)(?: (-?\d+))?$" % (NAME, LABEL, LABEL))
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
FLOAT_RE = re.compile(r"^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$")


def parse_exposition(text):
    """Strict parse of the text format 0.0.4. Returns ({(name, labels): value},
    {family: type}); raises AssertionError naming the first bad line."""
    assert text.endswith("\n"), "exposition does not end with a newline"
    helps, types, samples = {}, {}, {}
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        if line.startswith("# HELP "):
            m = re.match(r"^# HELP (%s) (.+)$" % NAME, line)
            assert m, "bad HELP " + where
            name = m.group(1)
            assert name not in helps, "second HELP for %s, %s" % (name, where)
            assert not re.search(r"\\[^\\n]", m.group(2)), "bad escape in HELP " + where
            helps[name] = m.group(2)
            current = name
            continue
        if line.startswith("# TYPE "):
            m = re.match(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME, line)
            assert m, "bad TYPE " + where
            name = m.group(1)
            assert name == current and name not in types, "TYPE not right after its HELP, " + where
            assert not any(k[0] == name for k in samples), "TYPE after samples, " + where
            types[name] = m.group(2)
            continue
        assert not line.startswith("#") and line.strip() == line and line, "stray line " + where
        m = SAMPLE_RE.match(line)
        assert m, "malformed sample " + where
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert FLOAT_RE.match(value), "bad value " + where
        assert name == current and name in types, "sample outside its family, " + where
        pairs = tuple(LABEL_RE.findall(labels))
        assert len({k for k, _ in pairs}) == len(pairs), "label repeated " + where
        key = (name, tuple(sorted(pairs)))
        assert key not in samples, "series repeated " + where
        samples[key] = float(value)
    for name, t in types.items():
        assert name in helps, "%s has no HELP" % name
        assert name.startswith("strictrelay_"), "%s lacks the strictrelay_ prefix" % name
        assert (t == "counter") == name.endswith("_total"), "%s: counter iff _total" % name
    for name in helps:
        assert name in types, "%s has no TYPE" % name
    return samples, types


def http(ip, port, request, timeout=5):
    """Sends raw bytes, reads until the server closes. (status, headers, body,
    raw) with headers as a dict of lower-case names."""
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no end of head in %r" % data[:300]
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.1 (\d{3}) [A-Za-z ]+$", lines[0])
    assert m, "bad status line %r" % lines[0]
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        assert k and k == k.strip() and _, "bad header line %r" % ln
        assert k.lower() not in headers, "header %s twice" % k
        headers[k.lower()] = v.strip()
    return int(m.group(1)), headers, body, data


def get(ip, port, path, method="GET", version="1.1"):
    req = "%s %s HTTP/%s\r\nHost: %s:%d\r\nUser-Agent: test_metrics\r\n\r\n" % (
        method, path, version, ip, port)
    return http(ip, port, req.encode())


class MetricsTest(LabCase):
    timing_label = "metrics"

    @classmethod
    def setUpClass(cls):
        cls.lab = lab = Lab("metrics")
        try:
            mx, dns = lab.mx, lab.dns
            mx.add("mx1.sender.test")                       # bounces arrive here
            dns.mx("sender.test", "mx1.sender.test")
            mx.add("mx1.ok.test", requiretls=True)          # enforce policy, REQUIRETLS
            dns.mx("ok.test", "mx1.ok.test")
            lab.mta_sts("ok.test", mode="enforce", mx=["mx1.ok.test"])
            mx.add("mx1.bounce.test", reply={"rcpt": {"*": "550 5.1.1 no such user"}})
            dns.mx("bounce.test", "mx1.bounce.test")
            mx.add("mx1.defer.test", reply={"rcpt": {"*": "451 4.3.0 try again later"}})
            dns.mx("defer.test", "mx1.defer.test")
            mx.add("mx1.nopolicy.test", requiretls=True)    # REQUIRETLS without a policy
            dns.mx("nopolicy.test", "mx1.nopolicy.test")
            mx.add("mx1.fetchfail.test")                    # the policy host answers 404
            dns.mx("fetchfail.test", "mx1.fetchfail.test")
            lab.mta_sts("fetchfail.test", policy={"status": 404, "body": "not here"})
            lab.start()
            # connection_cache_time 0: one outbound session per message,
            # so the TLS result counters move by known amounts
            cls.relay = lab.relay(
                metrics={"listen": "%s:%d" % (lab.ip(0, 1), METRICS_PORT)},
                queue={"retry_schedule": "1h"},
                delivery={"connection_cache_time": 0},
                requiretls={"preflight": False})
            cls.mip, cls.mport = lab.ip(0, 1), METRICS_PORT
            # for test_zz_request_timeout: a client that never sends its request
            cls.idle = IdleClient(cls.mip, cls.mport)
        except BaseException:
            lab.close(failed=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.idle.close()
            r = cls.relay
            if r.running():
                rc = r.stop()
                if rc != 0:
                    cls.lab_failed = True
                    sys.stderr.write("relay exit status %r on SIGTERM; log:\n%s\n"
                                     % (rc, log_tail(r)))
            text = r.log_text()
            if SANITIZER_RE.search(text) or re.search(r"(?m)^\S+ (error|crit|fatal) ", text):
                cls.lab_failed = True
                sys.stderr.write("sanitizer report or error line in the relay log:\n%s\n"
                                 % log_tail(r, 80))
                raise AssertionError("relay log not clean")
        finally:
            super().tearDownClass()

    # ------------------------------------------------------------------ helpers
    def scrape(self):
        status, headers, body, _ = get(self.mip, self.mport, "/metrics")
        self.assertEqual(status, 200, body[:500])
        self.assertEqual(headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(headers.get("connection"), "close")
        self.assertEqual(int(headers["content-length"]), len(body))
        try:
            samples, types = parse_exposition(body.decode("utf-8"))
        except AssertionError as e:
            self.fail("%s\n--- exposition:\n%s" % (e, body.decode("utf-8", "replace")))
        return samples, types

    @staticmethod
    def val(samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))

    def delta(self, before, after, name, **labels):
        a, b = self.val(before, name, **labels), self.val(after, name, **labels)
        self.assertIsNotNone(a, "%s%r missing" % (name, labels))
        self.assertIsNotNone(b, "%s%r missing" % (name, labels))
        return b - a

    def swaks_ok(self, *args):
        rc, out = self.lab.swaks(*args, "--ehlo", "client.test")
        self.assertEqual(rc, 0, out)
        return re.search(r"queued as (%s)" % QID, out).group(1)

    def send_requiretls(self, sender, rcpt):
        p = subprocess.run([BIN, "send", "--server", "%s:%d" % (self.relay.ip, self.relay.port),
                            "--from", sender, "--to", rcpt, "--ehlo", "client.test",
                            "--requiretls"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return re.search(r"queued as (%s)" % QID, p.stdout + p.stderr).group(1)

    def outcome(self, qid, status, timeout=20):
        try:
            return self.relay.wait_log(r"id=%s to=<[^>]*> .*status=%s\b.*$" % (qid, status),
                                       timeout=timeout)
        except LabError as e:
            self.fail(str(e))

    def tls_rows(self):
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.relay.state_dir, "queue.db"),
                             uri=True, timeout=5)
        try:
            return dict(db.execute("SELECT result_type, count(*) FROM tls_sessions GROUP BY 1"))
        finally:
            db.close()

    # ------------------------------------------------------------------ tests
    def test_counters_move_exactly(self):
        before = self.scrape()[0]
        tls_before = self.tls_rows()
        mark = self.relay.log_mark()
        dsn_before = len(self.lab.mx.messages("mx1.sender.test"))
        m_ok = self.swaks_ok("--from", "alice@sender.test", "--to", "bob@ok.test")
        self.outcome(m_ok, "sent")
        m_bounce = self.swaks_ok("--from", "alice@sender.test", "--to", "carol@bounce.test")
        m_defer = self.swaks_ok("--from", "alice@sender.test", "--to", "dave@defer.test")
        m_fail = self.swaks_ok("--from", "alice@sender.test", "--to", "frank@fetchfail.test")
        # after m_ok: the policy of ok.test is cached
        m_rtls = self.send_requiretls("alice@sender.test", "erin@ok.test")
        m_rtls_bounce = self.send_requiretls("alice@sender.test", "gina@nopolicy.test")
        self.outcome(m_bounce, "bounced")
        self.outcome(m_defer, "deferred")
        self.outcome(m_fail, "sent")
        self.outcome(m_rtls, "sent")
        b = self.outcome(m_rtls_bounce, "bounced")
        self.assertIn("dsn=5.7.30", b.group(0))
        # the two bounces reach the sender's MX
        self.lab.mx.wait_messages(dsn_before + 2, "mx1.sender.test", timeout=20)
        # ... and their delivery is committed
        wait_for(lambda: len(re.findall(r"(?m)to=<alice@sender\.test> .*status=sent",
                                        self.relay.log_text()[mark:])) == 2,
                 20, 0.05, "two bounces recorded as sent")
        after = self.scrape()[0]

        expect = {
            "strictrelay_messages_accepted_total": 6,
            # m_ok, m_fail, m_rtls and the two bounces
            "strictrelay_recipients_delivered_total": 5,
            "strictrelay_recipients_deferred_total": 1,
            "strictrelay_recipients_bounced_total": 2,
            "strictrelay_requiretls_delivered_total": 1,
            "strictrelay_requiretls_bounced_total": 1,
            # ok.test and fetchfail.test; the second ok.test lookup is a hit
            "strictrelay_mta_sts_fetches_total": 2,
            "strictrelay_mta_sts_fetch_failures_total": 1,
            "strictrelay_mta_sts_cache_hits_total": 1,
        }
        got = {k: self.delta(before, after, k) for k in expect}
        self.assertEqual(got, expect, "relay log:\n" + log_tail(self.relay, 60))

        # TLS outcomes: exactly what the relay recorded for TLS reporting
        tls_after = wait_for(lambda: self.tls_rows(), 5, 0.05, "tls rows")
        for result in ["success"] + RFC8460_RESULTS:
            d = self.delta(before, after, "strictrelay_tls_results_total", result=result)
            self.assertEqual(d, tls_after.get(result, 0) - tls_before.get(result, 0), result)
        self.assertGreaterEqual(self.delta(before, after, "strictrelay_tls_results_total",
                                           result="success"), 5)
        self.assertEqual(self.delta(before, after, "strictrelay_tls_results_total",
                                    result="sts-policy-fetch-error"), 1)

        # the queue gauges: the deferred message is all that is left
        self.assertEqual(self.val(after, "strictrelay_store_up"), 1)
        self.assertEqual(self.val(after, "strictrelay_queue_recipients", state="deferred"), 1)
        self.assertEqual(self.val(after, "strictrelay_queue_recipients", state="queued"), 0)
        self.assertEqual(self.val(after, "strictrelay_queue_recipients", state="held"), 0)
        self.assertEqual(self.val(after, "strictrelay_queue_messages", state="active"), 1)
        self.assertEqual(self.val(after, "strictrelay_queue_messages", state="held"), 0)
        age = self.val(after, "strictrelay_queue_oldest_message_age_seconds")
        self.assertTrue(0 <= age < 120, age)
        p = self.relay.cli("queue", "hold", m_defer)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        held = self.scrape()[0]
        self.assertEqual(self.val(held, "strictrelay_queue_recipients", state="held"), 1)
        self.assertEqual(self.val(held, "strictrelay_queue_recipients", state="deferred"), 0)
        self.assertEqual(self.val(held, "strictrelay_queue_messages", state="held"), 1)
        self.assertEqual(self.val(held, "strictrelay_queue_messages", state="active"), 0)
        # a scrape changes no counter
        for k in expect:
            self.assertEqual(self.delta(after, held, k), 0, k)

    def test_families_and_static_gauges(self):
        samples, types = self.scrape()
        for fam in ["strictrelay_messages_accepted_total", "strictrelay_recipients_delivered_total",
                    "strictrelay_recipients_deferred_total", "strictrelay_recipients_bounced_total",
                    "strictrelay_requiretls_delivered_total", "strictrelay_requiretls_bounced_total",
                    "strictrelay_tls_results_total", "strictrelay_mta_sts_cache_hits_total",
                    "strictrelay_mta_sts_fetches_total", "strictrelay_mta_sts_fetch_failures_total"]:
            self.assertEqual(types.get(fam), "counter", fam)
        for fam in ["strictrelay_queue_recipients", "strictrelay_queue_messages",
                    "strictrelay_smtp_connections", "strictrelay_store_up"]:
            self.assertEqual(types.get(fam), "gauge", fam)
        results = sorted(dict(k[1])["result"] for k in samples
                         if k[0] == "strictrelay_tls_results_total")
        self.assertEqual(results, sorted(["success"] + RFC8460_RESULTS))
        start = self.val(samples, "strictrelay_start_time_seconds")
        self.assertTrue(time.time() - 600 < start <= time.time(), start)
        self.assertEqual(self.val(samples, "strictrelay_build_info", version="0.1.0"), 1)
        # HEAD: the same headers, no body
        status, headers, body, _ = get(self.mip, self.mport, "/metrics", method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertGreater(int(headers["content-length"]), 1000)

    def test_active_connections(self):
        name = "strictrelay_smtp_connections"
        wait_for(lambda: self.val(self.scrape()[0], name) == 0, 5, 0.05, "no connection open")
        c1 = self.lab.raw(self.relay.ip, self.relay.port)
        c2 = self.lab.raw(self.relay.ip, self.relay.port)
        try:
            self.assertEqual(c1.read_reply()[0], 220)
            self.assertEqual(c2.read_reply()[0], 220)
            self.assertEqual(self.val(self.scrape()[0], name), 2)
        finally:
            c1.close()
        wait_for(lambda: self.val(self.scrape()[0], name) == 1, 5, 0.05, "one connection left")
        c2.close()
        wait_for(lambda: self.val(self.scrape()[0], name) == 0, 5, 0.05, "no connection left")

    def test_healthz(self):
        status, headers, body, _ = get(self.mip, self.mport, "/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(headers["content-length"], "3")
        status, headers, body, _ = get(self.mip, self.mport, "/healthz", version="1.0")
        self.assertEqual((status, body), (200, b"ok\n"))
        status, headers, body, _ = get(self.mip, self.mport, "/healthz", method="HEAD")
        self.assertEqual((status, body, headers["content-length"]), (200, b"", "3"))

    def test_http_errors(self):
        for path in ["/", "/nothing", "/metrics/", "/METRICS", "/healthz/x"]:
            status, headers, _, _ = get(self.mip, self.mport, path)
            self.assertEqual(status, 404, path)
            self.assertEqual(headers["connection"], "close")
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "get"]:
            for path in ["/metrics", "/healthz"]:
                status, headers, _, _ = get(self.mip, self.mport, path, method=method)
                self.assertEqual(status, 405, (method, path))
                self.assertEqual(headers.get("allow"), "GET, HEAD")
        # a query string is ignored
        status, _, body, _ = get(self.mip, self.mport, "/healthz?probe=1")
        self.assertEqual((status, body), (200, b"ok\n"))
        bad = [b"GET /metrics HTTP/1.1\r\n\r\n",                 # no Host
               b"GET /metrics HTTP/1.1\nHost: x\n\n",             # bare LF
               b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
               b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",   # a TLS ClientHello
               b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"]
        for req in bad:
            status, headers, _, _ = http(self.mip, self.mport, req)
            self.assertEqual(status, 400, req)
            self.assertEqual(headers["connection"], "close")
        status, _, _, _ = http(self.mip, self.mport, b"GET /metrics HTTP/2.0\r\n\r\n")
        self.assertEqual(status, 505)
        status, _, _, _ = http(self.mip, self.mport, b"GET /" + b"a" * 300 + b" HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 414)

    def test_oversized_request_cut_off(self):
        # 8 KiB of headers without an end: 431, then the server closes
        t = time.monotonic()
        req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000
        status, headers, body, _ = http(self.mip, self.mport, req)
        self.assertEqual(status, 431)
        self.assertEqual(headers["connection"], "close")
        # much more than that, sent without reading: the answer still arrives
        # (no reset) and the connection ends without waiting for the client
        with socket.create_connection((self.mip, self.mport), timeout=10) as s:
            try:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"b" * 200000)
            except OSError:
                pass  # the server stopped reading: fine
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
        self.assertTrue(data.startswith(b"HTTP/1.1 431 "), data[:100])
        self.assertLess(time.monotonic() - t, 8)
        # a complete head within the cap is served
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"c" * 8000 + b"\r\n\r\n"
        self.assertLessEqual(len(req), 8192)
        status, _, body, _ = http(self.mip, self.mport, req)
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertTrue(self.relay.running())

    def test_metrics_off_by_default_and_bind_failure(self):
        # relay 2: no [metrics] section: nothing but SMTP listens
        r2 = self.lab.relay(routes={"*": "[%s]:9" % self.lab.ip(9, 9)})
        try:
            self.assertNotIn("metrics listening", r2.log_text())
            socks = listening_sockets(r2.pid)
            self.assertEqual(socks, {(r2.ip, r2.port)}, socks)
        finally:
            self.assertEqual(r2.stop(), 0, log_tail(r2))
        # relay 3: the metrics address is taken (relay 1 has it): exit 1, naming it
        r3 = self.lab.relay(start=False, metrics={"listen": "%s:%d" % (self.mip, self.mport)})
        with self.assertRaises(LabError):
            r3.start(timeout=5)
        wait_for(lambda: r3.returncode is not None, 5, 0.05, "relay 3 exits")
        self.assertEqual(r3.returncode, 1, log_tail(r3))
        self.assertRegex(r3.log_text(),
                         r"error main: .*\[metrics\] listen.*%s:%d.*address already in use"
                         % (re.escape(self.mip), self.mport))
        self.assertIsNone(SANITIZER_RE.search(r3.log_text()), log_tail(r3))
        # relay 1 is unaffected
        status, _, body, _ = get(self.mip, self.mport, "/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))

    def test_zz_request_timeout(self):
        """Runs last: the client connected in setUpClass that never sent a
        request gets 408 after 10 s, then the server closes (it does not
        wait for the client beyond a short linger)."""
        c = self.idle
        c.thread.join(20)
        self.assertFalse(c.thread.is_alive(), "the idle connection was not closed in 20 s")
        self.assertTrue(c.data.startswith(b"HTTP/1.1 408 "), c.data[:100])
        self.assertTrue(9.5 < c.first_byte < 11.5, c.first_byte)
        self.assertLess(c.eof, 11.5 + 2 * 2 + 0.5)  # the answer's write + linger
        self.assertRegex(self.relay.log_text(), r"no complete request within 10 s")


class IdleClient:
    """Connects, sends nothing, and records (in a thread) when the first byte
    and the end of the stream arrive, in seconds after the connect."""

    def __init__(self, ip, port):
        self.sock = socket.create_connection((ip, port), timeout=30)
        self.t0 = time.monotonic()
        self.data = b""
        self.first_byte = self.eof = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                chunk = self.sock.recv(4096)
                if chunk and self.first_byte is None:
                    self.first_byte = time.monotonic() - self.t0
                if not chunk:
                    break
                self.data += chunk
        except OSError:
            pass
        self.eof = time.monotonic() - self.t0

    def close(self):
        self.sock.close()


def listening_sockets(pid):
    """(ip, port) of every listening TCP socket of process pid."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.match(r"^socket:\[(\d+)\]$", target)
        if m:
            inodes.add(m.group(1))
    out = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] != "0A" or parts[9] not in inodes:
                    continue
                addr, port = parts[1].split(":")
                if len(addr) == 8:
                    ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1])
                else:
                    raw = bytes.fromhex(addr)
                    ip = socket.inet_ntop(socket.AF_INET6, b"".join(
                        raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                out.add((ip, int(port, 16)))
    return out


if __name__ == "__main__":
    unittest.main()
