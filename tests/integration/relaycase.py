# SPDX-License-Identifier: MIT
"""Shared pieces of the inbound integration tests (test_inbound_smtp.py,
test_inbound_security.py, test_cli.py): a TestCase with one Lab per class and
one fresh relay per test, queue CLI parsers, reply checks.

Every relay made with RelayCase.relay() is checked when its test ends: it must
still be running (unless the test stopped it on purpose), stop with exit
status 0 on SIGTERM, and its log must hold no sanitizer report.
"""

import os
import re
import socket
import subprocess
import sys
import time

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))

import lab as labmod  # noqa: E402
from lab import Lab, LabCase  # noqa: E402

QID_RE = r"[0-9A-HJKMNP-TV-Z]{12}"
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|"
                          r"SUMMARY: (Address|Undefined|Leak)")


def log_tail(relay, lines=40):
    text = relay.log_text().splitlines()[-lines:]
    return "\n".join("    | " + x for x in text)


# One key=value pair of a relay log line; a value may be "quoted" (with \
# escapes) or <bracketed>.
KV_RE = re.compile(r'([A-Za-z_]+)=("(?:[^"\\]|\\.)*"|<[^>]*>|\S*)')


def _unquote(v):
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    if len(v) >= 2 and v[0] == "<" and v[-1] == ">":
        return v[1:-1]
    return v


def parse_kv(text):
    """The key=value pairs of a relay log line, values unquoted."""
    return {k: _unquote(v) for k, v in KV_RE.findall(text)}


def check_relay_stopped_clean(case, r):
    """For a test's cleanup: the relay is still alive (unless r.stopped_rc
    holds the status of a stop the test made), exits 0 on SIGTERM, and
    logged no sanitizer report and no error-level line."""
    if getattr(r, "stopped_rc", None) is None:
        case.assertTrue(r.running(), "relay %d died; log:\n%s" % (r.index, log_tail(r)))
        r.stopped_rc = r.stop()
    case.assertEqual(r.stopped_rc, 0, "relay %d exit status on SIGTERM; log:\n%s"
                     % (r.index, log_tail(r)))
    text = r.log_text()
    m = SANITIZER_RE.search(text)
    case.assertIsNone(m, "sanitizer report in relay %d log:\n%s"
                      % (r.index, text[m.start():m.start() + 4000] if m else ""))
    m = re.search(r"(?m)^\S+ (error|crit|fatal) .*$", text)
    case.assertIsNone(m, "error-level line in relay %d log: %s" % (r.index, m.group(0) if m else ""))


class RelayCase(LabCase):
    """One Lab per class (DNS only: nothing here delivers), one relay per test."""

    @classmethod
    def setUpClass(cls):
        cls.lab = Lab(cls.__name__)
        try:
            cls.lab.start()
        except BaseException:
            cls.lab.close(failed=True)
            raise

    # -- the relay under test ---------------------------------------------------
    @property
    def dead_hop(self):
        """A next hop where nothing listens, so accepted mail stays queued
        even once outbound delivery exists (the retry is a minute later).
        tls=verify: a hop a REQUIRETLS message may use, as far as config goes."""
        return "[%s]:9 tls=verify" % self.lab.ip(9, 9)

    def relay(self, start=True, **config):
        """A relay routing everything to dead_hop, with the REQUIRETLS
        preflight (an outbound check at RCPT) off: these tests are about the
        inbound side only."""
        routes = dict(config.pop("routes", None) or {})
        routes.setdefault("*", self.dead_hop)
        requiretls = dict(config.pop("requiretls", None) or {})
        requiretls.setdefault("preflight", False)
        r = self.lab.relay(start=start, routes=routes, requiretls=requiretls, **config)
        r.expect_stopped = False
        self.addCleanup(self.check_relay_end, r)
        return r

    def check_relay_end(self, r):
        """Cleanup: the relay is alive, stops cleanly (0), and logged no sanitizer report."""
        if not r.expect_stopped:
            self.assertTrue(r.running(), "relay %d is not running any more (crashed?); log:\n%s"
                            % (r.index, log_tail(r)))
        if r.running():
            t = time.monotonic()
            rc = r.stop()
            took = time.monotonic() - t
            self.assertEqual(rc, 0, "relay %d exit status on SIGTERM; log:\n%s" % (r.index, log_tail(r)))
            self.assertLess(took, 5, "relay %d took %.1f s to stop" % (r.index, took))
        self.assert_clean_log(r)

    def assert_clean_log(self, r):
        bad = [ln for ln in r.log_text().splitlines() if SANITIZER_RE.search(ln)]
        self.assertEqual(bad, [], "sanitizer report in relay %d log:\n%s" % (r.index, log_tail(r, 80)))

    def assert_alive(self, r):
        self.assertTrue(r.running(), "relay died; log:\n%s" % log_tail(r))

    # -- clients -----------------------------------------------------------------
    def swaks(self, r, *args, timeout=30):
        return self.lab.swaks(*args, server="%s:%d" % (r.ip, r.port), timeout=timeout)

    def raw(self, r, source=None, timeout=10, greeting=True):
        c = self.lab.raw(r.ip, r.port, source=source, timeout=timeout)
        self.addCleanup(c.close)
        if greeting:
            code, lines = c.read_reply()
            self.assertEqual(code, 220, lines)
            self.assertRegex(lines[0], r"^relay\.test ESMTP")
        return c

    def smtp(self, r, source=None, **kw):
        s = self.lab.smtp(r.ip, r.port, source_address=source, **kw)
        self.addCleanup(_quiet_close, s)
        return s

    def tls_context(self):
        """Verifies the relay's certificate (lab CA, name relay.test)."""
        return self.lab.ca.context()

    # -- queue CLI ---------------------------------------------------------------
    def queue_list(self, r):
        """[{id, size, nrcpt, state, sender, flags, rcpts: [(state, addr)]}] from `queue list`."""
        p = r.cli("queue", "list")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return parse_queue_list(p.stdout, self)

    def queue_ids(self, r):
        return [m["id"] for m in self.queue_list(r)]

    def queue_show(self, r, qid, body=False):
        args = ["queue", "show", qid] + (["--body"] if body else [])
        p = r.cli(*args)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return parse_queue_show(p.stdout)

    def queue_body(self, r, qid):
        """The stored message (bytes, exactly as stored) from `queue show ID --body`."""
        e = dict(os.environ)
        e.update(r.env)
        p = subprocess.run([r.bin, "queue", "show", qid, "--body", "-c", r.config_path],
                           capture_output=True, timeout=60, env=e)
        self.assertEqual(p.returncode, 0, p.stderr)
        i = p.stdout.find(b"\nmessage:\n")
        self.assertGreaterEqual(i, 0, p.stdout[:2000])
        return p.stdout[i + len(b"\nmessage:\n"):]

    # -- reply checks ------------------------------------------------------------
    def assert_reply(self, got, code, esc=None, text=None):
        """got = (code, lines). Checks the code, the enhanced status code on every
        line (ESC-01: its class is the reply's first digit), and optional text."""
        c, lines = got
        self.assertEqual(c, code, "reply %r" % (got,))
        self.assert_esc(got)
        if esc is not None:
            for ln in lines:
                self.assertTrue(ln.startswith(esc + " "), "expected %s in %r" % (esc, got))
        if text is not None:
            self.assertRegex("\n".join(lines), text)

    def assert_esc(self, got):
        c, lines = got
        for ln in lines:
            m = re.match(r"^([245])\.(\d{1,3})\.(\d{1,3}) \S", ln)
            self.assertIsNotNone(m, "reply line without an enhanced status code: %r" % (got,))
            self.assertEqual(int(m.group(1)), c // 100,
                             "enhanced status class does not match the reply code: %r" % (got,))


def _quiet_close(s):
    try:
        s.close()
    except Exception:
        pass


def parse_queue_list(text, tc=None):
    msgs = []
    footer = None
    for line in text.splitlines():
        m = re.match(r"^(%s)  \s*(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+<([^>]*)>(?: (\S+))?$" % QID_RE, line)
        if m:
            msgs.append({"id": m.group(1), "size": m.group(3), "nrcpt": int(m.group(4)),
                         "state": m.group(5), "sender": m.group(6), "flags": m.group(7) or "-",
                         "rcpts": []})
            continue
        m = re.match(r"^      (\S+)\s+(\S+)\s+attempts=\d+", line)
        if m and msgs:
            msgs[-1]["rcpts"].append((m.group(1), m.group(2)))
            continue
        m = re.match(r"^-- (\d+) messages?$", line)
        if m:
            footer = int(m.group(1))
    if tc is not None:
        if msgs:
            tc.assertEqual(footer, len(msgs), "queue list footer:\n" + text)
        else:
            tc.assertIn("Queue is empty.", text)
    return msgs


def parse_queue_show(text):
    """{'id', 'sender', 'flags', 'client', 'state', 'recipients': [(state, addr)],
    'history': [lines], 'headers': [lines]} from `queue show ID`."""
    out = {"recipients": [], "history": [], "headers": [], "text": text}
    section = None
    for line in text.splitlines():
        m = re.match(r"^(id|arrival|size|sender|flags|client|state):\s+(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
            section = None
            continue
        if line in ("recipients:", "history:", "headers:"):
            section = line[:-1]
            continue
        if line == "message:":
            break
        if section == "recipients":
            parts = line.split()
            out["recipients"].append((parts[0], parts[1]))
        elif section in ("history", "headers") and line.startswith("  "):
            if section == "headers" and line.startswith("  \t") and out["headers"]:
                out["headers"][-1] += "\n" + line[2:]
            else:
                out[section].append(line[2:])
    if "sender" in out:
        out["sender"] = out["sender"][1:-1]
    return out


def wait_for(pred, timeout=5.0, interval=0.02, what="condition"):
    return labmod.wait_for(pred, timeout, interval, what)


def connect_refused(ip, port):
    try:
        s = socket.create_connection((ip, port), timeout=2)
    except OSError:
        return True
    s.close()
    return False
