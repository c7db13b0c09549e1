#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""REQUIRETLS (RFC 8689) end to end, against real peers on loopback.

Relay A is the smarthost (its clients are trusted); relay B is a second
strictrelay acting as the MX of rtls-b.test (its own address, a lab
certificate for its MX name, `accept_domains`, a route onwards to an
internal host that is down so the message stays in B's queue). The other
next hops are aiosmtpd peers (tests/lib/mxpeer.py: with or without STARTTLS
and REQUIRETLS, wrong-name certificates, refused connections) and a real
Postfix 3.7 (no REQUIRETLS at all). swaks cannot put REQUIRETLS on MAIL FROM,
so REQUIRETLS messages go in with `strictrelay send --requiretls` (and once
with Python's smtplib); swaks sends the rest.

Covered: delivery to a REQUIRETLS MX validated by an enforce MTA-STS policy
(and B storing the flag it received); bounces 5.7.30 / 5.7.10 for next hops
without REQUIRETLS, without STARTTLS or with a wrong certificate, and for
domains without an enforce policy (testing, none, missing, MX outside the
policy), without connecting where nothing can work; the redacted bounce
(headers only, RET=FULL ignored, sent without REQUIRETLS, RFC 3464
structure); the next MX after a failing one; deferral when an MX failed
temporarily (D6) and the flag surviving kill -9; null senders (RTLS-22);
`TLS-Required: No`; the RCPT preflight (refusals, timing, slow DNS,
pipelined RCPTs, a client or the relay going away while it waits); a policy
that cannot be fetched (deferred, not bounced);
require_for rules (network, sender domain, recipient domain); the plaintext
refusal; and `strictrelay send` itself (transcript, exit codes).

One lab for the file; every test starts its own relays and stops them at the
end (exit status 0, no sanitizer report, no error-level log line).

Run: meson test -C build --suite integration requiretls --print-errorlogs
 or: STRICTRELAY_BIN=$PWD/build/strictrelay /usr/bin/python3 tests/integration/test_requiretls.py
"""

import email
import email.policy
import os
import re
import subprocess
import sys
import time
import unittest

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab import Lab, LabCase, wait_for  # noqa: E402
from relaycase import check_relay_stopped_clean, log_tail, parse_kv  # noqa: E402
from relaycase import SANITIZER_RE, parse_queue_list, parse_queue_show  # noqa: E402

BIN = os.environ.get("STRICTRELAY_BIN") or os.path.join(SRCDIR, "build", "strictrelay")
QID = r"[0-9A-HJKMNP-TV-Z]{12}"
SENDER_MX = "mx1.sender.test"
B_NAME = "mx.rtls-b.test"
FAST_RETRY = {"retry_schedule": "1s, 1s"}
BODY_MARK = "SECRET-BODY-LINE-4711"


def unfold(v):
    return re.sub(r"\s+", " ", str(v)).strip()


def verbs(cmds):
    return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in cmds]


class RequireTLSTest(LabCase):
    timing_label = "requiretls"
    pf = None

    # ------------------------------------------------------------------ the lab
    @classmethod
    def setUpClass(cls):
        cls.lab = lab = Lab("requiretls")
        try:
            cls._declare(lab)
            lab.start()
            # a real MTA without REQUIRETLS (Postfix 3.7), STARTTLS with a lab cert
            with lab.dns.change():
                cls.pf = lab.postfix_mx(["mx.pf-rtls.test"])
                lab.dns.mx("pf-rtls.test", "mx.pf-rtls.test")
                lab.mta_sts("pf-rtls.test", mode="enforce", mx=["mx.pf-rtls.test"])
        except BaseException:
            lab.close(failed=True)
            raise

    @classmethod
    def _declare(cls, lab):
        mx, dns = lab.mx, lab.dns
        # senders' domains: bounces arrive here (no REQUIRETLS offered)
        mx.add(SENDER_MX)
        dns.mx("sender.test", SENDER_MX)
        dns.mx("rulesender.test", SENDER_MX)
        dns.mx("other.test", SENDER_MX)
        # relay B is the MX of rtls-b.test (its own address; started per test)
        cls.b_ip = lab.ip(1, 200)
        dns.a(B_NAME, cls.b_ip)
        dns.mx("rtls-b.test", B_NAME)
        lab.mta_sts("rtls-b.test", mode="enforce", mx=[B_NAME])
        # a REQUIRETLS MX with an enforce policy
        mx.add("mx1.okrt.test", requiretls=True)
        dns.mx("okrt.test", "mx1.okrt.test")
        lab.mta_sts("okrt.test", mode="enforce", mx=["mx1.okrt.test"])
        # STARTTLS but no REQUIRETLS, enforce policy
        mx.add("mx1.noadv.test", requiretls=False)
        dns.mx("noadv.test", "mx1.noadv.test")
        lab.mta_sts("noadv.test", mode="enforce", mx=["mx1.noadv.test"])
        # no STARTTLS at all, enforce policy
        mx.add("mx1.nostarttls.test", starttls=False)
        dns.mx("nostarttls.test", "mx1.nostarttls.test")
        lab.mta_sts("nostarttls.test", mode="enforce", mx=["mx1.nostarttls.test"])
        # REQUIRETLS MX hosts whose domain has no enforce policy
        mx.add("mx1.nopolicy.test", requiretls=True)
        dns.mx("nopolicy.test", "mx1.nopolicy.test")
        mx.add("mx1.testing.test", requiretls=True)
        dns.mx("testing.test", "mx1.testing.test")
        lab.mta_sts("testing.test", mode="testing", mx=["mx1.testing.test"])
        mx.add("mx1.modenone.test", requiretls=True)
        dns.mx("modenone.test", "mx1.modenone.test")
        lab.mta_sts("modenone.test", mode="none", mx=["mx1.modenone.test"])
        mx.add("mx1.mismatch.test", requiretls=True)
        dns.mx("mismatch.test", "mx1.mismatch.test")
        lab.mta_sts("mismatch.test", mode="enforce", mx=["mx9.mismatch.test"])
        dns.null_mx("nullmx.test")
        # certificates: a wrong name only; and a valid second MX
        mx.add("mx1.badcert.test", requiretls=True, cert=lab.ca.issue("somebody-else.test"))
        dns.mx("badcert.test", "mx1.badcert.test")
        lab.mta_sts("badcert.test", mode="enforce", mx=["mx1.badcert.test"])
        mx.add("mx1.twomx.test", requiretls=True, cert=lab.ca.issue("somebody-else.test"))
        mx.add("mx2.twomx.test", requiretls=True)
        dns.mx("twomx.test", "mx1.twomx.test", 10)
        dns.mx("twomx.test", "mx2.twomx.test", 20)
        lab.mta_sts("twomx.test", mode="enforce", mx=["*.twomx.test"])
        # the first MX lacks REQUIRETLS, the second has it
        mx.add("mx1.mixed.test", requiretls=False)
        mx.add("mx2.mixed.test", requiretls=True)
        dns.mx("mixed.test", "mx1.mixed.test", 10)
        dns.mx("mixed.test", "mx2.mixed.test", 20)
        lab.mta_sts("mixed.test", mode="enforce", mx=["*.mixed.test"])
        # D6 with a 4xx greeting instead of a refused connection
        mx.add("mx1.d6b.test", reply={"greeting": "421 4.3.2 too busy, come back later"})
        mx.add("mx2.d6b.test", requiretls=False)
        dns.mx("d6b.test", "mx1.d6b.test", 10)
        dns.mx("d6b.test", "mx2.d6b.test", 20)
        lab.mta_sts("d6b.test", mode="enforce", mx=["*.d6b.test"])
        # D6: the first MX refuses connections, the second lacks REQUIRETLS
        mx.add("mx1.d6.test", refuse=True)
        mx.add("mx2.d6.test", requiretls=False)
        dns.mx("d6.test", "mx1.d6.test", 10)
        dns.mx("d6.test", "mx2.d6.test", 20)
        lab.mta_sts("d6.test", mode="enforce", mx=["mx1.d6.test", "mx2.d6.test"])
        # TLS-Required: No: enforce policy, MX with a wrong-name certificate
        mx.add("mx1.tlsno.test", cert=lab.ca.issue("somebody-else.test"))
        dns.mx("tlsno.test", "mx1.tlsno.test")
        lab.mta_sts("tlsno.test", mode="enforce", mx=["mx1.tlsno.test"])
        # a recipient refused at RCPT (a bounce for a TLS-Required: No message)
        mx.add("mx1.rcpt550.test", reply={"rcpt": {"*": "550 5.1.1 no such user"}})
        dns.mx("rcpt550.test", "mx1.rcpt550.test")
        # DNS that never answers (preflight timeout)
        dns.fault("slowdns.test", "timeout")
        # an MTA-STS TXT record whose policy cannot be fetched (404)
        mx.add("mx1.fetchfail.test", requiretls=True)
        dns.mx("fetchfail.test", "mx1.fetchfail.test")
        lab.mta_sts("fetchfail.test", policy={"status": 404, "body": "not here"})

    # ------------------------------------------------------------------ relays
    def relay(self, **config):
        r = self.lab.relay(**config)
        r.stopped_rc = None
        self.addCleanup(self.check_relay_end, r)
        return r

    def relay_b(self):
        """Relay B: the MX of rtls-b.test, routing it to a host that is down."""
        cert, key = self.lab.ca.issue(B_NAME)
        b = self.relay(server={"hostname": B_NAME, "listen": "%s:2525" % self.b_ip,
                               "tls_cert": cert, "tls_key": key, "accept_domains": "rtls-b.test",
                               "relay_networks": self.lab.ip(0, 250) + "/32"},
                       routes={"rtls-b.test": "[%s]:9 tls=verify" % self.lab.ip(9, 9)})
        b.ip = self.b_ip
        return b

    def check_relay_end(self, r):
        check_relay_stopped_clean(self, r)

    # ------------------------------------------------------------------ clients
    def send(self, r, sender, rcpts, *extra, requiretls=True, timeout=60):
        """`strictrelay send` to relay r: (exit status, transcript)."""
        argv = [BIN, "send", "--server", "%s:%d" % (r.ip, r.port), "--from", sender,
                "--to", ",".join(rcpts), "--ehlo", "client.test"]
        if requiretls:
            argv.append("--requiretls")
        argv += list(extra)
        return self.run_send(argv, timeout)

    def run_send(self, argv, timeout=60):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        out = p.stdout + p.stderr
        self.assertIsNone(SANITIZER_RE.search(out), "sanitizer report from strictrelay send:\n" + out)
        return p.returncode, out

    def send_ok(self, r, sender, rcpts, *extra, requiretls=True):
        rc, out = self.send(r, sender, rcpts, *extra, requiretls=requiretls)
        self.assertEqual(rc, 0, out)
        return self.qid(out)

    def qid(self, transcript):
        m = re.search(r"queued as (%s)" % QID, transcript)
        self.assertIsNotNone(m, transcript)
        return m.group(1)

    def swaks(self, r, *args):
        return self.lab.swaks(*args, server="%s:%d" % (r.ip, r.port))

    def body_file(self, name, text=None):
        path = os.path.join(self.lab.dir, name)
        with open(path, "w") as f:
            f.write(text if text is not None else
                    "first line\r\n%s\r\nlast line\r\n" % BODY_MARK)
        return path

    # ------------------------------------------------------------------ relay logs
    @staticmethod
    def outcomes(r, qid=None, rcpt=None):
        """Per-recipient delivery lines ("id=.. to=<..> ... status=.."), parsed."""
        out = []
        for line in r.log_text().splitlines():
            m = re.search(r" info delivery: (id=%s to=<.*)$" % QID, line)
            if not m:
                continue
            d = parse_kv(m.group(1))
            d["line"] = line
            if "status" not in d:
                continue
            if (qid is None or d["id"] == qid) and (rcpt is None or d["to"] == rcpt):
                out.append(d)
        return out

    def wait_outcome(self, r, qid, rcpt, status, timeout=15, n=1):
        """Waits for the n-th outcome line with this status; returns it parsed."""
        deadline = time.monotonic() + timeout
        while True:
            got = [d for d in self.outcomes(r, qid, rcpt) if d["status"] == status]
            if len(got) >= n:
                return got[n - 1]
            if time.monotonic() > deadline:
                self.fail("no status=%s (#%d) for id=%s to=<%s> within %d s; relay log:\n%s"
                          % (status, n, qid, rcpt, timeout, log_tail(r)))
            time.sleep(0.05)

    def final_outcome(self, r, qid, rcpt, timeout=15):
        """The first sent/bounced line (a deferral first fails the test)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.outcomes(r, qid, rcpt)
            if got:
                return got[0]
            if time.monotonic() > deadline:
                self.fail("no outcome for id=%s to=<%s> within %d s; relay log:\n%s"
                          % (qid, rcpt, timeout, log_tail(r)))
            time.sleep(0.05)

    def queue_show(self, r, qid):
        p = r.cli("queue", "show", qid)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return parse_queue_show(p.stdout)

    def queue_list(self, r):
        p = r.cli("queue", "list")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return parse_queue_list(p.stdout, self)

    # ------------------------------------------------------------------ MX side
    def sessions(self, name):
        return self.lab.mx.sessions(name)

    def assert_never_without_requiretls(self, sender):
        """RTLS-16: wherever a MAIL FROM for this sender went, it carried
        REQUIRETLS, and STARTTLS came before it in that session."""
        seen = 0
        for s in self.lab.mx.sessions():
            cmds = self.lab.mx.commands(s)
            for i, c in enumerate(cmds):
                if c.upper().startswith("MAIL FROM:<%s>" % sender.upper()):
                    seen += 1
                    self.assertIn(" REQUIRETLS", c.upper(), "%s: %s" % (s["endpoint"], cmds))
                    self.assertIn("STARTTLS", [x.upper() for x in cmds[:i]], cmds)
        return seen

    # ------------------------------------------------------------------ bounces
    def dsns(self, to):
        return [m for m in self.lab.mx.messages(SENDER_MX) if m["rcpt_tos"] == [to]]

    def wait_dsn(self, to, timeout=15):
        try:
            return wait_for(lambda: self.dsns(to), timeout, 0.05, "bounce to <%s>" % to)[0]
        except AssertionError:
            self.fail("no bounce to <%s> within %d s; relay logs:\n%s"
                      % (to, timeout, self.lab.relay_log_tails()))

    def dsn_mail_commands(self, dsn):
        """The MAIL commands of the session that brought the bounce (several
        bounces may share one session)."""
        sess = [s for s in self.lab.mx.sessions(SENDER_MX) if s["sid"] == dsn["session"]]
        self.assertEqual(len(sess), 1)
        cmds = [c for c in self.lab.mx.commands(sess[0]) if c.upper().startswith("MAIL FROM:")]
        self.assertGreaterEqual(len(cmds), 1)
        return cmds

    def parse_dsn(self, m):
        """RFC 3464 structure (DSN-10/11/12): returns (msg, per-message fields,
        [per-recipient fields], part 3)."""
        self.assertEqual(m["mail_from"], "", "a bounce goes out with MAIL FROM:<> (DSN-10)")
        msg = email.message_from_bytes(m["data"], policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        parts = list(msg.iter_parts())
        self.assertEqual(len(parts), 3, [p.get_content_type() for p in parts])
        self.assertEqual(parts[0].get_content_type(), "text/plain")
        self.assertEqual(parts[1].get_content_type(), "message/delivery-status")
        blocks = parts[1].get_payload()
        self.assertIsInstance(blocks, list)
        self.assertGreaterEqual(len(blocks), 2)
        per_msg, per_rcpt = blocks[0], blocks[1:]
        self.assertEqual(per_msg["Reporting-MTA"], "dns; relay.test")
        for b in per_rcpt:
            for field in ("Final-Recipient", "Action", "Status"):
                self.assertIsNotNone(b[field], "%s missing in %s" % (field, b.items()))
        return msg, per_msg, per_rcpt, parts[2]

    def check_redacted_dsn(self, dsn, rcpt, status, subject):
        """A bounce about a REQUIRETLS message: RFC 3464, one failed recipient
        with `status`, headers only (RTLS-21), sent without REQUIRETLS (D7)."""
        msg, per_msg, per_rcpt, third = self.parse_dsn(dsn)
        self.assertEqual(len(per_rcpt), 1, [b.items() for b in per_rcpt])
        b = per_rcpt[0]
        self.assertEqual(unfold(b["Final-Recipient"]), "rfc822; " + rcpt)
        self.assertEqual(b["Action"], "failed")
        self.assertEqual(b["Status"], status)
        self.assertEqual(third.get_content_type(), "text/rfc822-headers")
        headers = third.get_content()
        self.assertIn("Subject: %s" % subject, headers)
        self.assertNotIn(BODY_MARK.encode(), dsn["data"], "the body must not be returned")
        self.assertNotIn(b"first line", dsn["data"])
        self.assertNotIn("REQUIRETLS", [o.upper() for o in dsn["mail_options"]])
        for cmd in self.dsn_mail_commands(dsn):
            self.assertTrue(cmd == "MAIL FROM:<>" or cmd.startswith("MAIL FROM:<> "), cmd)
            self.assertNotIn("REQUIRETLS", cmd.upper())
        self.assertIsNone(msg["TLS-Required"], "a REQUIRETLS bounce has no TLS-Required: No")
        return msg, b

    # ==========================================================================
    # 1. A -> B: REQUIRETLS delivered to a REQUIRETLS MX validated by MTA-STS
    # ==========================================================================
    def test_01_relay_to_relay(self):
        lab = self.lab
        b = self.relay_b()
        a = self.relay()
        s1 = "alice-t1@sender.test"
        q1 = self.send_ok(a, s1, ["bob@rtls-b.test"], "--header", "Subject: t1 send")
        # the same with Python's smtplib and mail_options=['REQUIRETLS']
        s2 = "carol-t1@sender.test"
        s = lab.smtp(a.ip, a.port, server_hostname="relay.test")
        try:
            s.ehlo()
            self.assertFalse(s.has_extn("requiretls"), "REQUIRETLS offered before STARTTLS")
            s.starttls(context=lab.ca.context())
            s.ehlo()
            self.assertTrue(s.has_extn("requiretls"), s.esmtp_features)
            self.assertEqual(s.mail(s2, ["REQUIRETLS"])[0], 250)
            code, resp = s.rcpt("dave@rtls-b.test")
            self.assertEqual((code, resp[:6]), (250, b"2.1.5 "), resp)
            code, resp = s.data(b"From: <carol-t1@sender.test>\r\nTo: <dave@rtls-b.test>\r\n"
                                b"Subject: t1 smtplib\r\n\r\nhello\r\n")
            self.assertEqual(code, 250, resp)
            q2 = self.qid(resp.decode())
            s.quit()
        finally:
            s.close()
        for qid, sender in ((q1, s1), (q2, s2)):
            self.assertRegex(a.log_text(), r"id=%s client=\S+ from=<%s> nrcpt=1 size=\d+ tls=yes "
                             r"requiretls=yes source=param flags=REQUIRETLS status=queued"
                             % (qid, re.escape(sender)))
        d1 = self.wait_outcome(a, q1, "bob@rtls-b.test", "sent")
        d2 = self.wait_outcome(a, q2, "dave@rtls-b.test", "sent")
        for d in (d1, d2):
            self.assertRegex(d["line"], r" requiretls=yes source=param attempts=1 delay=\S+ status=sent ")
            self.assertEqual((d["mx"], d["ip"], d["verified"], d["verify_name"], d["sts"], d["dsn"]),
                             (B_NAME, self.b_ip, "yes", B_NAME, "enforce", "2.0.0"), d["line"])
            self.assertRegex(d["tls"], r"^TLSv1\.[23]/")
        # B stored both with the REQUIRETLS flag it got from A's MAIL FROM
        b_ids = {}
        for d, sender in ((d1, s1), (d2, s2)):
            m = re.search(r"queued as (%s)" % QID, d["reply"])
            self.assertIsNotNone(m, d["reply"])
            b_ids[sender] = m.group(1)
        listed = {m["id"]: m for m in self.queue_list(b)}
        for sender, bid in b_ids.items():
            self.assertIn(bid, listed)
            self.assertEqual(listed[bid]["sender"], sender)
            show = self.queue_show(b, bid)
            self.assertEqual(show["sender"], sender)
            self.assertEqual(show["flags"], "REQUIRETLS", show["text"])
            self.assertRegex(b.log_text(), r"id=%s client=\S+ from=<%s> nrcpt=1 size=\d+ tls=yes "
                             r"requiretls=yes source=param flags=REQUIRETLS status=queued"
                             % (bid, re.escape(sender)))
            self.assertTrue(any(h.startswith("Received: from relay.test ") and " with ESMTPS " in h
                                for h in show["headers"]), show["headers"])
        # B keeps it: its route onwards is down (deferred, never bounced)
        bd = self.wait_outcome(b, b_ids[s1], "bob@rtls-b.test", "deferred")
        self.assertEqual(bd["requiretls"], "yes")
        self.assertRegex(bd["dsn"], r"^4\.")
        self.assertEqual(self.dsns(s1) + self.dsns(s2), [])

    # ==========================================================================
    # 2. Next hops without REQUIRETLS: Postfix and aiosmtpd; the redacted bounce
    # ==========================================================================
    def test_02_next_hop_without_requiretls_bounces(self):
        lab = self.lab
        a = self.relay()
        body = self.body_file("t2.txt")
        sp = "alice-t2pf@sender.test"
        qp = self.send_ok(a, sp, ["bob@pf-rtls.test"], "--body", body, "--header", "Subject: t2 postfix")
        sa = "alice-t2a@sender.test"
        qa = self.send_ok(a, sa, ["bob@noadv.test"], "--body", body, "--header", "Subject: t2 aiosmtpd",
                          "--mail-param", "RET=FULL")
        for qid, rcpt, mx in ((qp, "bob@pf-rtls.test", "mx.pf-rtls.test"),
                              (qa, "bob@noadv.test", "mx1.noadv.test")):
            d = self.final_outcome(a, qid, rcpt)
            self.assertEqual(d["dest"], rcpt.split("@")[1], d["line"])
            self.assertRegex(a.log_text(), r"dest=%s mx=%s ip=\S+ not used: REQUIRETLS: the next hop "
                                           r"does not advertise REQUIRETLS \(5\.7\.30\)"
                             % (re.escape(d["dest"]), re.escape(mx)))
            self.assertEqual((d["status"], d["dsn"]), ("bounced", "5.7.30"), d["line"])
            self.assertEqual(d["requiretls"], "yes", d["line"])
            self.assertIn("does not advertise REQUIRETLS", d["line"])
        # Postfix: STARTTLS and EHLO, never a MAIL command; nothing delivered
        self.assertEqual(self.pf.messages(), [])
        disc = wait_for(lambda: re.findall(r"disconnect from \S+ (.*)", self.pf.log_text()), 10,
                        what="Postfix disconnect log line")
        for line in disc:
            self.assertIn("starttls=1", line)
            self.assertIn("quit=1", line)
            self.assertNotIn("mail=", line)
        # aiosmtpd without REQUIRETLS: TLS, EHLO again, QUIT (RTLS-12), no MAIL
        sess = self.sessions("mx1.noadv.test")
        self.assertGreaterEqual(len(sess), 1)
        for s in sess:
            cmds = self.lab.mx.commands(s)
            self.assertEqual(verbs(cmds), ["EHLO", "STARTTLS", "EHLO", "QUIT"], cmds)
        self.assertEqual(lab.mx.messages("mx1.noadv.test"), [])
        # the bounces: redacted, RET=FULL ignored, sent without REQUIRETLS (D7)
        dp = self.wait_dsn(sp)
        msg, blk = self.check_redacted_dsn(dp, "bob@pf-rtls.test", "5.7.30", "t2 postfix")
        self.assertEqual(unfold(blk["Diagnostic-Code"]),
                         "x-strictrelay; REQUIRETLS: the next hop does not advertise REQUIRETLS")
        _, per_msg, _, _ = self.parse_dsn(dp)
        self.assertEqual(per_msg["X-Strictrelay-Queue-ID"], qp)
        self.assertIsNotNone(per_msg["Arrival-Date"])
        self.assertEqual(msg["Subject"], "Undelivered Mail Returned to Sender")
        text = list(msg.iter_parts())[0].get_content()
        self.assertIn("REQUIRETLS", text)
        da = self.wait_dsn(sa)
        msg, blk = self.check_redacted_dsn(da, "bob@noadv.test", "5.7.30", "t2 aiosmtpd")
        self.assertEqual(len(self.dsns(sp)), 1)
        self.assertEqual(len(self.dsns(sa)), 1)

    # ==========================================================================
    # 3. Policies that cannot validate the MX (preflight off): bounce, no connection
    # ==========================================================================
    def test_03a_no_enforce_policy_bounces_without_connecting(self):
        a = self.relay(requiretls={"preflight": False})
        cases = [("nopolicy.test", "has no MTA-STS policy"),
                 ("testing.test", "in testing mode"),
                 ("modenone.test", "in mode none")]
        ids = {}
        for dom, _ in cases:
            ids[dom] = self.send_ok(a, "alice-t3a-%s@sender.test" % dom.split(".")[0], ["bob@" + dom],
                                    "--header", "Subject: t3a " + dom)
        # an enforce policy that matches none of the MX hosts
        ids["mismatch.test"] = self.send_ok(a, "alice-t3a-mismatch@sender.test", ["bob@mismatch.test"],
                                            "--header", "Subject: t3a mismatch.test")
        for dom, why in cases:
            d = self.final_outcome(a, ids[dom], "bob@" + dom)
            self.assertEqual((d["status"], d["dsn"]), ("bounced", "5.7.30"), d["line"])
            self.assertIn(why, d["line"])
            self.assertEqual(d["requiretls"], "yes")
        d = self.final_outcome(a, ids["mismatch.test"], "bob@mismatch.test")
        self.assertEqual((d["status"], d["dsn"]), ("bounced", "5.7.30"), d["line"])
        self.assertIn("does not match the MTA-STS policy", d["line"])
        # the MX hosts were never contacted
        for dom in ("nopolicy.test", "testing.test", "modenone.test", "mismatch.test"):
            self.assertEqual(self.sessions("mx1." + dom), [], dom)
        for dom, _ in cases + [("mismatch.test", None)]:
            sender = "alice-t3a-%s@sender.test" % dom.split(".")[0]
            self.check_redacted_dsn(self.wait_dsn(sender), "bob@" + dom, "5.7.30", "t3a " + dom)

    def test_03b_null_sender_not_enforced(self):
        """RTLS-22: MAIL FROM:<> REQUIRETLS is delivered to a host without
        REQUIRETLS (and skips the preflight: no policy needed)."""
        a = self.relay()
        q1 = self.send_ok(a, "", ["null1@noadv.test"], "--header", "Subject: t3b null 1")
        q2 = self.send_ok(a, "", ["null2@nopolicy.test"], "--header", "Subject: t3b null 2")
        self.assertRegex(a.log_text(), r"id=%s client=\S+ from=<(?:\"\")?> .* requiretls=no flags=REQUIRETLS "
                                       r"status=queued" % q1)
        for qid, rcpt, mx in ((q1, "null1@noadv.test", "mx1.noadv.test"),
                              (q2, "null2@nopolicy.test", "mx1.nopolicy.test")):
            d = self.final_outcome(a, qid, rcpt)
            self.assertEqual((d["status"], d["requiretls"]), ("sent", "no"), d["line"])
            got = [m for m in self.lab.mx.messages(mx) if m["rcpt_tos"] == [rcpt]]
            self.assertEqual(len(got), 1)
            self.assertEqual(got[0]["mail_from"], "")
            self.assertNotIn("REQUIRETLS", got[0]["mail_options"])

    def test_03c_certificates_and_mx_fallback(self):
        a = self.relay()
        sb = "alice-t3c-bad@sender.test"
        qb = self.send_ok(a, sb, ["bob@badcert.test"], "--header", "Subject: t3c badcert")
        sn = "alice-t3c-nostls@sender.test"
        qn = self.send_ok(a, sn, ["bob@nostarttls.test"], "--header", "Subject: t3c nostarttls")
        st = "alice-t3c-two@sender.test"
        qt = self.send_ok(a, st, ["bob@twomx.test"], "--header", "Subject: t3c twomx")
        sm = "alice-t3c-mixed@sender.test"
        qm = self.send_ok(a, sm, ["bob@mixed.test"], "--header", "Subject: t3c mixed")
        # wrong-name certificate, the only MX: 5.7.10, never delivered there
        d = self.final_outcome(a, qb, "bob@badcert.test")
        self.assertEqual((d["status"], d["dsn"]), ("bounced", "5.7.10"), d["line"])
        self.assertEqual(self.lab.mx.messages("mx1.badcert.test"), [])
        for s in self.sessions("mx1.badcert.test"):
            self.assertEqual(verbs(self.lab.mx.commands(s))[:2], ["EHLO", "STARTTLS"])
            self.assertNotIn("MAIL", verbs(self.lab.mx.commands(s)))
        self.check_redacted_dsn(self.wait_dsn(sb), "bob@badcert.test", "5.7.10", "t3c badcert")
        # no STARTTLS at all: 5.7.10 (no TLS session could be set up)
        d = self.final_outcome(a, qn, "bob@nostarttls.test")
        self.assertEqual((d["status"], d["dsn"]), ("bounced", "5.7.10"), d["line"])
        self.assertEqual(self.lab.mx.messages("mx1.nostarttls.test"), [])
        for s in self.sessions("mx1.nostarttls.test"):
            self.assertEqual(verbs(self.lab.mx.commands(s)), ["EHLO", "QUIT"])
        self.check_redacted_dsn(self.wait_dsn(sn), "bob@nostarttls.test", "5.7.10", "t3c nostarttls")
        # a wrong-name first MX, a valid second one: delivered via the second
        d = self.final_outcome(a, qt, "bob@twomx.test")
        self.assertEqual((d["status"], d["mx"], d["verified"]), ("sent", "mx2.twomx.test", "yes"), d["line"])
        got = self.lab.mx.wait_messages(1, "mx2.twomx.test")
        self.assertEqual(len(got), 1)
        self.assertIn("REQUIRETLS", got[0]["mail_options"])
        self.assertEqual(got[0]["tls"]["sni"], "mx2.twomx.test")
        self.assertEqual(self.lab.mx.messages("mx1.twomx.test"), [])
        first = self.sessions("mx1.twomx.test")
        self.assertEqual(len(first), 1)
        self.assertEqual(verbs(self.lab.mx.commands(first[0])), ["EHLO", "STARTTLS", "QUIT"])
        self.assertRegex(a.log_text(), r"dest=twomx\.test mx=mx1\.twomx\.test ip=\S+ not used: "
                                       r"REQUIRETLS: certificate of the MX not valid for mx1\.twomx\.test")
        self.assertEqual(self.dsns(st), [])
        # the first MX lacks REQUIRETLS: QUIT there, delivered via the second
        d = self.final_outcome(a, qm, "bob@mixed.test")
        self.assertEqual((d["status"], d["mx"], d["verified"]), ("sent", "mx2.mixed.test", "yes"), d["line"])
        self.assertEqual(len(self.lab.mx.wait_messages(1, "mx2.mixed.test")), 1)
        self.assertEqual(self.lab.mx.messages("mx1.mixed.test"), [])
        first = self.sessions("mx1.mixed.test")
        self.assertEqual(len(first), 1)
        self.assertEqual(verbs(self.lab.mx.commands(first[0])), ["EHLO", "STARTTLS", "EHLO", "QUIT"])
        self.assertEqual(self.dsns(sm), [])
        # RTLS-16: every MAIL FROM that went out carried REQUIRETLS, inside TLS
        self.assertEqual([self.assert_never_without_requiretls(x) for x in (sb, sn, st, sm)], [0, 0, 1, 1])

    def test_03d_temporary_failure_defers_and_flag_survives_kill9(self):
        """D6: one MX refuses connections, the other lacks REQUIRETLS: deferred,
        not bounced. RTLS-03: after kill -9 the flag is still there and still
        enforced (bounce 5.7.30 once the first MX answers, also without it)."""
        lab = self.lab
        a = self.relay(queue=FAST_RETRY)
        sender = "alice-t3d@sender.test"
        qid = self.send_ok(a, sender, ["bob@d6.test"], "--header", "Subject: t3d")
        sender_b = "alice-t3d-greet@sender.test"
        qid_b = self.send_ok(a, sender_b, ["bob@d6b.test"], "--header", "Subject: t3d greeting")
        # a 421 greeting is temporary too
        d = self.wait_outcome(a, qid_b, "bob@d6b.test", "deferred", n=2)
        self.assertRegex(d["dsn"], r"^4\.", d["line"])
        self.assertNotIn("bounced", [x["status"] for x in self.outcomes(a, qid_b)])
        self.assertEqual(lab.mx.messages("mx2.d6b.test"), [])
        self.assertEqual(self.dsns(sender_b), [])
        d1 = self.wait_outcome(a, qid, "bob@d6.test", "deferred", n=1)
        self.assertEqual(d1["requiretls"], "yes")
        self.assertRegex(d1["dsn"], r"^4\.")
        self.wait_outcome(a, qid, "bob@d6.test", "deferred", n=2)
        self.assertEqual([x["status"] for x in self.outcomes(a, qid)].count("bounced"), 0)
        self.assertEqual(self.dsns(sender), [])
        self.assertEqual(lab.mx.messages("mx2.d6.test"), [])
        self.assertGreaterEqual(len(self.sessions("mx2.d6.test")), 2)
        # kill -9; the flag is in the queue
        a.kill9()
        a.stopped_rc = None
        show = self.queue_show(a, qid)
        self.assertEqual(show["flags"], "REQUIRETLS", show["text"])
        # the first MX now answers, without REQUIRETLS: nothing temporary is left
        lab.mx.update("mx1.d6.test", refuse=False)
        a.start()
        d = self.wait_outcome(a, qid, "bob@d6.test", "bounced")
        self.assertEqual(d["dsn"], "5.7.30", d["line"])
        self.assertEqual(lab.mx.messages("mx1.d6.test") + lab.mx.messages("mx2.d6.test"), [])
        self.assertGreaterEqual(len(self.sessions("mx1.d6.test")), 1)
        self.check_redacted_dsn(self.wait_dsn(sender), "bob@d6.test", "5.7.30", "t3d")
        self.assertEqual(self.assert_never_without_requiretls(sender), 0)

    # ==========================================================================
    # 4. TLS-Required: No
    # ==========================================================================
    def test_04_tls_required_no(self):
        lab = self.lab
        a = self.relay()
        # with the header: delivered over (unverified) STARTTLS
        rc, out = self.swaks(a, "--to", "h1@tlsno.test", "--from", "alice-t4h@sender.test",
                             "--header", "TLS-Required: No", "--header", "Subject: t4 header")
        self.assertEqual(rc, 0, out)
        qh = self.qid(out)
        # RTLS-05: the field name and "No" in any case
        rc, out = self.swaks(a, "--to", "h2@tlsno.test", "--from", "alice-t4l@sender.test",
                             "--header", "tls-required:  nO", "--header", "Subject: t4 lower")
        self.assertEqual(rc, 0, out)
        ql = self.qid(out)
        # without it: the enforce policy refuses the wrong-name certificate
        rc, out = self.swaks(a, "--to", "h3@tlsno.test", "--from", "alice-t4n@sender.test",
                             "--header", "Subject: t4 none")
        self.assertEqual(rc, 0, out)
        qn = self.qid(out)
        # REQUIRETLS and the header: REQUIRETLS wins (RTLS-04/32)
        sr = "alice-t4r@sender.test"
        qr = self.send_ok(a, sr, ["h4@tlsno.test"], "--header", "TLS-Required: No",
                          "--header", "Subject: t4 both")
        self.assertRegex(a.log_text(), r"id=%s .* requiretls=yes source=param flags=REQUIRETLS "
                                       r"status=queued" % qr)
        # RTLS-23: the header is copied into a bounce of a message without REQUIRETLS
        rc, out = self.swaks(a, "--to", "h5@rcpt550.test", "--from", "alice-t4b@sender.test",
                             "--header", "TLS-Required: No", "--header", "Subject: t4 bounce")
        self.assertEqual(rc, 0, out)
        # RTLS-30: no STARTTLS at all: delivered in plaintext despite the enforce policy
        rc, out = self.swaks(a, "--to", "h6@nostarttls.test", "--from", "alice-t4p@sender.test",
                             "--header", "TLS-Required: No", "--header", "Subject: t4 plain")
        self.assertEqual(rc, 0, out)
        qp = self.qid(out)
        d = self.final_outcome(a, qp, "h6@nostarttls.test")
        self.assertEqual((d["status"], d["tls"], d["sts"]), ("sent", "none", "none"), d["line"])
        m = [x for x in lab.mx.messages("mx1.nostarttls.test") if x["rcpt_tos"] == ["h6@nostarttls.test"]]
        self.assertEqual(len(m), 1)
        self.assertIsNone(m[0]["tls"])
        for qid, rcpt in ((qh, "h1@tlsno.test"), (ql, "h2@tlsno.test")):
            d = self.final_outcome(a, qid, rcpt)
            self.assertEqual((d["status"], d["verified"], d["sts"]), ("sent", "no", "none"), d["line"])
            m = [x for x in lab.mx.messages("mx1.tlsno.test") if x["rcpt_tos"] == [rcpt]]
            self.assertEqual(len(m), 1)
            self.assertIsNotNone(m[0]["tls"], "STARTTLS is still used")
            sess = [s for s in self.sessions("mx1.tlsno.test") if s["sid"] == m[0]["session"]][0]
            self.assertIn("STARTTLS", lab.mx.commands(sess))
            self.assertNotIn("REQUIRETLS", m[0]["mail_options"])
        self.assertRegex(self.msg_for("mx1.tlsno.test", "h1@tlsno.test"), r"(?m)^TLS-Required: No\r$")
        self.assertRegex(self.msg_for("mx1.tlsno.test", "h2@tlsno.test"), r"(?m)^tls-required:  nO\r$")
        d = self.final_outcome(a, qn, "h3@tlsno.test")
        self.assertEqual((d["status"], d["dsn"]), ("deferred", "4.7.5"), d["line"])
        d = self.final_outcome(a, qr, "h4@tlsno.test")
        self.assertEqual((d["status"], d["dsn"]), ("bounced", "5.7.10"), d["line"])
        got = [x["rcpt_tos"] for x in lab.mx.messages("mx1.tlsno.test")]
        self.assertNotIn(["h3@tlsno.test"], got)
        self.assertNotIn(["h4@tlsno.test"], got)
        dsn = self.wait_dsn(sr)
        self.check_redacted_dsn(dsn, "h4@tlsno.test", "5.7.10", "t4 both")
        dsn = self.wait_dsn("alice-t4b@sender.test")
        msg, _, per_rcpt, third = self.parse_dsn(dsn)
        self.assertEqual(msg["TLS-Required"], "No")
        self.assertEqual(per_rcpt[0]["Status"], "5.1.1")
        self.assertEqual(third.get_content_type(), "message/rfc822")

    def msg_for(self, mx, rcpt):
        m = [x for x in self.lab.mx.messages(mx) if x["rcpt_tos"] == [rcpt]]
        self.assertEqual(len(m), 1, rcpt)
        return m[0]["data"].decode("utf-8", "replace")

    # ==========================================================================
    # 5. The RCPT preflight
    # ==========================================================================
    def rcpt_timed(self, s, rcpt):
        t = time.monotonic()
        code, resp = s.rcpt(rcpt)
        return code, resp.decode("utf-8", "replace"), time.monotonic() - t

    def tls_raw(self, r):
        """A RawClient inside TLS after EHLO, STARTTLS, EHLO."""
        c = self.lab.raw(r.ip, r.port)
        self.addCleanup(c.close)
        self.assertEqual(c.read_reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        c.starttls("relay.test", self.lab.ca.context())
        code, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertIn("REQUIRETLS", lines)
        return c

    def test_05_preflight(self):
        lab = self.lab
        a = self.relay(requiretls={"preflight_timeout": "2s"}, delivery={"dns_timeout": "2s"},
                       queue=FAST_RETRY)
        sender = "alice-t5@sender.test"
        # the client goes away while its RCPT waits for the preflight
        c = self.tls_raw(a)
        self.assertEqual(c.cmd("MAIL FROM:<gone-t5@sender.test> REQUIRETLS")[0], 250)
        c.send("RCPT TO:<gone@slowdns.test>\r\n")
        c.close()
        # pipelined RCPTs wait their turn behind a slow one (RFC 2920: replies in order)
        c = self.tls_raw(a)
        t0 = time.monotonic()
        c.send("MAIL FROM:<alice-t5p@sender.test> REQUIRETLS\r\nRCPT TO:<p1@slowdns.test>\r\n"
               "RCPT TO:<p2@nopolicy.test>\r\nRCPT TO:<p3@okrt.test>\r\nDATA\r\n")
        got = []
        for _ in range(5):
            code, lines = c.read_reply(timeout=10)
            got.append((code, lines[0][:6], round(time.monotonic() - t0, 1)))
        self.assertEqual([g[:2] for g in got], [(250, "2.1.0 "), (250, "2.1.5 "), (550, "5.7.30"),
                                                (250, "2.1.5 "), (354, "End da")], got)
        self.assertLess(got[0][2], 1.0, got)
        self.assertGreaterEqual(got[1][2], 1.8, got)
        c.send("Subject: t5 pipelined\r\n\r\nhello\r\n.\r\n")
        code, lines = c.read_reply()
        self.assertEqual(code, 250, lines)
        qp = re.search(r"queued as (%s)" % QID, lines[0]).group(1)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(self.final_outcome(a, qp, "p3@okrt.test")["status"], "sent")
        self.assertEqual(self.outcomes(a, qp, "p2@nopolicy.test"), [])
        s = lab.smtp(a.ip, a.port, server_hostname="relay.test")
        try:
            s.ehlo()
            s.starttls(context=lab.ca.context())
            s.ehlo()
            self.assertEqual(s.mail(sender, ["REQUIRETLS"])[0], 250)
            refusals = [
                ("x1@nopolicy.test", "the domain has no MTA-STS policy"),
                ("x2@nopolicy.test", "the domain has no MTA-STS policy"),   # asked again
                ("x@testing.test", r"policy is in testing mode \(REQUIRETLS needs enforce\)"),
                ("x@modenone.test", r"policy is in none mode \(REQUIRETLS needs enforce\)"),
                ("x@mismatch.test", "no MX host of the domain matches its MTA-STS policy"),
                # whichever answer comes first gives the reason
                ("x@nullmx.test", "(the domain accepts no mail \\(null MX\\)|the domain has no MTA-STS policy)"),
                ("x@nosuchdomain.test", "(the domain has no mail servers|the domain has no MTA-STS policy)"),
                ("x@[%s]" % lab.ip(1, 1), "an address literal has no MX hosts to validate"),
            ]
            for rcpt, why in refusals:
                code, resp, took = self.rcpt_timed(s, rcpt)
                self.assertEqual(code, 550, (rcpt, resp))
                self.assertTrue(resp.startswith("5.7.30 <%s>: REQUIRETLS cannot be satisfied: " % rcpt),
                                resp)
                self.assertRegex(resp, why)
                self.assertLess(took, 1.0, "%s took %.2f s" % (rcpt, took))
                self.assertRegex(a.log_text(), r"requiretls preflight refused to=<%s>: " % re.escape(rcpt))
            # an enforce domain with a matching MX: accepted at once
            code, resp, took = self.rcpt_timed(s, "ok@okrt.test")
            self.assertEqual(code, 250, resp)
            self.assertLess(took, 1.0)
            # DNS that never answers: accepted when preflight_timeout (2 s) runs out
            code, resp, took = self.rcpt_timed(s, "slow@slowdns.test")
            self.assertEqual(code, 250, resp)
            self.assertGreaterEqual(took, 1.8)
            self.assertLess(took, 3.5)
            code, resp = s.data(b"From: <alice-t5@sender.test>\r\nSubject: t5\r\n\r\nhello\r\n")
            self.assertEqual(code, 250, resp)
            qid = self.qid(resp.decode())
            s.quit()
        finally:
            s.close()
        d = self.final_outcome(a, qid, "ok@okrt.test")
        self.assertEqual(d["status"], "sent", d["line"])
        m = self.lab.mx.wait_messages(1, "mx1.okrt.test")
        self.assertIn("REQUIRETLS", [x for x in m if x["mail_from"] == sender][0]["mail_options"])
        # while DNS stays broken: deferred, again and again, never bounced
        d = self.wait_outcome(a, qid, "slow@slowdns.test", "deferred", n=1)
        self.assertEqual(d["dsn"], "4.7.10", d["line"])
        self.wait_outcome(a, qid, "slow@slowdns.test", "deferred", n=2)
        self.assertEqual([x for x in self.outcomes(a, qid, "slow@slowdns.test")
                          if x["status"] == "bounced"], [])
        self.assertEqual(self.dsns(sender), [])
        # MTA-STS switched off: nothing can validate an MX
        c_off = self.relay(mta_sts={"enabled": False})
        s = lab.smtp(c_off.ip, c_off.port, server_hostname="relay.test")
        try:
            s.ehlo()
            s.starttls(context=lab.ca.context())
            s.ehlo()
            self.assertEqual(s.mail(sender, ["REQUIRETLS"])[0], 250)
            code, resp, took = self.rcpt_timed(s, "x@okrt.test")
            self.assertEqual(code, 550, resp)
            self.assertEqual(resp, "5.7.30 <x@okrt.test>: REQUIRETLS cannot be satisfied: MTA-STS is off "
                                   "in this relay, so no MX host can be validated")
            s.quit()
        finally:
            s.close()
        # SIGTERM while a RCPT waits for the preflight: a clean stop
        c_stop = self.relay(requiretls={"preflight_timeout": "5s"})
        c = self.tls_raw(c_stop)
        self.assertEqual(c.cmd("MAIL FROM:<stop-t5@sender.test> REQUIRETLS")[0], 250)
        c.send("RCPT TO:<stop@slowdns.test>\r\n")
        t0 = time.monotonic()
        c_stop.stopped_rc = c_stop.stop()
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertEqual(c_stop.stopped_rc, 0, log_tail(c_stop))
        # the waiting RCPT is answered with 421, not accepted
        self.assertEqual(c.read_reply(timeout=2), (421, ["4.3.2 relay.test Service shutting down; "
                                                          "closing connection"]))
        self.assertEqual(self.queue_list(c_stop), [])
        # with preflight = no the same RCPT is accepted at once (the message bounces later)
        b = self.relay(requiretls={"preflight": False})
        s = lab.smtp(b.ip, b.port, server_hostname="relay.test")
        try:
            s.ehlo()
            s.starttls(context=lab.ca.context())
            s.ehlo()
            self.assertEqual(s.mail(sender, ["REQUIRETLS"])[0], 250)
            code, resp, took = self.rcpt_timed(s, "x@nopolicy.test")
            self.assertEqual(code, 250, resp)
            self.assertLess(took, 1.0)
            s.rset()
            s.quit()
        finally:
            s.close()

    def test_05b_policy_fetch_failure_defers(self):
        """A _mta-sts TXT record whose policy cannot be fetched (HTTP 404) is a
        temporary failure: deferred 4.7.10 at every attempt, never bounced,
        also while the failed id is in its fetch back-off (STS-17)."""
        a = self.relay(requiretls={"preflight": False}, queue=FAST_RETRY)
        sender = "alice-t5b@sender.test"
        qid = self.send_ok(a, sender, ["ff1@fetchfail.test"], "--header", "Subject: t5b")
        d = self.final_outcome(a, qid, "ff1@fetchfail.test")
        self.assertEqual((d["status"], d["dsn"]), ("deferred", "4.7.10"), d["line"])
        self.assertIn("cannot be had right now", d["line"])
        a.wait_log(r"domain=fetchfail\.test sts-policy-fetch-error: policy host mta-sts\.fetchfail\.test "
                   r"answered HTTP 404")
        # the next attempt (1 s later, within the back-off): still temporary
        second = wait_for(lambda: self.outcomes(a, qid, "ff1@fetchfail.test")[1:], 10,
                          what="second attempt")[0]
        self.assertEqual((second["status"], second["dsn"]), ("deferred", "4.7.10"), second["line"])
        self.assertEqual(self.sessions("mx1.fetchfail.test"), [])
        self.assertEqual(self.dsns(sender), [])

    def test_05c_preflight_fetch_failure_accepts_then_defers(self):
        """The preflight takes a failing policy fetch as "unknown" (250); the
        delivery that follows defers (4.7.10) rather than bounce."""
        lab = self.lab
        a = self.relay()
        sender = "alice-t5c@sender.test"
        s = lab.smtp(a.ip, a.port, server_hostname="relay.test")
        try:
            s.ehlo()
            s.starttls(context=lab.ca.context())
            s.ehlo()
            self.assertEqual(s.mail(sender, ["REQUIRETLS"])[0], 250)
            code, resp, took = self.rcpt_timed(s, "ff2@fetchfail.test")
            self.assertEqual(code, 250, resp)
            self.assertLess(took, 1.0)
            code, resp = s.data(b"From: <alice-t5c@sender.test>\r\nSubject: t5c\r\n\r\nhello\r\n")
            self.assertEqual(code, 250, resp)
            qid = self.qid(resp.decode())
            s.quit()
        finally:
            s.close()
        d = self.final_outcome(a, qid, "ff2@fetchfail.test")
        self.assertEqual((d["status"], d["dsn"]), ("deferred", "4.7.10"), d["line"])
        self.assertEqual(self.sessions("mx1.fetchfail.test"), [])

    # ==========================================================================
    # 6. require_for rules: network, sender domain, recipient domain
    # ==========================================================================
    def test_06_rule_tagging(self):
        lab = self.lab
        b = self.relay_b()
        rules = [lab.ip(0, 0) + "/24", "from:@rulesender.test", "to:rtls-b.test"]
        a = self.relay(requiretls={"require_for": rules})
        netclient = lab.ip(0, 60)
        # the network rule: plain swaks from 127.N.0.60, no REQUIRETLS possible
        rc, out = self.swaks(a, "--local-interface", netclient, "--from", "net1@other.test",
                             "--to", "x@rtls-b.test", "--header", "Subject: t6 net b")
        self.assertEqual(rc, 0, out)
        q_net_b = self.qid(out)
        rc, out = self.swaks(a, "--local-interface", netclient, "--from", "net2@other.test",
                             "--to", "x@noadv.test", "--header", "Subject: t6 net noadv")
        self.assertEqual(rc, 0, out)
        q_net_n = self.qid(out)
        # the sender rule (from 127.0.0.1, outside the network rule)
        rc, out = self.swaks(a, "--from", "from1@rulesender.test", "--to", "y@noadv.test",
                             "--header", "Subject: t6 from noadv")
        self.assertEqual(rc, 0, out)
        q_from = self.qid(out)
        # ... which also gets the preflight: 550 5.7.30 at RCPT
        rc, out = self.swaks(a, "--from", "from2@rulesender.test", "--to", "y@nopolicy.test")
        self.assertNotEqual(rc, 0, out)
        self.assertRegex(out, r"<\*\* +550 5\.7\.30 <y@nopolicy\.test>: REQUIRETLS cannot be satisfied: "
                              r"the domain has no MTA-STS policy")
        self.assertNotIn(" -> DATA", out)
        # the recipient rule: one recipient's domain tags the whole message,
        # including a recipient accepted before it
        rc, out = self.swaks(a, "--from", "to1@other.test", "--to", "z@noadv.test,z@rtls-b.test",
                             "--header", "Subject: t6 to")
        self.assertEqual(rc, 0, out)
        q_to = self.qid(out)
        # a rule-tagged message ignores TLS-Required: No (the rule wins)
        rc, out = self.swaks(a, "--from", "from3@rulesender.test", "--to", "w@tlsno.test",
                             "--header", "TLS-Required: No", "--header", "Subject: t6 from tlsno")
        self.assertEqual(rc, 0, out)
        q_tlsno = self.qid(out)
        # one session: a tagged transaction, then an untagged one
        s = lab.smtp(a.ip, a.port)
        try:
            s.ehlo()
            self.assertEqual(s.mail("to2@other.test")[0], 250)
            self.assertEqual(s.rcpt("x2@rtls-b.test")[0], 250)
            code, resp = s.data(b"Subject: t6 reuse 1\r\n\r\nhello\r\n")
            self.assertEqual(code, 250, resp)
            q_re1 = self.qid(resp.decode())
            self.assertEqual(s.mail("ctl2@other.test")[0], 250)
            self.assertEqual(s.rcpt("ctl2@noadv.test")[0], 250)
            code, resp = s.data(b"Subject: t6 reuse 2\r\n\r\nhello\r\n")
            self.assertEqual(code, 250, resp)
            q_re2 = self.qid(resp.decode())
            s.quit()
        finally:
            s.close()
        # control: no rule matches, delivered to the MX without REQUIRETLS
        rc, out = self.swaks(a, "--from", "ctl@other.test", "--to", "ctl@noadv.test",
                             "--header", "Subject: t6 control")
        self.assertEqual(rc, 0, out)
        q_ctl = self.qid(out)

        log = a.log_text()
        for qid, why in ((q_net_b, r"client network \(%s\)" % re.escape(netclient)),
                         (q_net_n, r"client network \(%s\)" % re.escape(netclient)),
                         (q_from, r"sender domain rulesender\.test"),
                         (q_to, r"recipient domain rtls-b\.test")):
            self.assertRegex(log, r"id=%s client=\S+ requiretls=yes source=rule \(%s\)" % (qid, why))
            self.assertRegex(log, r"id=%s .* requiretls=yes source=rule flags=REQUIRETLS\(rule\) "
                                  r"status=queued" % qid)
        self.assertRegex(log, r"id=%s .* requiretls=no flags=- status=queued" % q_ctl)
        self.assertRegex(log, r"id=%s .* requiretls=yes source=rule flags=REQUIRETLS\(rule\) "
                              r"status=queued" % q_re1)
        self.assertRegex(log, r"id=%s .* requiretls=no flags=- status=queued" % q_re2)
        self.assertRegex(log, r"id=%s .* requiretls=yes source=rule flags=REQUIRETLS\(rule\) "
                              r"status=queued" % q_tlsno)
        d = self.final_outcome(a, q_tlsno, "w@tlsno.test")
        self.assertEqual((d["status"], d["dsn"]), ("bounced", "5.7.10"), d["line"])
        self.assertNotIn(["w@tlsno.test"], [m["rcpt_tos"] for m in lab.mx.messages("mx1.tlsno.test")])
        d = self.final_outcome(a, q_re2, "ctl2@noadv.test")
        self.assertEqual((d["status"], d["requiretls"]), ("sent", "no"), d["line"])
        d = self.final_outcome(a, q_re1, "x2@rtls-b.test")
        self.assertEqual((d["status"], d["mx"]), ("sent", B_NAME), d["line"])
        # delivered to relay B with REQUIRETLS on the MAIL FROM; B stored the flag
        for qid, rcpt, sender in ((q_net_b, "x@rtls-b.test", "net1@other.test"),
                                  (q_to, "z@rtls-b.test", "to1@other.test")):
            d = self.final_outcome(a, qid, rcpt)
            self.assertEqual((d["status"], d["mx"], d["verified"]), ("sent", B_NAME, "yes"), d["line"])
            self.assertRegex(d["line"], r" requiretls=yes source=rule attempts=1 ")
            bid = re.search(r"queued as (%s)" % QID, d["reply"]).group(1)
            show = self.queue_show(b, bid)
            self.assertEqual((show["sender"], show["flags"]), (sender, "REQUIRETLS"), show["text"])
        # bounced 5.7.30 toward the MX without REQUIRETLS
        for qid, rcpt, sender, subj in ((q_net_n, "x@noadv.test", "net2@other.test", "t6 net noadv"),
                                        (q_from, "y@noadv.test", "from1@rulesender.test", "t6 from noadv"),
                                        (q_to, "z@noadv.test", "to1@other.test", "t6 to")):
            d = self.final_outcome(a, qid, rcpt)
            self.assertEqual((d["status"], d["dsn"]), ("bounced", "5.7.30"), d["line"])
            self.assertRegex(d["line"], r" requiretls=yes source=rule ")
            self.check_redacted_dsn(self.wait_dsn(sender), rcpt, "5.7.30", subj)
        got = [m["rcpt_tos"] for m in lab.mx.messages("mx1.noadv.test")]
        for rcpt in ("x@noadv.test", "y@noadv.test", "z@noadv.test"):
            self.assertNotIn([rcpt], got)
        d = self.final_outcome(a, q_ctl, "ctl@noadv.test")
        self.assertEqual((d["status"], d["requiretls"]), ("sent", "no"), d["line"])
        ctl = [m for m in lab.mx.messages("mx1.noadv.test") if m["rcpt_tos"] == ["ctl@noadv.test"]]
        self.assertEqual(len(ctl), 1)
        self.assertNotIn("REQUIRETLS", ctl[0]["mail_options"])

    # ==========================================================================
    # 7. Plaintext only: a relay without a certificate
    # ==========================================================================
    def test_07_relay_without_certificate(self):
        a = self.relay(server={"tls_cert": None, "tls_key": None})
        rc, out = self.send(a, "alice-t7@sender.test", ["bob@okrt.test"])
        self.assertEqual(rc, 1, out)
        self.assertNotRegex(out, r"<-  250-STARTTLS")
        self.assertRegex(out, r"(?m)^ -> STARTTLS\n<-  502 5\.5\.1 STARTTLS not available$")
        self.assertNotIn("MAIL FROM", out)
        self.assertNotIn("=== TLS started", out)
        # RTLS-02: the parameter in plaintext
        s = self.lab.smtp(a.ip, a.port)
        try:
            s.ehlo()
            self.assertFalse(s.has_extn("requiretls"))
            code, resp = s.mail("alice-t7@sender.test", ["REQUIRETLS"])
            self.assertEqual((code, resp[:7]), (530, b"5.7.10 "), resp)
            s.quit()
        finally:
            s.close()
        self.assertEqual(self.queue_list(a), [])

    # ==========================================================================
    # 8. strictrelay send: transcript and exit codes
    # ==========================================================================
    def test_08_send_cli(self):
        lab = self.lab
        a = self.relay()
        rc, out = self.send(a, "alice-t8@sender.test", ["bob@okrt.test"], "--verify",
                            "--ca-file", lab.ca.file, "--tls-name", "relay.test")
        self.assertEqual(rc, 0, out)
        lines = out.splitlines()
        self.assertEqual(lines[0], "=== Trying %s:%d..." % (a.ip, a.port))
        self.assertEqual(lines[1], "=== Connected to %s." % a.ip)
        self.assertRegex(lines[2], r"^<-  220 relay\.test ESMTP")
        self.assertEqual(lines[3], " -> EHLO client.test")
        i_tls = lines.index(" -> STARTTLS")
        plain_ehlo = lines[4:i_tls]
        self.assertIn("<-  250-STARTTLS", plain_ehlo)
        self.assertFalse([x for x in plain_ehlo if "REQUIRETLS" in x], "RTLS-01: offered before TLS")
        self.assertRegex(lines[i_tls + 1], r"^<-  220 ")
        self.assertRegex(lines[i_tls + 2], r"^=== TLS started with cipher TLSv1\.3:TLS_\w+$")
        self.assertIn("=== TLS certificate for relay.test: verified", lines)
        i_ehlo2 = lines.index(" ~> EHLO client.test")
        self.assertGreater(i_ehlo2, i_tls)
        self.assertIn("<~  250-REQUIRETLS", lines)
        self.assertIn(" ~> MAIL FROM:<alice-t8@sender.test> REQUIRETLS", lines)
        self.assertIn(" ~> RCPT TO:<bob@okrt.test>", lines)
        self.assertIn(" ~> DATA", lines)
        self.assertIn("<~  354 ", "\n".join(lines))
        self.assertIn(" ~> .", lines)
        self.assertIn(" ~> QUIT", lines)
        self.assertRegex(out, r"(?m)^<~  250 .*queued as %s" % QID)
        self.assertRegex(out, r"(?m)^<~  221 ")
        self.assertEqual(lines[-1], "=== Connection closed with remote host.")
        # after STARTTLS, nothing goes out in plaintext
        self.assertEqual([x for x in lines[i_tls + 2:] if x.startswith((" -> ", "<-  "))], [])
        qid = self.qid(out)
        self.assertEqual(self.final_outcome(a, qid, "bob@okrt.test")["status"], "sent")
        # refused at RCPT (550 5.7.30): exit 1, no DATA
        rc, out = self.send(a, "alice-t8@sender.test", ["bob@nopolicy.test"])
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"(?m)^<~  550 5\.7\.30 <bob@nopolicy\.test>: REQUIRETLS cannot be satisfied")
        self.assertNotIn(" ~> DATA", out)
        # one of two recipients refused: the message is queued for the other, exit 1
        rc, out = self.send(a, "alice-t8@sender.test", ["bob@nopolicy.test", "carol@okrt.test"])
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"(?m)^<~  250 .*queued as %s" % QID)
        # --verify against the wrong name: stops before EHLO (exit 3)
        rc, out = self.send(a, "alice-t8@sender.test", ["bob@okrt.test"], "--verify",
                            "--ca-file", lab.ca.file, "--tls-name", "wrong.test")
        self.assertEqual(rc, 3, out)
        self.assertIn("=== stopping: --verify and the certificate is not valid", out)
        self.assertNotIn("MAIL FROM", out)
        # usage: --to missing
        rc, out = self.run_send([BIN, "send", "--server", "%s:%d" % (a.ip, a.port),
                                 "--from", "alice-t8@sender.test", "--requiretls"])
        self.assertEqual(rc, 2, out)
        self.assertIn("--from and --to are required", out)
        self.assertNotIn("=== Trying", out)
        # other usage errors (2) and a missing --body file (1): no connection, nothing leaked
        base = [BIN, "send", "--from", "alice-t8@sender.test", "--to", "bob@okrt.test", "--requiretls",
                "--header", "Subject: x", "--mail-param", "RET=HDRS"]
        for extra, code, text in ((["--server", "[::1"], 2, "--server: bad address"),
                                  (["--server", "%s:%d" % (a.ip, a.port), "--timeout", "0"], 2,
                                   "--timeout must be 1..3600 seconds"),
                                  (["--server", "%s:%d" % (a.ip, a.port), "--body",
                                    os.path.join(lab.dir, "no-such-file")], 1, "no-such-file")):
            with self.subTest(extra=extra):
                rc, out = self.run_send(base + extra)
                self.assertEqual(rc, code, out)
                self.assertIn(text, out)
                self.assertNotIn("=== Trying", out)
        # connection refused: exit 3
        rc, out = self.run_send([BIN, "send", "--server", "%s:2525" % lab.ip(9, 9),
                                 "--from", "alice-t8@sender.test", "--to", "bob@okrt.test",
                                 "--requiretls"])
        self.assertEqual(rc, 3, out)
        self.assertIn("=== connect: Connection refused", out)
        self.assertNotIn(" -> ", out)


if __name__ == "__main__":
    unittest.main()
