#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Abusive clients: each is cut off with the right reply, the relay's memory
stays bounded (peak RSS, VmHWM in /proc, before and after), and a well-behaved
client keeps getting its mail through to the MX while the abuse goes on.

- 10,000 junk commands in one write: 20 error replies, then 421 4.7.0 and
  the connection closes; the rest is never executed.
- 10,000 NOOP/RSET/VRFY: 100 are free, the next 20 count as errors: 421.
- One byte per second: the command (or the TLS handshake) must be complete
  within command_timeout, whatever trickles in: 421 4.4.2.
- 100 MB without a line ending, as a command and as message content:
  500 5.5.2 (line too long) and 552 5.3.4 (size), nothing stored.
- A million pipelined RCPTs: max_recipients are accepted, 452 4.5.3 after
  that, and past the overshoot allowance each one counts as an error: 421.
- TLS handshake garbage after STARTTLS (bulk random bytes, a record that
  never completes, many at once): closed, nothing else disturbed.

(test_inbound_security.py covers 30 bad commands, 1 MB lines, slow clients
next to fast ones, time-outs of idle sessions, and a short TLS garbage case.)

Run: meson test -C build abuse --print-errorlogs
"""

import os
import re
import ssl
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relaycase import QID_RE, RelayCase, log_tail, wait_for  # noqa: E402
from lab import Lab  # noqa: E402

MX = "mx1.good.test"
MAX_RCPT = 100
TIMEOUT = 3                 # command_timeout and data_timeout, seconds
# Peak RSS may grow this much during one abuse (allocator slack, TLS state).
RSS_SLACK_KB = 16 * 1024


def vm_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (key, pid))


class GoodClient(threading.Thread):
    """Sends a message every 0.25 s, each with a unique subject; records the
    queue id, the latency of the 250, and any failure."""

    def __init__(self, tc, r):
        super().__init__(daemon=True)
        self.tc, self.r = tc, r
        self.stop = threading.Event()
        self.acked, self.latencies, self.failures = {}, [], []
        self.n = 0

    def run(self):
        while not self.stop.is_set():
            subject = "good-%d-%d" % (id(self) % 10000, self.n)
            self.n += 1
            t0 = time.monotonic()
            try:
                s = self.tc.lab.smtp(self.r.ip, self.r.port, timeout=10)
                try:
                    s.ehlo()
                    code, rep = s.mail("good@relay.test")
                    assert code == 250, (code, rep)
                    code, rep = s.rcpt("bob@good.test")
                    assert code == 250, (code, rep)
                    code, rep = s.data(b"Subject: %s\r\n\r\ngood mail\r\n" % subject.encode())
                    assert code == 250, (code, rep)
                    m = re.search(r"queued as (%s)" % QID_RE, rep.decode())
                    self.acked[subject] = m.group(1)
                    self.latencies.append(time.monotonic() - t0)
                    s.quit()
                finally:
                    s.close()
            except Exception as e:      # noqa: BLE001 - reported by the test
                self.failures.append("%s: %r" % (subject, e))
            self.stop.wait(0.25)

    def finish(self):
        self.stop.set()
        self.join(20)


class Abuse(RelayCase):
    timing_label = "abuse"

    @classmethod
    def setUpClass(cls):
        cls.lab = Lab(cls.__name__)
        try:
            cls.lab.mx.add(MX, starttls=False)
            cls.lab.dns.mx("good.test", MX)
            cls.lab.start()
            # one relay for the whole class: the point is that it survives all of it
            asan = os.environ.get("ASAN_OPTIONS", "")
            # a small ASan quarantine, so freed memory is reused and RSS means something
            env = {"ASAN_OPTIONS": (asan + ":" if asan else "") +
                   "quarantine_size_mb=8:thread_local_quarantine_size_kb=256"}
            cls.r = cls.lab.relay(env=env, server={
                "command_timeout": "%ds" % TIMEOUT, "data_timeout": "%ds" % TIMEOUT,
                "max_recipients": MAX_RCPT, "max_message_size": "1M"},
                queue={"retry_schedule": "1s"}, requiretls={"preflight": False},
                mta_sts={"enabled": False}, tlsrpt={"enabled": False})
            cls.r.expect_stopped = False
        except BaseException:
            cls.lab.close(failed=True)
            raise

    @classmethod
    def tearDownClass(cls):
        """The relay survived everything and stops cleanly (else an error)."""
        problem = None
        try:
            r = cls.r
            rc = r.stop() if r.running() else "not running"
            if rc != 0:
                cls.lab_failed = True
                problem = "relay exit status %s on SIGTERM:\n%s" % (rc, log_tail(r))
        finally:
            super().tearDownClass()
        if problem:
            raise AssertionError(problem)

    def setUp(self):
        self.assertTrue(self.r.running(), "the relay died in an earlier test:\n" + log_tail(self.r))
        self.good = GoodClient(self, self.r)
        self.good.start()
        wait_for(lambda: self.good.acked, timeout=5, what="the good client's first message")
        self.hwm_before = vm_kb(self.r.pid, "VmHWM")
        self.rss_before = vm_kb(self.r.pid, "VmRSS")
        self.t0 = time.monotonic()
        self.mark = self.r.log_mark()

    def tearDown(self):
        self.good.finish()

    def check_after(self, what):
        """The relay is alive, its peak RSS grew less than RSS_SLACK_KB, the good
        client got every message through (250 within 2 s, then at the MX)."""
        r = self.r
        # at least two messages of the good client's, also for a quick abuse
        wait_for(lambda: len(self.good.acked) >= 2 or self.good.failures, timeout=5,
                 what="two messages of the good client")
        self.good.finish()
        self.assert_alive(r)
        hwm = vm_kb(r.pid, "VmHWM")
        sys.stderr.write("abuse: %s: %.1f s, peak RSS %d -> %d kB (+%d), RSS now %d kB; good client: "
                         "%d messages, slowest 250 after %.2f s\n"
                         % (what, time.monotonic() - self.t0, self.hwm_before, hwm,
                            hwm - self.hwm_before, vm_kb(r.pid, "VmRSS"), len(self.good.acked),
                            max(self.good.latencies or [0])))
        self.assertLess(hwm - self.hwm_before, RSS_SLACK_KB, "%s: unbounded memory" % what)
        self.assertEqual(self.good.failures, [], "%s: the good client was disturbed" % what)
        self.assertGreaterEqual(len(self.good.acked), 2, "%s: the good client sent too little" % what)
        self.assertLess(max(self.good.latencies), 2.0, "%s: the good client waited" % what)
        want = set(self.good.acked)
        wait_for(lambda: want <= {m["data"].split(b"Subject: ")[1].split(b"\r\n")[0].decode()
                                  for m in self.lab.mx.messages(MX)},
                 timeout=15, interval=0.2, what="the good client's mail at the MX")
        self.assert_clean_log(r)

    def abuser(self, greeting=True, timeout=20):
        return self.raw(self.r, greeting=greeting, timeout=timeout)

    # ------------------------------------------------------------------ junk
    @staticmethod
    def pipeline_until_closed(c, payload):
        """Sends payload in one go (from a thread) and reads replies until
        the relay closes the connection; returns [(code, lines)]."""
        sender = threading.Thread(target=lambda: _send_ignoring_reset(c.sock, payload))
        sender.start()
        replies = []
        while True:
            try:
                replies.append(c.read_reply(timeout=10))
            except ConnectionError:
                break
        sender.join(10)
        return replies

    def test_junk_commands(self):
        r = self.r
        c = self.abuser()
        junk = [b"BOGUS %d", b"MAIL FROM:<<<%d", b"RCPT %d", b"\x01\x02\x03 %d", b"DATA %d"]
        payload = b"".join(junk[i % len(junk)] % i + b"\r\n" for i in range(10000))
        replies = self.pipeline_until_closed(c, payload)
        codes = [code for code, _ in replies]
        self.assertEqual(len(codes), 21, codes)
        self.assertTrue(all(500 <= x < 600 for x in codes[:20]), codes)
        self.assert_reply(replies[20], 421, "4.7.0", r"Too many errors")
        r.wait_log(r"too many errors \(20\), disconnecting", start=self.mark)
        self.assertEqual(re.findall(r"commands=(\d+)", r.log_text()[self.mark:])[0:1], ["20"],
                         "commands after the 20th error were executed")
        # the same from 20 clients at once
        cs = [self.abuser() for _ in range(20)]
        for x in cs:
            threading.Thread(target=_send_ignoring_reset, args=(x.sock, payload), daemon=True).start()
        for x in cs:
            self.assertTrue(x.closed_by_peer(10))
            self.assertRegex(x.buf.decode("latin-1"), r"421 4\.7\.0 [^\r]*Too many errors[^\r]*\r\n$")
        self.check_after("10,000 junk commands x 21")

    def test_noop_flood(self):
        """Valid commands that move no mail: 100 are free, then each counts as
        an error; the 20th error closes the connection."""
        r = self.r
        c = self.abuser()
        junk = [b"NOOP\r\n", b"RSET\r\n", b"VRFY user\r\n"]
        payload = b"".join(junk[i % len(junk)] for i in range(10000))
        replies = self.pipeline_until_closed(c, payload)
        codes = [code for code, _ in replies]
        self.assertEqual(len(codes), 121, codes)
        self.assertTrue(all(x in (250, 252) for x in codes[:120]), codes)
        self.assert_reply(replies[120], 421, "4.7.0", r"Too many errors")
        r.wait_log(r"100 NOOP/RSET/VRFY/HELP without a message: counting each further one as an error",
                   start=self.mark)
        r.wait_log(r"too many errors \(20\), disconnecting", start=self.mark)
        self.check_after("10,000 NOOP/RSET/VRFY")

    # ------------------------------------------------------------------ slow
    def test_one_byte_per_second(self):
        r = self.r
        cmd = self.abuser()
        # and one already inside DATA, and one in the TLS handshake
        data = self.abuser()
        self.assertEqual(data.cmd("EHLO slow.test")[0], 250)
        self.assertEqual(data.cmd("MAIL FROM:<slow@relay.test>")[0], 250)
        self.assertEqual(data.cmd("RCPT TO:<bob@good.test>")[0], 250)
        self.assertEqual(data.cmd("DATA")[0], 354)
        hs = self.abuser()
        self.assertEqual(hs.cmd("EHLO slow.test")[0], 250)
        self.assertEqual(hs.cmd("STARTTLS")[0], 220)
        hello = _client_hello()
        stop = threading.Event()
        t_start = time.monotonic()

        def drip():
            i = 0
            while not stop.is_set() and i < 200:
                for c, text in ((cmd, b"EHLO a-client-that-never-ends.test"),
                                (data, b"Subject: slow\r\n\r\n" + b"z" * 300),
                                (hs, hello)):
                    if i < len(text):
                        try:
                            c.sock.sendall(text[i:i + 1])
                        except OSError:
                            pass
                i += 1
                stop.wait(1.0)
        t = threading.Thread(target=drip, daemon=True)
        t.start()
        try:
            for name, c in (("command", cmd), ("data", data)):
                with self.subTest(client=name):
                    got = c.read_reply(timeout=TIMEOUT + 5)
                    took = time.monotonic() - t_start
                    self.assert_reply(got, 421, "4.4.2", r"Timeout")
                    self.assertTrue(c.closed_by_peer(2), name)
                    self.assertLess(took, TIMEOUT + 2.5, name)
            self.assertTrue(hs.closed_by_peer(4), "a TLS handshake dripped byte by byte is cut off")
            self.assertLess(time.monotonic() - t_start, TIMEOUT + 3.5)
        finally:
            stop.set()
            t.join(3)
        self.assertEqual(len(re.findall(r"timeout in state", r.log_text()[self.mark:])), 3)
        self.check_after("one byte per second x 3")

    # ------------------------------------------------------------------ long lines
    def test_100mb_without_line_ending(self):
        r = self.r
        chunk = b"x" * (1 << 20)
        c = self.abuser(timeout=30)
        self.assertEqual(c.cmd("EHLO long.test")[0], 250)
        t0 = time.monotonic()
        c.send(b"MAIL FROM:<")
        for _ in range(100):
            c.send(chunk)
        c.send(b">\r\n")
        self.assert_reply(c.read_reply(), 500, "5.5.2", r"Line too long")
        took_cmd = time.monotonic() - t0
        self.assert_reply(c.cmd("NOOP"), 250)
        # the same as message content: read to the end, refused, nothing stored
        self.assertEqual(c.cmd("MAIL FROM:<long@relay.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<bob@good.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        t0 = time.monotonic()
        c.send(b"Subject: long\r\n\r\n")
        for _ in range(100):
            c.send(chunk)
        c.send(b"\r\n.\r\n")
        self.assert_reply(c.read_reply(), 552, "5.3.4")
        took_data = time.monotonic() - t0
        self.assert_reply(c.cmd("QUIT"), 221)
        sys.stderr.write("abuse: 100 MB command line refused after %.1f s, 100 MB message line "
                         "after %.1f s\n" % (took_cmd, took_data))
        self.assertIn("message refused", r.log_text()[self.mark:])
        self.check_after("100 MB without a line ending x 2")

    # ------------------------------------------------------------------ recipients
    def test_million_pipelined_rcpts(self):
        r = self.r
        c = self.abuser(timeout=60)
        self.assertEqual(c.cmd("EHLO many.test")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<many@relay.test>")[0], 250)
        n = 1000000
        counts = {"sent": 0}

        def send_all():
            block = 10000
            try:
                for k in range(0, n, block):
                    c.sock.sendall(b"".join(b"RCPT TO:<r%d@good.test>\r\n" % i
                                            for i in range(k, k + block)))
                    counts["sent"] = k + block
            except OSError:
                pass            # cut off, as it should be
        t = threading.Thread(target=send_all, daemon=True)
        t.start()
        data = b""
        c.sock.settimeout(60)
        while True:
            try:
                chunk = c.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        t.join(60)
        lines = data.split(b"\r\n")[:-1]
        codes = [ln[:3] for ln in lines]
        self.assertEqual(codes[:MAX_RCPT], [b"250"] * MAX_RCPT)
        over = codes[MAX_RCPT:-1]
        self.assertEqual(set(over), {b"452"}, set(over))
        self.assertTrue(lines[MAX_RCPT].startswith(b"452 4.5.3 "), lines[MAX_RCPT])
        self.assertTrue(lines[-1].startswith(b"421 4.7.0 "), lines[-1])
        sys.stderr.write("abuse: pipelined RCPTs: %d sent, %d replies (%d x 452) before the 421\n"
                         % (counts["sent"], len(lines), len(over)))
        # the overshoot allowance, then the error limit
        self.assertLessEqual(len(over), 1000 + 20)
        self.assertGreaterEqual(len(over), 1000)
        r.wait_log(r"too many errors", start=self.mark)
        self.assertNotIn("from=<many@relay.test>", r.log_text()[self.mark:])
        self.check_after("a million pipelined RCPTs")

    # ------------------------------------------------------------------ TLS garbage
    def test_tls_handshake_garbage(self):
        r = self.r
        rnd = open("/dev/urandom", "rb")
        self.addCleanup(rnd.close)

        def starttls():
            c = self.abuser()
            self.assertEqual(c.cmd("EHLO tls.test")[0], 250)
            self.assertEqual(c.cmd("STARTTLS")[0], 220)
            return c
        # bulk random bytes, 8 MB
        c = starttls()
        _send_ignoring_reset(c.sock, rnd.read(8 << 20))
        self.assertTrue(c.closed_by_peer(5))
        # a valid ClientHello, then garbage records
        c = starttls()
        _send_ignoring_reset(c.sock, _client_hello() + b"\x17\x03\x03\x40\x00" + rnd.read(16384) * 4)
        self.assertTrue(c.closed_by_peer(5))
        # a handshake record announcing 16 KB that never comes: cut off by the timer
        c = starttls()
        t0 = time.monotonic()
        c.send(b"\x16\x03\x01\x40\x00" + b"\x01")
        self.assertTrue(c.closed_by_peer(TIMEOUT + 3))
        self.assertGreater(time.monotonic() - t0, TIMEOUT - 0.5)
        # 30 at once, of two kinds (under the default max_connections_per_client)
        cs = []
        for i in range(30):
            x = starttls()
            cs.append(x)
            _send_ignoring_reset(x.sock, rnd.read(65536) if i % 2 else b"\x16\x03\x01\x00\x05hello" * 50)
        for x in cs:
            self.assertTrue(x.closed_by_peer(5))
        # and a real TLS client right after all that
        c = starttls()
        c.starttls("relay.test", self.tls_context())
        self.assertEqual(c.cmd("EHLO tls.test")[0], 250)
        self.assert_reply(c.cmd("QUIT"), 221)
        self.assertGreaterEqual(len(re.findall(r"TLS handshake failed", r.log_text()[self.mark:])), 30)
        self.check_after("TLS handshake garbage x 33")


def _send_ignoring_reset(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass


def _client_hello():
    """The bytes of a real TLS ClientHello (from Python's ssl module)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx = ssl._create_unverified_context()
    obj = ctx.wrap_bio(inc, out, server_hostname="relay.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


if __name__ == "__main__":
    unittest.main(verbosity=2)
