#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Outbound delivery against real peers on loopback (tests/lib/lab.py).

What the scheduler, the SMTP client, the delivery decision and the outcome
writer do together: exact bytes and the Received: header at the MX, STARTTLS
with SNI and verification, MX preference and fallback, implicit and null MX,
DNS failures, 4xx retries, per-recipient 5xx with an RFC 3464 bounce (parsed
with Python's email package), certificate outcomes in the log and in the
tls_sessions table, restarts in the middle of the queue (kill -9, SIGTERM),
expiry after max_lifetime, the queue CLI (hold/release/flush/delete), SIZE
and 8BITMIME, and several jobs due at once for a destination that fails.

One lab for the whole file (every MX endpoint and DNS record is declared in
setUpClass, each test uses its own domains); one or more relays per test.
Every relay is stopped when its test ends: exit status 0, no sanitizer report
and no error-level line in its log.

Run: meson test -C build delivery --print-errorlogs
 or: STRICTRELAY_BIN=$PWD/build/strictrelay /usr/bin/python3 tests/integration/test_delivery.py
     (a single test: ... test_delivery.py DeliveryTest.test_05_451_then_retry)
"""

import collections
import email
import email.policy
import os
import re
import smtplib
import sqlite3
import sys
import time
import unittest

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))

from lab import Lab, LabCase, LabError, wait_for  # noqa: E402
from relaycase import check_relay_stopped_clean, log_tail, parse_kv  # noqa: E402

QID = r"[0-9A-Z]{12}"
# One scheduler tick (it polls due recipients every second) plus slack: how
# long a negative check ("not delivered") waits.
TICK = 1.3

SENDER_MX = "mx1.sender.test"
FAST_RETRY = {"retry_schedule": "1s, 1s, 2s"}


def make_msg(msgid, sender, rcpts, subject="delivery test", body="Hello.\r\n"):
    return ("From: <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s>\r\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n%s" % (
                sender or "MAILER-DAEMON@client.test", ", ".join("<%s>" % r for r in rcpts),
                subject, msgid, body)).encode()


def message_id(data):
    m = re.search(rb"^Message-ID:\s*<([^>]*)>", data, re.M | re.I)
    return m.group(1).decode() if m else None


def split_first_header(data):
    """(first header field with its continuation lines, the rest)."""
    end = data.index(b"\r\n") + 2
    while data[end:end + 1] in (b" ", b"\t"):
        end = data.index(b"\r\n", end) + 2
    return data[:end], data[end:]


def max_overlap(sessions):
    """The largest number of MX sessions open at the same time."""
    points = []
    for s in sessions:
        points.append((s["events"][0]["t"], 1))
        points.append((s["events"][-1]["t"], -1))
    cur = best = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):
        cur += step
        best = max(best, cur)
    return best


class DeliveryTest(LabCase):
    """One lab for the whole file; one or more relays per test."""

    timing_label = "delivery"

    @classmethod
    def setUpClass(cls):
        cls.lab = lab = Lab("delivery")
        try:
            cls._declare(lab)
            lab.start()
        except BaseException:
            lab.close(failed=True)
            raise

    @classmethod
    def _declare(cls, lab):
        mx, dns = lab.mx, lab.dns
        # the senders' domain: bounces go there
        mx.add(SENDER_MX)
        dns.mx("sender.test", SENDER_MX)
        # a sender domain whose MX refuses every recipient (double bounce)
        mx.add("mx1.rejects.test", reply={"rcpt": {"*": "550 5.1.1 no such user here"}})
        dns.mx("rejects.test", "mx1.rejects.test")
        # 1: exact bytes; the control endpoint records what swaks sends
        mx.add("mx1.exact.test")
        dns.mx("exact.test", "mx1.exact.test")
        mx.add("control.exact.test", starttls=False)
        # 2: preference and fallback
        mx.add("mx1.pref.test", refuse=True)
        mx.add("mx2.pref.test")
        dns.mx("pref.test", "mx1.pref.test", 10)
        dns.mx("pref.test", "mx2.pref.test", 20)
        mx.add("mx1.greet.test", reply={"greeting": "421 4.3.2 too busy, come back later"})
        mx.add("mx2.greet.test")
        mx.add("mx3.greet.test")
        dns.mx("greet.test", "mx1.greet.test", 10)
        dns.mx("greet.test", "mx2.greet.test", 20)
        dns.mx("greet.test", "mx3.greet.test", 30)
        mx.add("mx1.eq.test")
        mx.add("mx2.eq.test")
        dns.mx("eq.test", "mx1.eq.test", 10)
        dns.mx("eq.test", "mx2.eq.test", 10)
        # every address of every MX: mx1.multi.test has two dead addresses
        dns.a("mx1.multi.test", lab.ip(9, 1), lab.ip(9, 2))
        mx.add("mx2.multi.test")
        dns.mx("multi.test", "mx1.multi.test", 10)
        dns.mx("multi.test", "mx2.multi.test", 20)
        # 3: implicit MX, null MX (nosuch.test simply does not exist)
        mx.add("implicit.test")
        dns.null_mx("nullmx.test")
        # 4: DNS failures; the MX hosts live outside the faulty zones
        dns.fault("sfail.test", "servfail")
        mx.add("mx1.sfailhost.test")
        dns.fault("tmo.test", "timeout")
        mx.add("mx1.tmohost.test")
        # 5: 451 at end of data for the first message only
        mx.add("mx1.t451.test", reply={"eom": ["451 4.3.0 try again later", None]})
        dns.mx("t451.test", "mx1.t451.test")
        # 6: one recipient refused at RCPT
        mx.add("mx1.partial.test", reply={"rcpt": {
            "bad@partial.test": "550 5.1.1 no such user",
            "busy@partial.test": ["452 4.2.2 mailbox full, try later", None]}})
        dns.mx("partial.test", "mx1.partial.test")
        # 7: certificates
        for dom, opts in cls.CERT_CASES.items():
            name = "mx." + dom
            if opts == "wrongname":
                mx.add(name, cert=lab.ca.issue("somebody-else.test"))
            elif opts == "plain":
                mx.add(name, starttls=False)
            else:
                mx.add(name, cert=opts)
            dns.mx(dom, name)
        # 8: restarts
        mx.add("mx1.down.test", refuse=True)
        dns.mx("down.test", "mx1.down.test")
        mx.add("mx1.bulk.test", delay={"eom": 0.15})
        dns.mx("bulk.test", "mx1.bulk.test")
        mx.add("mx1.slow.test", delay={"eom": 3})
        dns.mx("slow.test", "mx1.slow.test")
        dns.fault("tmo2.test", "timeout")
        # 9: always 451
        mx.add("mx1.expire.test", reply={"eom": "451 4.3.0 busy, always"})
        dns.mx("expire.test", "mx1.expire.test")
        # 10: queue CLI
        mx.add("mx1.cli.test", refuse=True)
        dns.mx("cli.test", "mx1.cli.test")
        mx.add("mx1.flush.test", reply={"eom": ["451 4.3.0 later", None]})
        dns.mx("flush.test", "mx1.flush.test")
        # 12: several jobs due at once for a destination that fails
        mx.add("mx1.storm.test", refuse=True)
        dns.mx("storm.test", "mx1.storm.test")
        dns.fault("nullsoon.test", "servfail")      # becomes a null MX during the test
        # 7c: the MX drops the connection after "220 Ready to start TLS"
        mx.add("mx1.tlsdrop.test", close={"tls": True})
        dns.mx("tlsdrop.test", "mx1.tlsdrop.test")
        # 11: what the MX supports
        mx.add("mx1.size.test", size=100000)
        dns.mx("size.test", "mx1.size.test")
        mx.add("mx1.small.test", size=500)
        dns.mx("small.test", "mx1.small.test")
        mx.add("mx1.no8bit.test", eightbitmime=False)
        dns.mx("no8bit.test", "mx1.no8bit.test")
        # 13: the connection cache: a plain MX; one that drops the second
        # MAIL without a word, one that answers it 421 (idle sessions closed)
        mx.add("mx1.cache.test")
        dns.mx("cache.test", "mx1.cache.test")
        mx.add("mx1.cachedrop.test", close={"mail": [False, True, False]})
        dns.mx("cachedrop.test", "mx1.cachedrop.test")
        mx.add("mx1.cache421.test", reply={"mail": [None, "421 4.4.2 mx1.cache421.test idle too long", None]})
        dns.mx("cache421.test", "mx1.cache421.test")

    # domain -> MX certificate (mx.DOMAIN): lab CA options, or a special case
    CERT_CASES = collections.OrderedDict([
        ("c-ok.test", None),
        ("c-name.test", "wrongname"),
        ("c-exp.test", {"expired": True}),
        ("c-self.test", {"self_signed": True}),
        ("c-other.test", {"other_ca": True}),
        ("c-plain.test", "plain"),
    ])
    # expected result type (log result= and tls_sessions.result_type)
    CERT_RESULTS = {
        "c-ok.test": "success",
        "c-name.test": "certificate-host-mismatch",
        "c-exp.test": "certificate-expired",
        "c-self.test": "certificate-not-trusted",
        "c-other.test": "certificate-not-trusted",
        "c-plain.test": "starttls-not-supported",
    }

    # -- relays --------------------------------------------------------------------
    def relay(self, **config):
        r = self.lab.relay(**config)
        self.addCleanup(self.check_relay_end, r)
        return r

    def check_relay_end(self, r):
        check_relay_stopped_clean(self, r)

    def stop_now(self, r):
        """Stops a relay that misbehaves (before its log grows any further);
        the cleanup checks the exit status."""
        if getattr(r, "stopped_rc", None) is None:
            r.stopped_rc = r.stop()

    # -- submitting ------------------------------------------------------------------
    def submit(self, r, sender, rcpts, data):
        """One message over SMTP; returns its queue id."""
        return self.submit_many(r, [(sender, rcpts, data)])[0]

    def submit_many(self, r, messages):
        """Several messages over one SMTP session; returns their queue ids."""
        s = smtplib.SMTP(r.ip, r.port, local_hostname="client.test", timeout=30)
        ids = []
        try:
            s.ehlo()
            for sender, rcpts, data in messages:
                code, resp = s.mail(sender)
                self.assertEqual(code, 250, resp)
                for rc in rcpts:
                    code, resp = s.rcpt(rc)
                    self.assertEqual(code, 250, "RCPT %s: %r" % (rc, resp))
                code, resp = s.data(data)
                self.assertEqual(code, 250, resp)
                m = re.search(r"queued as (%s)" % QID, resp.decode())
                self.assertIsNotNone(m, resp)
                ids.append(m.group(1))
            s.quit()
        finally:
            s.close()
        return ids

    # -- what the relay logged ---------------------------------------------------------
    @staticmethod
    def outcomes(r, qid=None, rcpt=None):
        """Per-recipient delivery log lines ("id=.. to=<..> ... status=.."), parsed."""
        out = []
        for line in r.log_text().splitlines():
            m = re.search(r" info delivery: (id=%s to=<.*)$" % QID, line)
            if not m:
                continue
            d = parse_kv(m.group(1))
            d["line"] = line
            if (qid is None or d["id"] == qid) and (rcpt is None or d["to"] == rcpt):
                out.append(d)
        return out

    def wait_outcome(self, r, qid, rcpt, status, timeout=10, **match):
        """Waits for a log line with this id, recipient and status (and the
        other fields given); returns it parsed."""
        deadline = time.monotonic() + timeout
        while True:
            for d in self.outcomes(r, qid, rcpt):
                if d.get("status") == status and all(d.get(k) == v for k, v in match.items()):
                    return d
            if time.monotonic() > deadline:
                self.fail("no status=%s %s for id=%s to=<%s> within %d s; relay log:\n%s"
                          % (status, match, qid, rcpt, timeout, log_tail(r)))
            time.sleep(0.05)

    @staticmethod
    def connections(r, mx=None):
        """Per-connection log lines ("dest=.. mx=.. result=.."), parsed."""
        out = []
        for line in r.log_text().splitlines():
            m = re.search(r" info delivery: (dest=\S+ mx=\S+ ip=\S+ helo=.* result=.*)$", line)
            if m:
                d = parse_kv(m.group(1))
                if mx is None or d["mx"] == mx:
                    out.append(d)
        return out

    @staticmethod
    def tls_rows(r, mx_host=None):
        path = os.path.join(r.state_dir, "queue.db")
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            rows = [dict(x) for x in con.execute("SELECT * FROM tls_sessions ORDER BY id")]
        finally:
            con.close()
        return [x for x in rows if mx_host is None or x["mx_host"] == mx_host]

    # -- queue CLI -------------------------------------------------------------------
    def queue_list(self, r):
        """{qid: {"state", "sender", "rcpts": [(state, addr, attempts, rest)]}}"""
        p = r.cli("queue", "list")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        out = {}
        cur = None
        for line in p.stdout.splitlines():
            m = re.match(r"^(%s)\s+\S+\s+\S+\s+(\d+)\s+(\S+)\s+<([^>]*)>" % QID, line)
            if m:
                cur = out[m.group(1)] = {"state": m.group(3), "sender": m.group(4), "rcpts": []}
                continue
            m = re.match(r"^\s+(queued|sent|bounced)\s+(\S+)\s+attempts=(\d+)(.*)$", line)
            if m and cur is not None:
                cur["rcpts"].append((m.group(1), m.group(2), int(m.group(3)), m.group(4)))
        if not out:
            self.assertIn("Queue is empty.", p.stdout)
        return out

    def wait_queue_empty(self, r, timeout=10):
        try:
            wait_for(lambda: not self.queue_list(r), timeout, 0.1, "empty queue")
        except AssertionError:
            self.fail("queue not empty after %d s:\n%s\nrelay log:\n%s"
                      % (timeout, r.cli("queue", "list").stdout, log_tail(r)))

    def queue_show(self, r, qid):
        p = r.cli("queue", "show", qid)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    def cli_ok(self, r, *args):
        p = r.cli(*args)
        self.assertEqual(p.returncode, 0, "%s: %s%s" % (" ".join(args), p.stdout, p.stderr))
        return p.stdout

    # -- bounces -----------------------------------------------------------------------
    def dsns(self, to):
        """Messages at the senders' MX for `to` (bounces)."""
        return [m for m in self.lab.mx.messages(SENDER_MX) if m["rcpt_tos"] == [to]]

    def wait_dsn(self, to, timeout=10):
        try:
            return wait_for(lambda: self.dsns(to), timeout, 0.05, "bounce to <%s>" % to)[0]
        except AssertionError:
            self.fail("no bounce to <%s> within %d s; relay logs:\n%s"
                      % (to, timeout, self.lab.relay_log_tails()))

    def parse_dsn(self, m):
        """Checks the RFC 3464 structure (DSN-10/11/12) of a bounce as the MX
        received it; returns (message, per-message fields, [per-recipient fields],
        original message or None)."""
        self.assertEqual(m["mail_from"], "", "a bounce goes out with MAIL FROM:<> (DSN-10)")
        msg = email.message_from_bytes(m["data"], policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        self.assertEqual(msg["Auto-Submitted"], "auto-replied")
        parts = list(msg.iter_parts())
        self.assertEqual(len(parts), 3, [p.get_content_type() for p in parts])
        self.assertEqual(parts[0].get_content_type(), "text/plain")
        self.assertEqual(parts[1].get_content_type(), "message/delivery-status")
        blocks = parts[1].get_payload()
        self.assertIsInstance(blocks, list)
        self.assertGreaterEqual(len(blocks), 2, "a per-message block and recipient blocks")
        per_msg, per_rcpt = blocks[0], blocks[1:]
        self.assertEqual(per_msg["Reporting-MTA"], "dns; relay.test")
        self.assertIsNotNone(per_msg["Arrival-Date"])
        for b in per_rcpt:
            for field in ("Final-Recipient", "Action", "Status"):
                self.assertIsNotNone(b[field], "%s missing in %s" % (field, b.items()))
        original = None
        if parts[2].get_content_type() == "message/rfc822":
            original = parts[2].get_payload()[0]
        return msg, per_msg, per_rcpt, original

    @staticmethod
    def unfold(v):
        return re.sub(r"\s+", " ", str(v)).strip()

    # ===================================================================================
    # 1. STARTTLS delivery, exact bytes, Received:, SNI, queue empty, log
    # ===================================================================================
    def test_01_starttls_exact_bytes(self):
        lab = self.lab
        data = (b"Received: from old.example (old.example [192.0.2.1])\r\n"
                b"\tby mx.old.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                b"From: Alice <alice-t1@sender.test>\r\nTo: bob@exact.test\r\n"
                b"Subject: exact bytes\r\nMessage-ID: <exact-1@sender.test>\r\n"
                b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
                b"line one\r\n.leading dot\r\n..two dots\r\n.\r\ntrailing spaces   \r\n"
                b"\ttab line\r\n" + b"x" * 900 + b"\r\n\r\nlast line\r\n")
        path = os.path.join(lab.dir, "exact.eml")
        with open(path, "wb") as f:
            f.write(data)
        # what swaks sends, exactly: the same command against a recording MX
        cip, cport = lab.mx.addr("control.exact.test")
        rc, out = lab.swaks("--server", "%s:%d" % (cip, cport), "--to", "bob@exact.test",
                            "--from", "alice-t1@sender.test", "--data", "@" + path)
        self.assertEqual(rc, 0, out)
        sent = lab.mx.wait_messages(1, "control.exact.test")[0]["data"]
        self.assertTrue(sent.startswith(data), "swaks changed the message: %r" % sent[:200])

        r = self.relay()
        rc, out = lab.swaks("--server", "%s:%d" % (r.ip, r.port), "--to", "bob@exact.test",
                            "--from", "alice-t1@sender.test", "--data", "@" + path)
        self.assertEqual(rc, 0, out)
        qid = re.search(r"queued as (%s)" % QID, out).group(1)
        got = lab.mx.wait_messages(1, "mx1.exact.test")
        self.assertEqual(len(got), 1)
        m = got[0]
        self.assertEqual(m["mail_from"], "alice-t1@sender.test")
        self.assertEqual(m["rcpt_tos"], ["bob@exact.test"])
        self.assertEqual(m["helo"], "relay.test")
        # exactly one Received: prepended, everything else byte for byte
        self.assertTrue(m["data"].startswith(b"Received: "), m["data"][:200])
        received, rest = split_first_header(m["data"])
        self.assertEqual(rest, sent, "the MX got other bytes than swaks sent (after our Received:)")
        text = received.decode()
        self.assertRegex(text, r"\bby relay\.test \(strictrelay\) with ESMTP id %s\b" % qid)
        self.assertIn("for <bob@exact.test>;", text)
        self.assertEqual(len(re.findall(rb"^Received:", m["data"], re.M)),
                         len(re.findall(rb"^Received:", sent, re.M)) + 1)
        # STARTTLS with SNI = the MX host name, the transaction inside TLS
        self.assertIsNotNone(m["tls"], "delivered without TLS")
        self.assertEqual(m["tls"]["sni"], "mx1.exact.test")
        self.assertEqual(m["tls"]["version"], "TLSv1.3")
        sess = [s for s in lab.mx.sessions("mx1.exact.test") if s["sid"] == m["session"]][0]
        cmds = lab.mx.commands(sess)
        self.assertIn("STARTTLS", cmds)
        self.assertLess(cmds.index("STARTTLS"), cmds.index("MAIL FROM:<alice-t1@sender.test>"))
        # log: one sent line with the details
        d = self.wait_outcome(r, qid, "bob@exact.test", "sent")
        self.assertEqual(d["dsn"], "2.0.0")
        self.assertEqual(d["verified"], "yes")
        self.assertEqual(d["mx"], "mx1.exact.test")
        self.assertEqual(d["ip"], lab.mx.addr("mx1.exact.test")[0])
        self.assertEqual(d["dest"], "exact.test")
        self.assertRegex(d["tls"], r"^TLSv1\.3/TLS_\w+$")
        self.assertEqual(d["sts"], "none")
        self.assertEqual(d["requiretls"], "no")
        self.assertEqual(d["attempts"], "1")
        self.assertRegex(d["reply"], r"^250 2\.0\.0 ")
        self.assertEqual(len(self.outcomes(r, qid)), 1, self.outcomes(r, qid))
        conn = wait_for(lambda: self.connections(r, "mx1.exact.test"), 5, what="connection log line")
        self.assertEqual((conn[0]["starttls"], conn[0]["tls"], conn[0]["verified"],
                          conn[0]["verify_name"], conn[0]["result"]),
                         ("offered", "yes", "yes", "mx1.exact.test", "success"))
        rows = wait_for(lambda: self.tls_rows(r, "mx1.exact.test"), 5, what="tls_sessions row")
        self.assertEqual(len(rows), 1, rows)
        row = rows[0]
        self.assertEqual((row["policy_domain"], row["mx_ip"], row["mx_helo"], row["starttls_offered"],
                          row["tls"], row["verified"], row["result_type"], row["tls_version"]),
                         ("exact.test", lab.mx.addr("mx1.exact.test")[0], "mx1.exact.test", 1, 1, 1,
                          "success", "TLSv1.3"))
        self.wait_queue_empty(r)

    def test_01b_postfix_mx(self):
        lab = self.lab
        pf = lab.postfix_mx(["mx.pf.test"])
        lab.dns.mx("pf.test", "mx.pf.test")
        r = self.relay()
        qid = self.submit(r, "alice-t1b@sender.test", ["carol@pf.test"],
                          make_msg("pf-1@sender.test", "alice-t1b@sender.test", ["carol@pf.test"]))
        msgs = pf.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        msg = msgs[0]["message"]
        self.assertEqual(msg["Message-ID"], "<pf-1@sender.test>")
        received = [self.unfold(h) for h in msg.get_all("Received")]
        self.assertEqual(len(received), 2, received)
        # Postfix's own trace field: TLS from the relay, ESMTPS
        self.assertRegex(received[0], r"^from relay\.test \(.*\[127\.0\.0\.1\]\)")
        self.assertRegex(received[0], r"\(using TLSv1\.3 with cipher \S+")
        self.assertRegex(received[0], r"by mx\.pf\.test \(Postfix\) with ESMTPS id ")
        self.assertRegex(received[1], r"by relay\.test \(strictrelay\) with ESMTP id %s" % qid)
        d = self.wait_outcome(r, qid, "carol@pf.test", "sent")
        self.assertEqual((d["mx"], d["verified"], d["dsn"]), ("mx.pf.test", "yes", "2.0.0"))
        self.assertRegex(d["reply"], r"^250 2\.0\.0 Ok: queued as ")
        self.wait_queue_empty(r)

    # ===================================================================================
    # 2. MX preference and fallback
    # ===================================================================================
    def test_02_mx_fallback_refused(self):
        lab = self.lab
        r = self.relay()
        qid = self.submit(r, "alice-t2@sender.test", ["bob@pref.test"],
                          make_msg("pref-1@sender.test", "alice-t2@sender.test", ["bob@pref.test"]))
        m = lab.mx.wait_messages(1, "mx2.pref.test")[0]
        self.assertEqual(message_id(m["data"]), "pref-1@sender.test")
        d = self.wait_outcome(r, qid, "bob@pref.test", "sent")
        self.assertEqual((d["mx"], d["ip"], d["dsn"]), ("mx2.pref.test", lab.mx.addr("mx2.pref.test")[0],
                                                         "2.0.0"))
        log = r.log_text()
        tried = re.search(r"dest=pref\.test mx=mx1\.pref\.test ip=%s not used: connect: "
                          r"connection refused" % re.escape(lab.mx.addr("mx1.pref.test")[0]), log)
        self.assertIsNotNone(tried, "mx1 (pref 10) was not tried first:\n" + log_tail(r))
        self.assertLess(tried.start(), log.index(d["line"]))
        self.assertEqual(self.outcomes(r, qid), [d])
        self.wait_queue_empty(r)

    def test_02b_mx_fallback_421_greeting(self):
        lab = self.lab
        r = self.relay()
        qid = self.submit(r, "alice-t2b@sender.test", ["bob@greet.test"],
                          make_msg("greet-1@sender.test", "alice-t2b@sender.test", ["bob@greet.test"]))
        m = lab.mx.wait_messages(1, "mx2.greet.test")[0]
        self.assertEqual(message_id(m["data"]), "greet-1@sender.test")
        d = self.wait_outcome(r, qid, "bob@greet.test", "sent")
        self.assertEqual(d["mx"], "mx2.greet.test")
        # pref 10 was tried and answered 421; nothing was sent to it
        s1 = lab.mx.sessions("mx1.greet.test")
        self.assertEqual(len(s1), 1, lab.mx.transcript("mx1.greet.test"))
        self.assertIn("421 4.3.2 too busy, come back later",
                      [e["line"] for e in s1[0]["events"] if e["dir"] == "S"])
        self.assertFalse([c for c in lab.mx.commands(s1[0]) if c.upper().startswith(("MAIL", "EHLO"))],
                         lab.mx.transcript("mx1.greet.test"))
        self.assertEqual(lab.mx.messages("mx1.greet.test"), [])
        # pref 30 never needed
        self.assertEqual(lab.mx.sessions("mx3.greet.test"), [])
        self.wait_queue_empty(r)

    def test_02c_equal_preference_random(self):
        lab = self.lab
        # a new session per message (no connection cache): each one picks an MX
        r = self.relay(delivery={"connection_cache_time": 0})
        n = 20
        for i in range(n):
            # one at a time, so that every message is a session of its own
            self.submit(r, "alice-t2c@sender.test", ["bob@eq.test"],
                        make_msg("eq-%d@sender.test" % i, "alice-t2c@sender.test", ["bob@eq.test"]))
            wait_for(lambda: len(lab.mx.messages("mx1.eq.test")) + len(lab.mx.messages("mx2.eq.test"))
                     >= i + 1, 10, 0.02, "message %d at eq.test" % i)
        a = [message_id(m["data"]) for m in lab.mx.messages("mx1.eq.test")]
        b = [message_id(m["data"]) for m in lab.mx.messages("mx2.eq.test")]
        self.assertEqual(sorted(a + b), sorted("eq-%d@sender.test" % i for i in range(n)))
        self.assertGreaterEqual(len(a), 1, "mx1.eq.test (pref 10) never used in %d sessions" % n)
        self.assertGreaterEqual(len(b), 1, "mx2.eq.test (pref 10) never used in %d sessions" % n)
        self.wait_queue_empty(r)

    def test_02d_every_address_of_every_mx(self):
        lab = self.lab
        r = self.relay()
        qid = self.submit(r, "alice-t2d@sender.test", ["bob@multi.test"],
                          make_msg("multi-1@sender.test", "alice-t2d@sender.test", ["bob@multi.test"]))
        m = lab.mx.wait_messages(1, "mx2.multi.test")[0]
        self.assertEqual(message_id(m["data"]), "multi-1@sender.test")
        d = self.wait_outcome(r, qid, "bob@multi.test", "sent")
        self.assertEqual(d["mx"], "mx2.multi.test")
        log = r.log_text()
        sent_at = log.index(d["line"])
        for ip in (lab.ip(9, 1), lab.ip(9, 2)):
            tried = re.search(r"dest=multi\.test mx=mx1\.multi\.test ip=%s not used: connect: "
                              r"connection refused" % re.escape(ip), log)
            self.assertIsNotNone(tried, "address %s of mx1.multi.test never tried:\n%s" % (ip, log_tail(r)))
            self.assertLess(tried.start(), sent_at)
        self.wait_queue_empty(r)

    # ===================================================================================
    # 3. Implicit MX, null MX, NXDOMAIN
    # ===================================================================================
    def test_03_implicit_mx(self):
        lab = self.lab
        r = self.relay()
        qid = self.submit(r, "alice-t3@sender.test", ["bob@implicit.test"],
                          make_msg("impl-1@sender.test", "alice-t3@sender.test", ["bob@implicit.test"]))
        m = lab.mx.wait_messages(1, "implicit.test")[0]
        self.assertEqual(message_id(m["data"]), "impl-1@sender.test")
        self.assertEqual(m["tls"]["sni"], "implicit.test")
        d = self.wait_outcome(r, qid, "bob@implicit.test", "sent")
        self.assertEqual((d["mx"], d["ip"], d["verified"]),
                         ("implicit.test", lab.mx.addr("implicit.test")[0], "yes"))
        self.wait_queue_empty(r)

    def check_unroutable(self, domain, status, reason_re, tag):
        r = self.relay()
        sender = "alice-%s@sender.test" % tag
        rcpt = "bob@" + domain
        t0 = time.monotonic()
        qid = self.submit(r, sender, [rcpt], make_msg("%s-1@sender.test" % tag, sender, [rcpt]))
        d = self.wait_outcome(r, qid, rcpt, "bounced")
        self.assertLess(time.monotonic() - t0, 5, "not bounced at once")
        self.assertEqual(d["dsn"], status)
        self.assertRegex(d["reason"], reason_re)
        self.assertEqual(d["dest"], domain)
        self.assertNotIn("mx", d, "no MX host can have been used")
        dsn = self.wait_dsn(sender)
        msg, per_msg, per_rcpt, original = self.parse_dsn(dsn)
        self.assertEqual(len(per_rcpt), 1)
        b = per_rcpt[0]
        self.assertEqual(self.unfold(b["Final-Recipient"]), "rfc822; " + rcpt)
        self.assertEqual(b["Action"], "failed")
        self.assertEqual(b["Status"], status)
        self.assertIsNone(b["Remote-MTA"], "no remote MTA was involved")
        self.assertRegex(self.unfold(b["Diagnostic-Code"]), reason_re)
        self.assertIsNotNone(original)
        self.assertEqual(original["Message-ID"], "<%s-1@sender.test>" % tag)
        self.assertEqual(len(self.dsns(sender)), 1)
        self.wait_queue_empty(r)

    def test_03b_null_mx_bounces(self):
        self.check_unroutable("nullmx.test", "5.1.10", r"null MX", "t3b")

    def test_03c_nxdomain_bounces(self):
        self.check_unroutable("nosuch.test", "5.1.2", r"does not exist", "t3c")

    # ===================================================================================
    # 4. DNS SERVFAIL and timeout: deferred, never bounced, then delivered
    # ===================================================================================
    def test_04_dns_tempfail_then_fixed(self):
        lab = self.lab
        r = self.relay(queue=FAST_RETRY)
        sender = "alice-t4@sender.test"
        t0 = time.monotonic()
        q_to = self.submit(r, sender, ["bob@tmo.test"],
                           make_msg("tmo-1@sender.test", sender, ["bob@tmo.test"]))
        q_sf = self.submit(r, sender, ["bob@sfail.test"],
                           make_msg("sfail-1@sender.test", sender, ["bob@sfail.test"]))
        d = self.wait_outcome(r, q_sf, "bob@sfail.test", "deferred")
        self.assertEqual(d["dsn"], "4.4.3")
        self.assertNotIn("bounce to", "\n".join(ln for ln in r.log_text().splitlines()
                                                if "id=%s " % q_sf in ln))
        # it stays queued and is retried (still SERVFAIL: deferred again)
        wait_for(lambda: len([x for x in self.outcomes(r, q_sf) if x["status"] == "deferred"]) >= 2,
                 8, what="a second SERVFAIL deferral")
        self.assertEqual({x["dsn"] for x in self.outcomes(r, q_sf)}, {"4.4.3"})
        with lab.dns.change():
            lab.dns.remove("sfail.test")
            lab.dns.mx("sfail.test", "mx1.sfailhost.test")
        m = lab.mx.wait_messages(1, "mx1.sfailhost.test")[0]
        self.assertEqual(message_id(m["data"]), "sfail-1@sender.test")
        sent = self.wait_outcome(r, q_sf, "bob@sfail.test", "sent")
        self.assertGreaterEqual(int(sent["attempts"]), 3)
        self.assertEqual([x["status"] for x in self.outcomes(r, q_sf)].count("bounced"), 0)

        # the DNS timeout (c-ares: 5 s, then 10 s) runs alongside
        d = self.wait_outcome(r, q_to, "bob@tmo.test", "deferred", timeout=30)
        self.assertEqual(d["dsn"], "4.4.3")
        self.assertGreater(time.monotonic() - t0, 4, "a timeout cannot be that fast")
        with lab.dns.change():
            lab.dns.remove("tmo.test")
            lab.dns.mx("tmo.test", "mx1.tmohost.test")
        m = lab.mx.wait_messages(1, "mx1.tmohost.test", timeout=30)[0]
        self.assertEqual(message_id(m["data"]), "tmo-1@sender.test")
        self.wait_outcome(r, q_to, "bob@tmo.test", "sent", timeout=10)
        self.wait_queue_empty(r)
        self.assertEqual(self.dsns(sender), [], "a temporary DNS failure produced a bounce")
        self.assertNotIn("bounced", [x["status"] for x in self.outcomes(r)])

    # ===================================================================================
    # 5. 451 at end of data, then delivered on retry
    # ===================================================================================
    def test_05_451_then_retry(self):
        lab = self.lab
        r = self.relay(queue={"retry_schedule": "2s"})
        qid = self.submit(r, "alice-t5@sender.test", ["bob@t451.test"],
                          make_msg("t451-1@sender.test", "alice-t5@sender.test", ["bob@t451.test"]))
        d = self.wait_outcome(r, qid, "bob@t451.test", "deferred")
        self.assertEqual((d["dsn"], d["reply"], d["attempts"]), ("4.3.0", "451 4.3.0 try again later", "1"))
        show = self.queue_show(r, qid)
        self.assertRegex(show, r"(?m)^  queued\s+bob@t451\.test\s+attempts=1 next in \d+s via "
                               r"mx1\.t451\.test\[[\d.]+\]:2525\s+last: 4\.3\.0 451 4\.3\.0 try again later$")
        self.assertRegex(show, r"(?m)^  \S+ deferred bob@t451\.test via=mx1\.t451\.test\S* "
                               r"status=4\.3\.0 reply=451 4\.3\.0 try again later$")
        m = lab.mx.wait_messages(1, "mx1.t451.test")
        self.assertEqual(len(m), 1)
        self.assertEqual(message_id(m[0]["data"]), "t451-1@sender.test")
        s = self.wait_outcome(r, qid, "bob@t451.test", "sent")
        self.assertEqual((s["attempts"], s["dsn"]), ("2", "2.0.0"))
        self.wait_queue_empty(r)
        show = self.queue_show(r, qid)
        self.assertIn("state:       no longer queued", show)
        kinds = re.findall(r"(?m)^  \S+ (\w+) ", show)
        self.assertEqual(kinds, ["received", "deferred", "sent", "removed"], show)
        self.assertEqual(self.dsns("alice-t5@sender.test"), [])

    # ===================================================================================
    # 6. 5xx for one of two recipients; the DSN; null senders get none
    # ===================================================================================
    def test_06_partial_bounce_and_dsn(self):
        lab = self.lab
        r = self.relay()
        sender = "alice-t6@sender.test"
        rcpts = ["good@partial.test", "bad@partial.test"]
        body = make_msg("partial-1@sender.test", sender, rcpts, body="The original body.\r\n")
        qid = self.submit(r, sender, rcpts, body)
        good = self.wait_outcome(r, qid, "good@partial.test", "sent")
        bad = self.wait_outcome(r, qid, "bad@partial.test", "bounced")
        self.assertEqual(good["dsn"], "2.0.0")
        self.assertEqual((bad["dsn"], bad["reply"]), ("5.1.1", "550 5.1.1 no such user"))
        got = lab.mx.wait_messages(1, "mx1.partial.test")
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["rcpt_tos"], ["good@partial.test"])
        self.assertEqual(message_id(got[0]["data"]), "partial-1@sender.test")

        dsn = self.wait_dsn(sender)
        self.assertEqual(dsn["rcpt_tos"], [sender])
        # MAIL FROM:<> exactly as the MX saw it
        sess = [s for s in lab.mx.sessions(SENDER_MX) if s["sid"] == dsn["session"]][0]
        self.assertTrue(any(c == "MAIL FROM:<>" or c.startswith("MAIL FROM:<> ")
                            for c in lab.mx.commands(sess)), lab.mx.commands(sess))
        msg, per_msg, per_rcpt, original = self.parse_dsn(dsn)
        self.assertEqual([a.addr_spec for a in msg["To"].addresses], [sender])
        self.assertEqual([a.addr_spec for a in msg["From"].addresses], ["MAILER-DAEMON@relay.test"])
        self.assertEqual(len(per_rcpt), 1, "only the failed recipient is reported")
        b = per_rcpt[0]
        self.assertEqual(self.unfold(b["Final-Recipient"]), "rfc822; bad@partial.test")
        self.assertEqual(b["Action"], "failed")
        self.assertEqual(b["Status"], "5.1.1")
        self.assertEqual(self.unfold(b["Remote-MTA"]), "dns; mx1.partial.test")
        self.assertEqual(self.unfold(b["Diagnostic-Code"]), "smtp; 550 5.1.1 no such user")
        text = list(msg.iter_parts())[0].get_content()
        self.assertIn("bad@partial.test", text)
        self.assertNotIn("good@partial.test", text)
        self.assertIsNotNone(original, "the full original is returned (message/rfc822)")
        self.assertEqual(original["Message-ID"], "<partial-1@sender.test>")
        self.assertEqual(original.get_content().replace("\r\n", "\n"), "The original body.\n")
        self.wait_queue_empty(r)
        self.assertEqual(len(self.dsns(sender)), 1)

    def test_06c_per_recipient_2xx_4xx_5xx(self):
        """SMTP-16: sent, requeued (4xx at RCPT, then sent alone) and bounced
        recipients of one message; one bounce, about the 5xx one only."""
        lab = self.lab
        r = self.relay(queue=FAST_RETRY)
        sender = "alice-t6c@sender.test"
        rcpts = ["good@partial.test", "busy@partial.test", "bad@partial.test"]
        qid = self.submit(r, sender, rcpts, make_msg("mixed-1@sender.test", sender, rcpts))
        self.assertEqual(self.wait_outcome(r, qid, "good@partial.test", "sent")["attempts"], "1")
        self.assertEqual(self.wait_outcome(r, qid, "bad@partial.test", "bounced")["dsn"], "5.1.1")
        d = self.wait_outcome(r, qid, "busy@partial.test", "deferred")
        self.assertEqual((d["dsn"], d["reply"]), ("4.2.2", "452 4.2.2 mailbox full, try later"))
        s = self.wait_outcome(r, qid, "busy@partial.test", "sent")
        self.assertEqual(s["attempts"], "2")
        got = [m for m in lab.mx.messages("mx1.partial.test") if message_id(m["data"]) == "mixed-1@sender.test"]
        self.assertEqual([m["rcpt_tos"] for m in got], [["good@partial.test"], ["busy@partial.test"]])
        self.wait_queue_empty(r)
        self.assertEqual([(x["to"], x["status"]) for x in self.outcomes(r, qid)],
                         [("good@partial.test", "sent"), ("busy@partial.test", "deferred"),
                          ("bad@partial.test", "bounced"), ("busy@partial.test", "sent")])
        dsn = self.wait_dsn(sender)
        _, _, per_rcpt, _ = self.parse_dsn(dsn)
        self.assertEqual([self.unfold(b["Final-Recipient"]) for b in per_rcpt], ["rfc822; bad@partial.test"])
        self.assertEqual(len(self.dsns(sender)), 1, "one bounce only")

    def test_06b_no_dsn_for_null_sender(self):
        lab = self.lab
        r = self.relay()
        # a bounce-like message (MAIL FROM:<>) that bounces: no DSN at all
        qid = self.submit(r, "", ["bad@partial.test"],
                          make_msg("null-1@client.test", "", ["bad@partial.test"]))
        d = self.wait_outcome(r, qid, "bad@partial.test", "bounced")
        self.assertEqual(d["dsn"], "5.1.1")
        r.wait_log(r"id=%s no bounce sent: the message has a null sender" % qid)
        self.wait_queue_empty(r)
        self.assertNotRegex(r.log_text(), r"id=%s bounce to " % qid)
        # a message whose bounce itself bounces: exactly one bounce attempt, no second one
        sender = "alice-t6b@rejects.test"
        qid2 = self.submit(r, sender, ["bad@partial.test"],
                           make_msg("dbl-1@rejects.test", sender, ["bad@partial.test"]))
        self.wait_outcome(r, qid2, "bad@partial.test", "bounced")
        m = r.wait_log(r"id=%s bounce to <%s> queued as (%s)" % (qid2, re.escape(sender), QID))
        bounce_id = m.group(1)
        b = self.wait_outcome(r, bounce_id, sender, "bounced")
        self.assertEqual(b["dsn"], "5.1.1")
        r.wait_log(r"id=%s no bounce sent: the message has a null sender" % bounce_id)
        self.wait_queue_empty(r)
        self.assertNotRegex(r.log_text(), r"id=%s bounce to " % bounce_id)
        self.assertEqual(lab.mx.messages("mx1.rejects.test"), [])

    # ===================================================================================
    # 7. Certificate outcomes (log, tls_sessions), opportunistic vs require_tls
    # ===================================================================================
    def send_cert_round(self, r, tag):
        ids = {}
        for dom in self.CERT_CASES:
            rcpt = "bob@" + dom
            ids[dom] = self.submit(r, "alice-t7@sender.test", [rcpt],
                                   make_msg("%s-%s@sender.test" % (tag, dom), "alice-t7@sender.test", [rcpt]))
        return ids

    def check_tls_records(self, r):
        for dom, result in self.CERT_RESULTS.items():
            mx = "mx." + dom
            conns = wait_for(lambda: self.connections(r, mx), 10, what="connection line for " + mx)
            c = conns[0]
            self.assertEqual(c["result"], result, c)
            self.assertEqual(c["verified"], "yes" if result == "success" else "no", c)
            self.assertEqual(c["starttls"], "no" if dom == "c-plain.test" else "offered", c)
            self.assertEqual(c["tls"], "no" if dom == "c-plain.test" else "yes", c)
            self.assertEqual(c["verify_name"], mx, c)
            rows = wait_for(lambda: self.tls_rows(r, mx), 5, what="tls_sessions row for " + mx)
            row = rows[0]
            self.assertEqual((row["policy_domain"], row["result_type"], row["verified"], row["tls"],
                              row["starttls_offered"], row["mx_ip"], row["mx_helo"]),
                             (dom, result, int(result == "success"), int(dom != "c-plain.test"),
                              int(dom != "c-plain.test"), self.lab.mx.addr(mx)[0], mx), row)
            if dom == "c-plain.test":
                self.assertEqual((row["tls_version"], row["cipher"]), ("", ""))
            else:
                self.assertRegex(row["tls_version"], r"^TLSv1\.[23]$")
                self.assertNotEqual(row["cipher"], "")
            detail_re = {"c-name.test": r"hostname mismatch", "c-exp.test": r"expired",
                         "c-self.test": r"self.signed", "c-other.test": r"local issuer"}.get(dom)
            if detail_re:
                self.assertRegex(row["detail"], detail_re)

    def test_07_certificates_opportunistic(self):
        lab = self.lab
        r = self.relay()
        ids = self.send_cert_round(r, "opp")
        for dom in self.CERT_CASES:
            mx = "mx." + dom
            m = lab.mx.wait_messages(1, mx)
            self.assertEqual(len(m), 1, mx)
            self.assertEqual(message_id(m[0]["data"]), "opp-%s@sender.test" % dom)
            d = self.wait_outcome(r, ids[dom], "bob@" + dom, "sent")
            if dom == "c-plain.test":
                self.assertIsNone(m[0]["tls"], "plaintext expected")
                self.assertEqual(d["tls"], "none")
            else:
                self.assertIsNotNone(m[0]["tls"], "%s: sent without TLS although offered" % mx)
                self.assertEqual(m[0]["tls"]["sni"], mx)
                self.assertEqual(d["verified"], "yes" if dom == "c-ok.test" else "no", d)
        self.check_tls_records(r)
        self.wait_queue_empty(r)

    def test_07b_certificates_require_tls(self):
        lab = self.lab
        before = {dom: len(lab.mx.messages("mx." + dom)) for dom in self.CERT_CASES}
        sessions_before = {dom: len(lab.mx.sessions("mx." + dom)) for dom in self.CERT_CASES}
        r = self.relay(delivery={"require_tls": True}, queue={"retry_schedule": "1h"})
        ids = self.send_cert_round(r, "req")
        m = lab.mx.wait_messages(before["c-ok.test"] + 1, "mx.c-ok.test")
        self.assertEqual(message_id(m[-1]["data"]), "req-c-ok.test@sender.test")
        self.assertEqual(m[-1]["tls"]["sni"], "mx.c-ok.test")
        d = self.wait_outcome(r, ids["c-ok.test"], "bob@c-ok.test", "sent")
        self.assertEqual(d["verified"], "yes")
        for dom in self.CERT_CASES:
            if dom == "c-ok.test":
                continue
            d = self.wait_outcome(r, ids[dom], "bob@" + dom, "deferred")
            self.assertEqual(d["dsn"], "4.7.10" if dom == "c-plain.test" else "4.7.5", d)
            self.assertNotIn("bounced", [x["status"] for x in self.outcomes(r, ids[dom])])
        self.check_tls_records(r)
        # nothing went out in plaintext or over unverified TLS: no MAIL anywhere
        for dom in self.CERT_CASES:
            if dom == "c-ok.test":
                continue
            mx = "mx." + dom
            self.assertEqual(len(lab.mx.messages(mx)), before[dom], mx)
            new = lab.mx.sessions(mx)[sessions_before[dom]:]
            self.assertGreaterEqual(len(new), 1, "%s was never contacted" % mx)
            for s in new:
                cmds = lab.mx.commands(s)
                self.assertFalse([c for c in cmds if c.upper().startswith(("MAIL", "RCPT", "DATA"))],
                                 "%s: %s" % (mx, cmds))
        q = self.queue_list(r)
        self.assertEqual(sorted(q), sorted(ids[d] for d in self.CERT_CASES if d != "c-ok.test"))
        self.assertEqual(self.dsns("alice-t7@sender.test"), [])

    def test_07c_tls_handshake_dropped_falls_back_to_plaintext(self):
        """Opportunistic TLS (require_tls=no, no policy): an MX that drops the
        connection during the TLS handshake gets the message in plaintext on
        a new connection, as for any other handshake failure."""
        lab = self.lab
        r = self.relay(queue=FAST_RETRY)
        sender = "alice-t7c@sender.test"
        qid = self.submit(r, sender, ["bob@tlsdrop.test"], make_msg("tlsdrop-1@sender.test", sender,
                                                                     ["bob@tlsdrop.test"]))
        rows = wait_for(lambda: self.tls_rows(r, "mx1.tlsdrop.test"), 5, what="tls_sessions row")
        self.assertEqual((rows[0]["starttls_offered"], rows[0]["tls"], rows[0]["verified"],
                          rows[0]["result_type"]), (1, 0, 0, "validation-failure"), rows[0])
        try:
            m = lab.mx.wait_messages(1, "mx1.tlsdrop.test", timeout=8)[0]
        except LabError:
            self.fail("not delivered in plaintext after the MX dropped the TLS handshake; "
                      "outcomes: %s" % [(x["status"], x["dsn"], x.get("reason") or x.get("reply"))
                                        for x in self.outcomes(r, qid)])
        self.assertIsNone(m["tls"])
        self.assertEqual(message_id(m["data"]), "tlsdrop-1@sender.test")
        self.wait_outcome(r, qid, "bob@tlsdrop.test", "sent", tls="none")
        self.wait_queue_empty(r)

    def test_07d_tls_handshake_dropped_require_tls(self):
        """require_tls=yes: an MX that drops the TLS handshake never gets the
        message in plaintext, and the deferral says why (4.7.x, as for any
        other failed handshake)."""
        lab = self.lab
        sessions_before = len(lab.mx.sessions("mx1.tlsdrop.test"))
        messages_before = len(lab.mx.messages("mx1.tlsdrop.test"))
        r = self.relay(delivery={"require_tls": True}, queue={"retry_schedule": "1h"})
        sender = "alice-t7d@sender.test"
        qid = self.submit(r, sender, ["bob@tlsdrop.test"], make_msg("tlsdrop-2@sender.test", sender,
                                                                     ["bob@tlsdrop.test"]))
        d = self.wait_outcome(r, qid, "bob@tlsdrop.test", "deferred")
        new = lab.mx.sessions("mx1.tlsdrop.test")[sessions_before:]
        self.assertGreaterEqual(len(new), 1)
        for sess in new:
            self.assertFalse([c for c in lab.mx.commands(sess) if c.upper().startswith(("MAIL", "RCPT"))],
                             lab.mx.commands(sess))
        self.assertEqual(len(lab.mx.messages("mx1.tlsdrop.test")), messages_before)
        self.assertEqual(sorted(self.queue_list(r)), [qid])
        self.assertRegex(d["dsn"], r"^4\.7\.\d+$", "a failed TLS handshake is a security (x.7.x) "
                         "condition: %s" % d["line"])

    # ===================================================================================
    # 8. Restarts in the middle of the queue
    # ===================================================================================
    def test_08_kill9_with_queue_then_mx_up(self):
        lab = self.lab
        r = self.relay(queue={"retry_schedule": "1s"})
        sender = "alice-t8@sender.test"
        n = 30
        msgs = [(sender, ["bob@down.test"], make_msg("down-%d@sender.test" % i, sender, ["bob@down.test"]))
                for i in range(n)]
        ids = self.submit_many(r, msgs)
        self.assertEqual(len(set(ids)), n)
        # the relay has tried (and failed) at least once; all 30 are queued
        r.wait_log(r"dest=down\.test mx=mx1\.down\.test ip=\S+ not used: connect: connection refused")
        self.assertEqual(sorted(self.queue_list(r)), sorted(ids))
        self.assertNotRegex(r.log_text(), r"status=(sent|bounced)")
        r.kill9()
        self.assertFalse(r.running())
        lab.mx.update("mx1.down.test", refuse=False)
        r.start()
        got = lab.mx.wait_messages(n, "mx1.down.test", timeout=30)
        self.wait_queue_empty(r, timeout=20)
        got = lab.mx.messages("mx1.down.test")
        counts = collections.Counter(message_id(m["data"]) for m in got)
        self.assertEqual(set(counts), {"down-%d@sender.test" % i for i in range(n)})
        self.assertEqual([k for k, v in counts.items() if v != 1], [], "delivered more than once")
        self.assertEqual(self.dsns(sender), [])
        # connection reuse: fewer sessions than messages, RSET between transactions
        sessions = [s for s in lab.mx.sessions("mx1.down.test")
                    if any(c.startswith("MAIL FROM:") for c in lab.mx.commands(s))]
        self.assertLess(len(sessions), n, "no connection reuse")
        self.assertLessEqual(max_overlap(sessions), 10, "more than max_per_domain (10) sessions at once")
        reused = 0
        for s in sessions:
            cmds = [c.split(":")[0].split(" ")[0].upper() for c in lab.mx.commands(s)]
            txn = [c for c in cmds if c in ("MAIL", "RSET")]
            mails = txn.count("MAIL")
            reused += mails > 1
            for i, c in enumerate(txn):
                if c == "MAIL" and i > 0:
                    self.assertEqual(txn[i - 1], "RSET", "no RSET before a MAIL on a reused "
                                     "connection: %s" % lab.mx.commands(s))
        self.assertGreaterEqual(reused, 1, "no connection carried more than one message")

    def test_08b_kill9_while_delivering(self):
        lab = self.lab
        per_domain = 3
        r = self.relay(delivery={"max_per_domain": per_domain}, queue={"retry_schedule": "1s"})
        sender = "alice-t8b@sender.test"
        n = 50
        msgs = [(sender, ["bob@bulk.test"], make_msg("bulk-%d@sender.test" % i, sender, ["bob@bulk.test"]))
                for i in range(n)]
        self.submit_many(r, msgs)
        lab.mx.wait_messages(10, "mx1.bulk.test", timeout=30)
        r.kill9()
        at_kill = len(lab.mx.messages("mx1.bulk.test"))
        self.assertLess(at_kill, n, "everything was delivered before the kill: the test proves nothing")
        r.start()
        wanted = {"bulk-%d@sender.test" % i for i in range(n)}
        wait_for(lambda: wanted <= {message_id(m["data"]) for m in lab.mx.messages("mx1.bulk.test")},
                 30, 0.1, "all %d messages at the MX" % n)
        self.wait_queue_empty(r, timeout=20)
        counts = collections.Counter(message_id(m["data"]) for m in lab.mx.messages("mx1.bulk.test"))
        self.assertEqual(set(counts), wanted)
        self.assertLessEqual(max_overlap(lab.mx.sessions("mx1.bulk.test")), per_domain,
                             "more sessions at once than max_per_domain")
        dups = {k: v for k, v in counts.items() if v > 1}
        sys.stderr.write("delivery: kill -9 with %d of %d delivered; duplicates after restart: %s\n"
                         % (at_kill, n, dups or "none"))
        self.assertLessEqual(sum(v - 1 for v in dups.values()), per_domain,
                             "more duplicates than messages in flight at the kill: %s" % dups)
        self.assertEqual(self.dsns(sender), [])

    def test_08c_sigterm_mid_delivery(self):
        """SIGTERM with one session inside DATA (slow MX) and one waiting for
        DNS (timeout): prompt clean exit, nothing lost, delivered after restart."""
        lab = self.lab
        r = self.relay(queue={"retry_schedule": "1s"})
        sender = "alice-t8c@sender.test"
        q_slow = self.submit(r, sender, ["bob@slow.test"], make_msg("slow-1@sender.test", sender, ["bob@slow.test"]))
        q_dns = self.submit(r, sender, ["bob@tmo2.test"], make_msg("tmo2-1@sender.test", sender, ["bob@tmo2.test"]))
        wait_for(lambda: any(e["line"].startswith("<") and "bytes of DATA" in e["line"]
                             for s in lab.mx.sessions("mx1.slow.test") for e in s["events"]),
                 10, what="the message data at mx1.slow.test")
        t0 = time.monotonic()
        rc = r.stop()
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, log_tail(r))
        self.assertLess(took, 5, "stopping took %.1f s" % took)
        # both messages are still queued (the relay is stopped: read the queue directly)
        q = self.queue_list(r)
        self.assertEqual(sorted(q), sorted([q_slow, q_dns]), q)
        self.assertNotRegex(r.log_text(), r"status=(sent|bounced)")
        lab.mx.update("mx1.slow.test", delay={})
        with lab.dns.change():
            lab.dns.remove("tmo2.test")
            lab.dns.mx("tmo2.test", "mx1.slow.test")
        r.start()
        self.wait_outcome(r, q_slow, "bob@slow.test", "sent", timeout=15)
        self.wait_outcome(r, q_dns, "bob@tmo2.test", "sent", timeout=15)
        self.wait_queue_empty(r)
        counts = collections.Counter(message_id(m["data"]) for m in lab.mx.messages("mx1.slow.test"))
        self.assertEqual(counts["tmo2-1@sender.test"], 1)
        # the slow one may arrive twice: it was in flight when the relay stopped
        self.assertIn(counts["slow-1@sender.test"], (1, 2))
        self.assertEqual(self.dsns(sender), [])

    # ===================================================================================
    # 9. max_lifetime: a deferral past it becomes a 5.4.7 bounce
    # ===================================================================================
    def test_09_max_lifetime_bounce(self):
        lab = self.lab
        r = self.relay(queue={"retry_schedule": "1s", "max_lifetime": "3s"})
        sender = "alice-t9@sender.test"
        t0 = time.monotonic()
        qid = self.submit(r, sender, ["bob@expire.test"],
                          make_msg("expire-1@sender.test", sender, ["bob@expire.test"]))
        d = self.wait_outcome(r, qid, "bob@expire.test", "bounced", timeout=15)
        elapsed = time.monotonic() - t0
        self.assertEqual(d["dsn"], "5.4.7")
        self.assertEqual(d["reason"], "expired")
        self.assertGreaterEqual(elapsed, 2.0, "bounced before max_lifetime")
        deferred = [x for x in self.outcomes(r, qid) if x["status"] == "deferred"]
        self.assertGreaterEqual(len(deferred), 2, "retried before expiring")
        self.assertEqual({x["reply"] for x in deferred}, {"451 4.3.0 busy, always"})
        dsn = self.wait_dsn(sender)
        msg, per_msg, per_rcpt, original = self.parse_dsn(dsn)
        self.assertEqual(len(per_rcpt), 1)
        b = per_rcpt[0]
        self.assertEqual(self.unfold(b["Final-Recipient"]), "rfc822; bob@expire.test")
        self.assertEqual((b["Action"], b["Status"]), ("failed", "5.4.7"))
        self.assertIn("451 4.3.0 busy, always", self.unfold(b["Diagnostic-Code"]))
        self.assertEqual(self.unfold(b["Remote-MTA"]), "dns; mx1.expire.test")
        self.assertEqual(original["Message-ID"], "<expire-1@sender.test>")
        self.assertEqual(lab.mx.messages("mx1.expire.test"), [])
        self.wait_queue_empty(r)
        show = self.queue_show(r, qid)
        self.assertRegex(show, r"(?m)^  \S+ bounced bob@expire\.test .*status=5\.4\.7 ")

    # ===================================================================================
    # 10. queue hold / release / flush / delete while delivering
    # ===================================================================================
    def test_10_queue_cli(self):
        lab = self.lab
        r = self.relay(queue={"retry_schedule": "1h"})
        sender = "alice-t10@sender.test"
        qa, qb, qd = self.submit_many(r, [
            (sender, ["a@cli.test"], make_msg("cli-a@sender.test", sender, ["a@cli.test"])),
            (sender, ["b@cli.test"], make_msg("cli-b@sender.test", sender, ["b@cli.test"])),
            (sender, ["d@cli.test"], make_msg("cli-d@sender.test", sender, ["d@cli.test"])),
        ])
        for q, rc in ((qa, "a@cli.test"), (qb, "b@cli.test"), (qd, "d@cli.test")):
            self.assertEqual(self.wait_outcome(r, q, rc, "deferred")["dsn"], "4.4.1")
        self.assertIn("held", self.cli_ok(r, "queue", "hold", qa))
        self.assertIn("deleted", self.cli_ok(r, "queue", "delete", qd))
        q = self.queue_list(r)
        self.assertEqual(sorted(q), sorted([qa, qb]))
        self.assertEqual(q[qa]["state"], "held")
        self.assertEqual(q[qb]["state"], "queued")
        self.assertRegex(q[qb]["rcpts"][0][3], r"next in (59m|1h)")
        # the MX comes up; flush makes everything due now instead of in an hour
        lab.mx.update("mx1.cli.test", refuse=False)
        self.cli_ok(r, "queue", "flush")
        m = lab.mx.wait_messages(1, "mx1.cli.test", timeout=5)
        self.assertEqual(message_id(m[0]["data"]), "cli-b@sender.test")
        self.assertEqual(self.wait_outcome(r, qb, "b@cli.test", "sent")["attempts"], "2")
        time.sleep(TICK)   # a scheduler tick with A due: it must still not go
        self.assertEqual([message_id(x["data"]) for x in lab.mx.messages("mx1.cli.test")],
                         ["cli-b@sender.test"])
        q = self.queue_list(r)
        self.assertEqual(sorted(q), [qa])
        self.assertEqual((q[qa]["state"], q[qa]["rcpts"][0][2]), ("held", 1))
        # release: A goes (it is due since the flush)
        self.cli_ok(r, "queue", "release", qa)
        self.wait_outcome(r, qa, "a@cli.test", "sent", timeout=5)
        self.wait_queue_empty(r)
        got = sorted(message_id(x["data"]) for x in lab.mx.messages("mx1.cli.test"))
        self.assertEqual(got, ["cli-a@sender.test", "cli-b@sender.test"], "D was deleted")
        self.assertEqual(self.outcomes(r, qd, "d@cli.test")[-1]["status"], "deferred")
        self.assertNotRegex(r.log_text(), r"id=%s bounce to " % qd)
        self.assertEqual(self.dsns(sender), [], "delete sends no bounce")

        # flush one message: retried at once instead of in an hour
        qf = self.submit(r, sender, ["f@flush.test"], make_msg("cli-f@sender.test", sender, ["f@flush.test"]))
        d = self.wait_outcome(r, qf, "f@flush.test", "deferred")
        self.assertEqual((d["dsn"], d["reply"]), ("4.3.0", "451 4.3.0 later"))
        show = self.queue_show(r, qf)
        self.assertRegex(show, r"(?m)^  queued\s+f@flush\.test\s+attempts=1 next in (59m|1h)")
        self.assertIn("due now", self.cli_ok(r, "queue", "flush", qf))
        m = lab.mx.wait_messages(1, "mx1.flush.test", timeout=5)
        self.assertEqual(message_id(m[0]["data"]), "cli-f@sender.test")
        self.assertEqual(self.wait_outcome(r, qf, "f@flush.test", "sent")["attempts"], "2")
        self.wait_queue_empty(r)


    # ===================================================================================
    # 12. Several jobs due at once for a destination that cannot be used
    # ===================================================================================
    def queue_one_at_a_time(self, r, sender, domain, n):
        """n messages to domain, each submitted after the previous one was
        deferred (so no two are ever due together before the test wants it)."""
        ids = []
        for i in range(n):
            rcpt = "bob%d@%s" % (i, domain)
            qid = self.submit(r, sender, [rcpt], make_msg("%s-%d@sender.test" % (domain, i), sender, [rcpt]))
            self.wait_outcome(r, qid, rcpt, "deferred")
            ids.append(qid)
        return ids

    def test_12_many_due_jobs_refused_mx(self):
        """Five deferred messages to a refusing MX, made due together (flush):
        each is tried and deferred again, with a handful of connections, not
        retried in a loop."""
        r = self.relay(queue={"retry_schedule": "1h"})
        n = 5
        ids = self.queue_one_at_a_time(r, "alice-t12@sender.test", "storm.test", n)
        mark = r.log_mark()
        self.cli_ok(r, "queue", "flush")
        try:
            wait_for(lambda: all(m["rcpts"][0][2] == 2 for m in self.queue_list(r).values()), 5, 0.1,
                     "second deferral of every message")
        except AssertionError:
            queue = r.cli("queue", "list").stdout
            self.stop_now(r)
            self.fail("after `queue flush` the %d messages were not deferred again within 5 s; %d "
                      "connection attempts to mx1.storm.test meanwhile; queue:\n%s"
                      % (n, r.log_text()[mark:].count("dest=storm.test mx=mx1.storm.test ip="), queue))
        attempts = r.log_text()[mark:].count("dest=storm.test mx=mx1.storm.test ip=")
        self.assertLessEqual(attempts, 2 * n, "connection attempts after the flush")
        self.assertEqual(sorted(self.queue_list(r)), sorted(ids))

    def test_12b_many_due_jobs_null_mx(self):
        """Three deferred messages to a domain that then publishes a null MX,
        made due together: all three bounce (5.1.10), one DSN each."""
        lab = self.lab
        r = self.relay(queue={"retry_schedule": "1h"})
        sender = "alice-t12b@sender.test"
        ids = self.queue_one_at_a_time(r, sender, "nullsoon.test", 3)
        with lab.dns.change():
            lab.dns.remove("nullsoon.test")
            lab.dns.null_mx("nullsoon.test")
        self.cli_ok(r, "queue", "flush")
        try:
            wait_for(lambda: not self.queue_list(r), 5, 0.1, "all three bounced")
        except AssertionError:
            queue = r.cli("queue", "list").stdout
            self.stop_now(r)
            self.fail("messages to a null MX not bounced within 5 s after `queue flush`; %d "
                      "'resolution failed' lines in the log; queue:\n%s"
                      % (r.log_text().count("dest=nullsoon.test resolution failed"), queue))
        for i, qid in enumerate(ids):
            self.assertEqual(self.wait_outcome(r, qid, "bob%d@nullsoon.test" % i, "bounced")["dsn"], "5.1.10")
        dsns = wait_for(lambda: len(self.dsns(sender)) >= 3 and self.dsns(sender), 10, what="three bounces")
        self.assertEqual(len(dsns), 3)

    # ===================================================================================
    # 11. SIZE and 8BITMIME: parameters only as advertised, local bounces
    # ===================================================================================
    def send_one_by_one(self, r, domain, n, tag):
        """n messages to bob@domain, each waited for at the MX; their ids."""
        ids = []
        for i in range(n):
            ids.append(self.submit(r, "alice-%s@sender.test" % tag, ["bob@" + domain],
                                   make_msg("%s-%d@sender.test" % (tag, i), "alice-%s@sender.test" % tag,
                                            ["bob@" + domain])))
            self.wait_outcome(r, ids[-1], "bob@" + domain, "sent")
        return ids

    def test_13_connection_cache(self):
        """[delivery] connection_cache_time: messages that come one after the
        other go over one connection (RSET between them), which QUITs once
        it has idled that long; a cached connection that the MX closed (no
        reply to MAIL, or 421) costs the message nothing: it goes out on a
        new connection at once, never deferred."""
        lab = self.lab
        r = self.relay(delivery={"connection_cache_time": "2s"})
        t0 = time.monotonic()
        self.send_one_by_one(r, "cache.test", 3, "cache")
        sess = lab.mx.sessions("mx1.cache.test")
        self.assertEqual(len(sess), 1, lab.mx.transcript("mx1.cache.test"))
        cmds = [c.split(" ")[0].split(":")[0] for c in lab.mx.commands(sess[0])]
        self.assertEqual(cmds.count("MAIL"), 3, cmds)
        self.assertEqual(cmds.count("STARTTLS"), 1, cmds)
        # idle for connection_cache_time, then QUIT; one TLS record for it all
        wait_for(lambda: "QUIT" in lab.mx.commands(lab.mx.sessions("mx1.cache.test")[0]), 10, 0.1,
                 "QUIT after the idle time")
        self.assertGreaterEqual(time.monotonic() - t0, 2.0)
        conns = wait_for(lambda: self.connections(r, "mx1.cache.test"), 5, 0.1, "the session line")
        self.assertEqual([c["result"] for c in conns], ["success"])
        self.assertEqual(len(self.tls_rows(r, "mx1.cache.test")), 1)
        # the MX drops the cached connection at the next MAIL: a new connection
        for dom, why in (("cachedrop.test", "gone"), ("cache421.test", "closed")):
            with self.subTest(dom=dom):
                ids = self.send_one_by_one(r, dom, 2, "c-" + dom.split(".")[0])
                for qid in ids:
                    self.assertEqual([d["status"] for d in self.outcomes(r, qid)], ["sent"],
                                     "deferred because of a stale cached connection")
                self.assertRegex(r.log_text(), r"id=%s dest=%s mx=mx1\.%s ip=\S+ the cached connection was %s"
                                 % (ids[1], re.escape(dom), re.escape(dom), why))
                sess = lab.mx.sessions("mx1." + dom)
                self.assertGreaterEqual(len(sess), 2, lab.mx.transcript("mx1." + dom))
                self.assertEqual(len(lab.mx.messages("mx1." + dom)), 2)
        # connection_cache_time 0: a session per message, QUIT at once
        r0 = self.relay(delivery={"connection_cache_time": 0})
        before = len(lab.mx.sessions("mx1.cache.test"))
        self.send_one_by_one(r0, "cache.test", 2, "nocache")
        sess = lab.mx.sessions("mx1.cache.test")[before:]
        self.assertEqual(len(sess), 2, lab.mx.transcript("mx1.cache.test"))

    def test_11_size_and_8bitmime(self):
        lab = self.lab
        r = self.relay()
        sender = "alice-t11@sender.test"
        big = make_msg("size-1@sender.test", sender, ["bob@size.test"], body="y" * 70 + "\r\n") + \
            b"".join(b"%04d " % i + b"z" * 60 + b"\r\n" for i in range(30))
        q_size = self.submit(r, sender, ["bob@size.test"], big)
        m = lab.mx.wait_messages(1, "mx1.size.test")[0]
        # SIZE= as advertised, with the exact size of what is then sent; no BODY= for 7-bit
        self.assertEqual(m["mail_options"], ["SIZE=%d" % len(m["data"])])
        self.wait_outcome(r, q_size, "bob@size.test", "sent")

        small = big.replace(b"bob@size.test", b"bob@small.test")
        q_small = self.submit(r, sender, ["bob@small.test"], small)
        d = self.wait_outcome(r, q_small, "bob@small.test", "bounced")
        self.assertEqual(d["dsn"], "5.3.4")
        self.assertFalse([c for s in lab.mx.sessions("mx1.small.test") for c in lab.mx.commands(s)
                          if c.upper().startswith("MAIL")], "MAIL sent although too big for SIZE 500")

        body8 = "Gr\u00fc\u00dfe aus K\u00f6ln.\r\n"
        q8 = []
        for dom in ("size.test", "no8bit.test"):
            rcpt = "bob@" + dom
            data = ("From: <%s>\r\nTo: <%s>\r\nSubject: 8bit\r\nMessage-ID: <8bit-%s@sender.test>\r\n"
                    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n\r\n%s" % (sender, rcpt, dom, body8)).encode()
            s = smtplib.SMTP(r.ip, r.port, local_hostname="client.test", timeout=30)
            try:
                s.ehlo()
                self.assertEqual(s.mail(sender, ["BODY=8BITMIME"])[0], 250)
                self.assertEqual(s.rcpt(rcpt)[0], 250)
                code, resp = s.data(data)
                self.assertEqual(code, 250, resp)
                q8.append(re.search(r"queued as (%s)" % QID, resp.decode()).group(1))
                s.quit()
            finally:
                s.close()
        got = [x for x in lab.mx.wait_messages(2, "mx1.size.test") if message_id(x["data"]) == "8bit-size.test@sender.test"]
        self.assertEqual(len(got), 1)
        self.assertIn("BODY=8BITMIME", got[0]["mail_options"])
        self.assertTrue(got[0]["data"].endswith(body8.encode()), got[0]["data"][-80:])
        d = self.wait_outcome(r, q8[1], "bob@no8bit.test", "bounced")
        self.assertEqual(d["dsn"], "5.6.3")
        self.assertEqual(lab.mx.messages("mx1.no8bit.test"), [])
        self.assertFalse([c for s in lab.mx.sessions("mx1.no8bit.test") for c in lab.mx.commands(s)
                          if c.upper().startswith("MAIL")])
        # two bounces (5.3.4 and 5.6.3); the second quotes 8-bit text and goes out as such
        dsns = wait_for(lambda: len(self.dsns(sender)) >= 2 and self.dsns(sender), 10, what="two bounces")
        self.assertEqual(len(dsns), 2)
        status = sorted(self.parse_dsn(x)[2][0]["Status"] for x in dsns)
        self.assertEqual(status, ["5.3.4", "5.6.3"])
        eight = [x for x in dsns if b"5.6.3" in x["data"]][0]
        self.assertIn("BODY=8BITMIME", eight["mail_options"])
        self.wait_queue_empty(r)


if __name__ == "__main__":
    unittest.main(verbosity=2)
