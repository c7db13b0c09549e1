#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The relay's inbound ESMTP side against real clients (swaks, smtplib, raw
sockets): capabilities and STARTTLS, REQUIRETLS and TLS-Required, SIZE, line
limits, error replies and enhanced status codes, relay control, pipelining,
the Received: header and queue ids.

Nothing here depends on outbound delivery: every relay routes all mail to a
host where nothing listens, so accepted messages stay in the queue.

Run: meson test -C build inbound_smtp --print-errorlogs
"""

import os
import re
import smtplib
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relaycase import QID_RE, RelayCase  # noqa: E402

MSG = b"From: a@relay.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\nbody line\r\n"


def caps(lines):
    """EHLO reply lines -> set of upper-case keywords (first word), greeting line skipped."""
    return {ln.split()[0].upper() for ln in lines[1:] if ln.strip()}


def sized_message(total):
    """A message of exactly `total` octets (CR LF lines, no line starting with '.')."""
    head = b"Subject: sized\r\n\r\n"
    out = bytearray(head)
    while len(out) < total:
        left = total - len(out)
        if left <= 2:
            # grow the previous line instead of emitting an empty fragment
            out[-2:-2] = b"y" * left
            break
        n = min(78, left - 2)
        out += b"x" * n + b"\r\n"
    assert len(out) == total and out.endswith(b"\r\n"), len(out)
    return bytes(out)


class InboundSMTP(RelayCase):

    # ------------------------------------------------------------------ EHLO / STARTTLS
    def test_ehlo_capabilities_before_and_after_starttls(self):
        r = self.relay(server={"max_message_size": "10K"})
        rc, out = self.swaks(r, "--tls", "--quit-after", "HELO", "--ehlo", "client.test")
        self.assertEqual(rc, 0, out)
        before = [ln[4:] for ln in out.splitlines() if ln.startswith("<-  250")]
        after = [ln[4:] for ln in out.splitlines() if ln.startswith("<~  250")]
        self.assertTrue(before and after, out)
        # plaintext EHLO (swaks shows "250-KEYWORD" / "250 KEYWORD")
        kw_before = {ln[4:].split()[0].upper() for ln in before[1:]}
        kw_after = {ln[4:].split()[0].upper() for ln in after[1:]}
        for k in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "STARTTLS"):
            self.assertIn(k, kw_before, out)
        self.assertNotIn("REQUIRETLS", kw_before, "RTLS-01: REQUIRETLS offered in plaintext\n" + out)
        self.assertIn("SIZE 10240", [ln[4:] for ln in before], out)
        # inside TLS: REQUIRETLS offered, STARTTLS not again
        self.assertIn("REQUIRETLS", kw_after, out)
        self.assertNotIn("STARTTLS", kw_after, "TLS-03: STARTTLS offered inside TLS\n" + out)
        for k in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            self.assertIn(k, kw_after, out)
        self.assertIn("=== TLS started with cipher TLSv1.3", out)

    def test_state_reset_after_starttls(self):
        r = self.relay()
        c = self.raw(r)
        code, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertIn("STARTTLS", caps(lines))
        self.assertNotIn("REQUIRETLS", caps(lines))
        self.assert_reply(c.cmd("STARTTLS"), 220, "2.0.0")
        tls = c.starttls("relay.test", self.tls_context())     # verifies relay.test against the lab CA
        self.assertEqual(tls.version(), "TLSv1.3")
        # TLS-02: the session starts over; the pre-TLS EHLO no longer counts
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test>"), 503, "5.5.1")
        self.assert_reply(c.cmd("RCPT TO:<b@example.test>"), 503, "5.5.1")
        self.assert_reply(c.cmd("DATA"), 503, "5.5.1")
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test> REQUIRETLS"), 503, "5.5.1")
        code, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250, lines)
        self.assertIn("REQUIRETLS", caps(lines))
        self.assertNotIn("STARTTLS", caps(lines))
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test> REQUIRETLS"), 250, "2.1.0")
        self.assert_reply(c.cmd("RSET"), 250, "2.0.0")
        self.assert_reply(c.cmd("QUIT"), 221, "2.0.0")
        self.assertTrue(c.closed_by_peer())
        self.assertEqual(self.queue_ids(r), [])
        r.wait_log(r"starttls TLSv1\.3 ")

    # ------------------------------------------------------------------ REQUIRETLS / TLS-Required
    def test_requiretls_refused_in_plaintext(self):
        r = self.relay()
        s = self.smtp(r)
        s.ehlo()
        self.assertFalse(s.has_extn("requiretls"))
        code, msg = s.mail("a@relay.test", ["REQUIRETLS"])
        self.assertEqual(code, 530, msg)
        self.assertTrue(msg.startswith(b"5.7.10 "), msg)
        # the refused MAIL opened no transaction: nothing can follow
        code, msg = s.rcpt("bob@example.test")
        self.assertEqual(code, 503, msg)
        code, msg = s.docmd("DATA")
        self.assertEqual(code, 503, msg)
        # the same through sendmail(): refused as a whole
        with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
            s.sendmail("a@relay.test", ["bob@example.test"], MSG, mail_options=["REQUIRETLS"])
        self.assertEqual(cm.exception.smtp_code, 530)
        s.quit()
        self.assertEqual(self.queue_ids(r), [])

    def _tls_smtp(self, r):
        s = self.smtp(r, server_hostname="relay.test")
        s.ehlo()
        s.starttls(context=self.tls_context())
        s.ehlo()
        return s

    def _send(self, s, msg, sender="a@relay.test", rcpts=("bob@example.test",), options=()):
        code, reply = s.mail(sender, list(options))
        self.assertEqual(code, 250, reply)
        for rc in rcpts:
            code, reply = s.rcpt(rc)
            self.assertEqual(code, 250, reply)
        code, reply = s.data(msg)
        self.assertEqual(code, 250, reply)
        m = re.match(r"^2\.0\.0 Ok: queued as (%s)$" % QID_RE, reply.decode())
        self.assertIsNotNone(m, reply)
        return m.group(1)

    def test_requiretls_over_tls_is_queued_with_flag(self):
        r = self.relay()
        s = self._tls_smtp(r)
        self.assertTrue(s.has_extn("requiretls"))
        qid = self._send(s, MSG, options=["REQUIRETLS"])
        # RTLS-04: REQUIRETLS wins over "TLS-Required: No"
        qid2 = self._send(s, b"TLS-Required: No\r\n" + MSG, options=["REQUIRETLS"])
        s.quit()
        listed = {m["id"]: m for m in self.queue_list(r)}
        self.assertEqual(sorted(listed), sorted([qid, qid2]))
        self.assertEqual(listed[qid]["flags"], "REQUIRETLS")
        self.assertEqual(listed[qid2]["flags"], "REQUIRETLS")
        for q in (qid, qid2):
            show = self.queue_show(r, q)
            self.assertEqual(show["flags"], "REQUIRETLS", show["text"])
            self.assertNotIn("TLS-Required:No", show["flags"])
            self.assertEqual(show["sender"], "a@relay.test")
            self.assertEqual(show["recipients"], [("queued", "bob@example.test")])
        # the header is kept in the message (RTLS-31), it just does not count
        self.assertIn(b"\r\nTLS-Required: No\r\n", self.queue_body(r, qid2))
        r.wait_log(r"id=%s .*requiretls=yes source=param flags=REQUIRETLS status=queued" % qid)

    def test_requiretls_value_refused(self):
        r = self.relay()
        s = self._tls_smtp(r)
        code, msg = s.mail("a@relay.test", ["REQUIRETLS=yes"])
        self.assertEqual(code, 501, msg)
        self.assertTrue(msg.startswith(b"5.5.4 "), msg)
        s.quit()
        self.assertEqual(self.queue_ids(r), [])

    def test_tls_required_no_header(self):
        r = self.relay()
        # swaks, plaintext, header only
        rc, out = self.swaks(r, "--to", "bob@example.test", "--from", "a@relay.test",
                             "--header", "TLS-Required: No")
        self.assertEqual(rc, 0, out)
        m = re.search(r"250 2\.0\.0 Ok: queued as (%s)" % QID_RE, out)
        self.assertIsNotNone(m, out)
        show = self.queue_show(r, m.group(1))
        self.assertEqual(show["flags"], "TLS-Required:No", show["text"])
        self.assertIn("TLS-Required: No", show["headers"])
        # RTLS-05: the literal is case-insensitive, blanks allowed; anything else is not "No";
        # a "header" in the body does not count
        s = self.smtp(r)
        s.ehlo()
        cases = [
            (b"tls-required:NO\r\n" + MSG, "TLS-Required:No"),
            (b"TLS-Required: \tno \r\n" + MSG, "TLS-Required:No"),
            (b"TLS-Required: Nope\r\n" + MSG, "-"),
            (b"TLS-Required: Yes\r\n" + MSG, "-"),
            (MSG + b"TLS-Required: No\r\n", "-"),
            (MSG, "-"),
        ]
        sent = [(self._send(s, body), want) for body, want in cases]
        s.quit()
        listed = {x["id"]: x["flags"] for x in self.queue_list(r)}
        self.assertEqual(len(listed), 1 + len(cases))
        for (qid, want), (body, _) in zip(sent, cases):
            self.assertEqual(listed[qid], want, body)

    # ------------------------------------------------------------------ SIZE
    def test_size_parameter(self):
        r = self.relay(server={"max_message_size": "10K"})
        c = self.raw(r)
        code, lines = c.cmd("EHLO client.test")
        self.assertIn("SIZE 10240", lines)
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test> SIZE=10241"), 552, "5.3.4")
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test> SIZE=99999999999999999999"), 552, "5.3.4")
        # more than 20 digits: a syntax error, not an overflow
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test> SIZE=999999999999999999999"), 501, "5.5.4")
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test> SIZE=-1"), 501, "5.5.4")
        # the refused MAIL left no transaction behind
        self.assert_reply(c.cmd("RCPT TO:<b@example.test>"), 503, "5.5.1")
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test> SIZE=10240"), 250, "2.1.0")
        self.assert_reply(c.cmd("QUIT"), 221)
        self.assertEqual(self.queue_ids(r), [])

    def test_size_of_data(self):
        limit = 10 * 1024
        r = self.relay(server={"max_message_size": "10K"})
        c = self.raw(r)
        c.cmd("EHLO client.test")

        def transaction(body, finish=True):
            self.assert_reply(c.cmd("MAIL FROM:<a@relay.test>"), 250)
            self.assert_reply(c.cmd("RCPT TO:<b@example.test>"), 250)
            code, _ = c.cmd("DATA")
            self.assertEqual(code, 354)
            c.send(body)
            if finish:
                c.send(b".\r\n")
                return c.read_reply()

        # one octet over: the reply comes only after the end of data (SIZE-01)
        transaction(sized_message(limit + 1), finish=False)
        with self.assertRaises(OSError):
            c.read_reply(timeout=0.5)
        c.send(b".\r\n")
        self.assert_reply(c.read_reply(), 552, "5.3.4")
        # far over
        self.assert_reply(transaction(sized_message(5 * limit)), 552, "5.3.4")
        # exactly the limit (octets with CR LF, without the final dot): accepted,
        # on the same connection
        got = transaction(sized_message(limit))
        self.assert_reply(got, 250, "2.0.0")
        qid = re.search(QID_RE, got[1][0]).group(0)
        # SIZE-02: counted without dot-stuffing: a stuffed line adds no octet
        dotted = sized_message(limit).replace(b"\r\n\r\nx", b"\r\n\r\n.", 1)
        self.assertEqual(len(dotted), limit)
        got = transaction(dotted.replace(b"\r\n\r\n.", b"\r\n\r\n..", 1))
        self.assert_reply(got, 250, "2.0.0")
        qid_dots = re.search(QID_RE, got[1][0]).group(0)
        got = transaction(b"Subject: small\r\n\r\nsmall\r\n")
        self.assert_reply(got, 250, "2.0.0")
        qid2 = re.search(QID_RE, got[1][0]).group(0)
        self.assert_reply(c.cmd("QUIT"), 221)
        self.assertEqual(self.queue_ids(r), [qid, qid_dots, qid2])
        body = self.queue_body(r, qid)
        self.assertTrue(body.endswith(sized_message(limit)), body[-200:])
        self.assertTrue(self.queue_body(r, qid_dots).endswith(dotted))
        self.assertEqual(len(re.findall(r"reason=too-big", r.log_text())), 2)

    # ------------------------------------------------------------------ line limit
    def test_line_length_limit(self):
        r = self.relay()
        ok_line = "a" * 998
        rc, out = self.swaks(r, "--to", "bob@example.test", "--from", "a@relay.test",
                             "--body", ok_line)
        self.assertEqual(rc, 0, out[-2000:])
        m = re.search(r"250 2\.0\.0 Ok: queued as (%s)" % QID_RE, out)
        self.assertIsNotNone(m, out[-2000:])
        rc, out = self.swaks(r, "--to", "bob@example.test", "--from", "a@relay.test",
                             "--body", "b" * 999)
        self.assertNotEqual(rc, 0, out[-2000:])
        self.assertRegex(out, r"<\*\* +550 5\.6\.0 .*998")
        self.assertEqual(self.queue_ids(r), [m.group(1)])
        self.assertIn(b"\r\n" + ok_line.encode() + b"\r\n", self.queue_body(r, m.group(1)))
        # over-long line in the header section, then the connection is still usable
        c = self.raw(r)
        c.cmd("EHLO client.test")
        for line, code in ((b"X-Long: " + b"h" * 991, 550), (b"X-Long: " + b"h" * 990, 250)):
            self.assertEqual(len(line), 999 if code == 550 else 998)
            c.cmd("MAIL FROM:<a@relay.test>")
            c.cmd("RCPT TO:<b@example.test>")
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(line + b"\r\n\r\nbody\r\n.\r\n")
            self.assert_reply(c.read_reply(), code, "5.6.0" if code == 550 else "2.0.0")
        self.assertEqual(len(self.queue_ids(r)), 2)

    # ------------------------------------------------------------------ errors, ESC-01
    def test_error_replies_and_enhanced_codes(self):
        r = self.relay()
        steps = [
            ("MAIL FROM:<a@relay.test>", 503, "5.5.1"),           # before EHLO
            ("RCPT TO:<b@example.test>", 503, "5.5.1"),
            ("DATA", 503, "5.5.1"),
            ("NOOP", 250, "2.0.0"),
            ("EHLO client.test", 250, None),
            ("FOO bar", 500, "5.5.1"),
            ("MAIL FROM:<a@relay.test> FOO=bar", 555, "5.5.4"),
            ("MAIL FROM:<a@relay.test> AUTH=<>", 555, "5.5.4"),       # AUTH is not offered
            ("MAIL FROM:<a@relay.test> RET=PART", 501, "5.5.4"),      # DSN (RFC 3461)
            ("MAIL FROM:<a@relay.test> ENVID=a=b", 501, "5.5.4"),     # not xtext
            ("MAIL FROM:<a@relay.test> SIZE=abc", 501, "5.5.4"),
            ("MAIL FROM:<a@relay.test> BODY=BINARYMIME", 501, "5.5.4"),
            ("MAIL FROM:<a@relay.test> SIZE=1 SIZE=2", 501, "5.5.4"),
            ("MAIL FROM:a@relay.test", 501, "5.1.7"),
            ("MAIL FROM:<a@relay.test", 501, "5.1.7"),
            ("MAIL TO:<a@relay.test>", 501, "5.5.2"),
            ("RCPT TO:<b@example.test>", 503, "5.5.1"),
            ("QUIT", 221, "2.0.0"),
        ]
        # (a new session: 20 errors end a session, see test_inbound_security)
        steps2 = [
            ("EHLO client.test", 250, None),
            ("MAIL FROM:<a@relay.test> BODY=8BITMIME SMTPUTF8", 250, "2.1.0"),
            ("MAIL FROM:<a@relay.test>", 503, "5.5.1"),            # nested
            ("DATA", 554, "5.5.1"),                               # no recipient yet
            ("RCPT TO:<b@example.test> FOO=BAR", 555, "5.5.4"),
            ("RCPT TO:<b@example.test> NOTIFY=NEVER,SUCCESS", 501, "5.5.4"),  # NEVER alone
            ("RCPT TO:<b@example.test> ORCPT=rfc822", 501, "5.5.4"),
            ("RCPT TO:<>", 501, "5.1.3"),
            ("RCPT TO:b@example.test", 501, "5.1.3"),
            ("RCPT TO:<b@example.test>", 250, "2.1.5"),
            ("VRFY bob", 252, "2.5.0"),
            ("HELP", 214, "2.0.0"),
            ("NOOP", 250, "2.0.0"),
            ("EXPN staff", 502, "5.5.1"),
            ("RSET", 250, "2.0.0"),
            ("DATA", 503, "5.5.1"),                               # RSET ended the transaction
            ("STARTTLS now", 501, "5.5.2"),
            ("QUIT", 221, "2.0.0"),
        ]
        for session in (steps, steps2):
            c = self.raw(r)
            for line, code, esc in session:
                with self.subTest(command=line):
                    got = c.cmd(line)
                    if esc is None:
                        self.assertEqual(got[0], code, got)
                    else:
                        self.assert_reply(got, code, esc)
            self.assertTrue(c.closed_by_peer())
        # a complete transaction: every reply but 354 carries a matching code
        c = self.raw(r)
        c.cmd("EHLO client.test")
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test>"), 250, "2.1.0")
        self.assert_reply(c.cmd("RCPT TO:<b@example.test>"), 250, "2.1.5")
        self.assertEqual(c.cmd("DATA")[0], 354)
        got = c.cmd(b"Subject: x\r\n\r\nx\r\n.")
        self.assert_reply(got, 250, "2.0.0")
        self.assert_reply(c.cmd("QUIT"), 221, "2.0.0")
        self.assertEqual(len(self.queue_ids(r)), 1)

    def test_help_and_helo(self):
        r = self.relay()
        c = self.raw(r)
        code, lines = c.cmd("HELO client.test")
        self.assertEqual((code, lines), (250, ["relay.test"]))
        code, lines = c.cmd("HELP")
        self.assert_reply((code, lines), 214, "2.0.0")
        self.assertGreaterEqual(len(lines), 2)
        self.assertRegex(" ".join(lines), r"MAIL.*RCPT.*DATA")
        # a message after HELO is received with "with SMTP"
        c.cmd("MAIL FROM:<a@relay.test>")
        c.cmd("RCPT TO:<b@example.test>")
        c.cmd("DATA")
        got = c.cmd(b"Subject: helo\r\n\r\nx\r\n.")
        self.assert_reply(got, 250)
        qid = re.search(QID_RE, got[1][0]).group(0)
        hdr = self.queue_show(r, qid)["headers"][0]
        self.assertRegex(hdr, r"^Received: from client\.test .*\n\tby relay\.test \(strictrelay\) with SMTP id %s" % qid)

    def test_smtputf8_and_8bit(self):
        r = self.relay()
        c = self.raw(r)
        c.cmd("EHLO client.test")
        # UTF8-02: a non-ASCII address needs the SMTPUTF8 parameter
        self.assert_reply(c.cmd("MAIL FROM:<j\u00f6rg@relay.test>"), 553, "5.6.7")
        self.assert_reply(c.cmd("MAIL FROM:<a@relay.test>"), 250)
        self.assert_reply(c.cmd("RCPT TO:<zo\u00eb@example.test>"), 553, "5.6.7")
        self.assert_reply(c.cmd("RSET"), 250)
        self.assert_reply(c.cmd("MAIL FROM:<j\u00f6rg@relay.test> SMTPUTF8 BODY=8BITMIME"), 250, "2.1.0")
        self.assert_reply(c.cmd("RCPT TO:<zo\u00eb@example.test>"), 250, "2.1.5")
        self.assertEqual(c.cmd("DATA")[0], 354)
        content = "Subject: caf\u00e9\r\n\r\nna\u00efve body\r\n".encode()
        got = c.cmd(content + b".")
        self.assert_reply(got, 250, "2.0.0")
        qid = re.search(QID_RE, got[1][0]).group(0)
        show = self.queue_show(r, qid)
        self.assertEqual(show["sender"], "j\u00f6rg@relay.test")
        self.assertEqual(show["recipients"], [("queued", "zo\u00eb@example.test")])
        self.assertEqual(show["flags"], "8BITMIME,SMTPUTF8,8bit")
        self.assertRegex(show["headers"][0], r"with UTF8SMTP id %s" % qid)
        self.assertTrue(self.queue_body(r, qid).endswith(content))
        # 8-bit content without BODY=8BITMIME is still recognised as 8-bit
        c.cmd("MAIL FROM:<a@relay.test>")
        c.cmd("RCPT TO:<b@example.test>")
        c.cmd("DATA")
        got = c.cmd(content + b".")
        self.assert_reply(got, 250)
        self.assertEqual(self.queue_show(r, re.search(QID_RE, got[1][0]).group(0))["flags"], "8bit")

    def test_recipient_limit_and_duplicates(self):
        r = self.relay(server={"max_recipients": 100})
        c = self.raw(r)
        c.cmd("EHLO client.test")
        c.send(b"MAIL FROM:<a@relay.test>\r\n" +
               b"".join(b"RCPT TO:<r%d@example.test>\r\n" % i for i in range(99)) +
               b"RCPT TO:<r0@example.test>\r\nRCPT TO:<r99@example.test>\r\n"
               b"RCPT TO:<r100@example.test>\r\nDATA\r\n")
        self.assert_reply(c.read_reply(), 250, "2.1.0")
        for i in range(99):
            self.assert_reply(c.read_reply(), 250, "2.1.5", "<r%d@" % i)
        self.assert_reply(c.read_reply(), 250, "2.1.5", "<r0@")          # duplicate: accepted once
        self.assert_reply(c.read_reply(), 250, "2.1.5", "<r99@")
        self.assert_reply(c.read_reply(), 452, "4.5.3")                 # SMTP-04: the 101st
        self.assertEqual(c.read_reply()[0], 354)
        got = c.cmd(b"Subject: many\r\n\r\nx\r\n.")
        self.assert_reply(got, 250)
        listed = self.queue_list(r)
        self.assertEqual(len(listed), 1)
        self.assertEqual(listed[0]["nrcpt"], 100)
        self.assertEqual([a for _, a in listed[0]["rcpts"]], ["r%d@example.test" % i for i in range(100)])
        # many recipients: no "for <...>" in Received:
        self.assertNotIn("for <", self.queue_show(r, listed[0]["id"])["headers"][0])

    def test_dot_unstuffing_and_loop_detection(self):
        r = self.relay()
        c = self.raw(r)
        c.cmd("EHLO client.test")

        def send(content):
            c.cmd("MAIL FROM:<a@relay.test>")
            c.cmd("RCPT TO:<b@example.test>")
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(content + b".\r\n")
            return c.read_reply()

        # SMTP-03: a leading dot is removed; "." alone ends the data only after CR LF
        got = send(b"Subject: dots\r\n\r\n..leading\r\n..\r\n...\r\nmid.dle\r\n. x\r\n")
        self.assert_reply(got, 250)
        qid = re.search(QID_RE, got[1][0]).group(0)
        self.assertTrue(self.queue_body(r, qid).endswith(
            b"\r\n\r\n.leading\r\n.\r\n..\r\nmid.dle\r\n x\r\n"), self.queue_body(r, qid))
        # SMTP-09: more than 100 Received: fields is a loop
        trace = b"".join(b"Received: from h%d by h%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, i + 1)
                         for i in range(101))
        self.assert_reply(send(trace + b"Subject: loop\r\n\r\nx\r\n"), 554, "5.4.6")
        got = send(trace[trace.index(b"\r\n") + 2:] + b"Subject: 100 hops\r\n\r\nx\r\n")
        self.assert_reply(got, 250)
        self.assertEqual(len(self.queue_ids(r)), 2)

    # ------------------------------------------------------------------ relay control
    def test_relay_control(self):
        trusted, untrusted = self.lab.ip(0, 200), self.lab.ip(0, 201)
        r = self.relay(server={"relay_networks": trusted + "/32", "accept_domains": "accepted.test"})
        mark = r.log_mark()
        rc, out = self.swaks(r, "--local-interface", untrusted, "--to", "bob@foreign.test",
                             "--from", "a@client.test")
        self.assertNotEqual(rc, 0, out)
        self.assertRegex(out, r"<\*\* +554 5\.7\.1 <bob@foreign\.test>: Relay access denied")
        r.wait_log(r"connect client=%s .*trusted=no" % re.escape(untrusted), start=mark)
        r.wait_log(r"client=%s relay denied from=<\"?a@client\.test\"?> to=<\"?bob@foreign\.test\"?>"
                   % re.escape(untrusted), start=mark)
        # the untrusted client may send to an accept_domains domain (any case)
        rc, out = self.swaks(r, "--local-interface", untrusted, "--to", "bob@Accepted.TEST",
                             "--from", "a@client.test")
        self.assertEqual(rc, 0, out)
        accepted = re.search(r"queued as (%s)" % QID_RE, out).group(1)
        # ... but not to its subdomains or look-alikes, nor relay via a mixed list
        c = self.raw(r, source=untrusted)
        c.cmd("EHLO client.test")
        self.assert_reply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        for rcpt in ("bob@sub.accepted.test", "bob@accepted.test.evil.test", "bob@[127.0.0.1]",
                     "@accepted.test:bob@foreign.test"):
            with self.subTest(rcpt=rcpt):
                self.assert_reply(c.cmd("RCPT TO:<%s>" % rcpt), 554, "5.7.1")
        self.assert_reply(c.cmd("RCPT TO:<postmaster>"), 550, "5.1.1")
        self.assert_reply(c.cmd("DATA"), 554, "5.5.1")
        self.assert_reply(c.cmd("QUIT"), 221)
        # the trusted address relays anywhere
        rc, out = self.swaks(r, "--local-interface", trusted, "--to", "carol@foreign.test",
                             "--from", "a@client.test")
        self.assertEqual(rc, 0, out)
        relayed = re.search(r"queued as (%s)" % QID_RE, out).group(1)
        r.wait_log(r"connect client=%s .*trusted=yes" % re.escape(trusted), start=mark)
        listed = {m["id"]: m["rcpts"] for m in self.queue_list(r)}
        self.assertEqual(listed, {accepted: [("queued", "bob@Accepted.TEST")],
                                  relayed: [("queued", "carol@foreign.test")]})
        self.assertEqual(len(re.findall(r"relay denied", r.log_text())), 5)

    def test_postmaster_without_domain(self):
        """RFC 5321 4.5.1: "RCPT TO:<Postmaster>" with [server] postmaster set
        is accepted from any client (also one that may not relay) and
        queued for that address; without it, refused (no mailboxes here)."""
        trusted, untrusted = self.lab.ip(0, 200), self.lab.ip(0, 201)
        r = self.relay(server={"relay_networks": trusted + "/32",
                               "postmaster": "hostmaster@admin.example.test"})
        mark = r.log_mark()
        rc, out = self.swaks(r, "--local-interface", untrusted, "--to", "PostMaster",
                             "--from", "a@client.test")
        self.assertEqual(rc, 0, out)
        qid = re.search(r"queued as (%s)" % QID_RE, out).group(1)
        self.assertEqual({m["id"]: m["rcpts"] for m in self.queue_list(r)},
                         {qid: [("queued", "hostmaster@admin.example.test")]})
        r.wait_log(r"client=%s RCPT <postmaster> goes to <hostmaster@admin\.example\.test> "
                   r"\(\[server\] postmaster\)" % re.escape(untrusted), start=mark)
        # the same client still may not relay elsewhere
        c = self.raw(r, source=untrusted)
        c.cmd("EHLO client.test")
        self.assert_reply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assert_reply(c.cmd("RCPT TO:<bob@admin.example.test>"), 554, "5.7.1")
        self.assert_reply(c.cmd("QUIT"), 221)
        # not set: refused, and the log says why
        r2 = self.relay()
        c = self.raw(r2)
        c.cmd("EHLO client.test")
        self.assert_reply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assert_reply(c.cmd("RCPT TO:<postmaster>"), 550, "5.1.1")
        self.assert_reply(c.cmd("QUIT"), 221)
        r2.wait_log(r"RCPT <postmaster> refused: \[server\] postmaster is not set")

    # ------------------------------------------------------------------ pipelining
    def test_pipelining_replies_in_order(self):
        trusted, untrusted = self.lab.ip(0, 200), self.lab.ip(0, 201)
        r = self.relay(server={"relay_networks": trusted + "/32", "accept_domains": "accepted.test"})
        c = self.raw(r, source=untrusted)
        code, lines = c.cmd("EHLO client.test")
        self.assertIn("PIPELINING", caps(lines))
        c.send(b"MAIL FROM:<a@client.test>\r\n"
               b"RCPT TO:<one@accepted.test>\r\n"
               b"RCPT TO:<two@foreign.test>\r\n"
               b"RCPT TO:<three@accepted.test>\r\n"
               b"DATA\r\n")
        replies = [c.read_reply() for _ in range(5)]
        self.assert_reply(replies[0], 250, "2.1.0")
        self.assert_reply(replies[1], 250, "2.1.5", r"<one@accepted\.test>")
        self.assert_reply(replies[2], 554, "5.7.1", r"<two@foreign\.test>")
        self.assert_reply(replies[3], 250, "2.1.5", r"<three@accepted\.test>")
        self.assertEqual(replies[4][0], 354, replies)
        # PIPE-03: what follows the end of data in the same write is the next command
        c.send(b"Subject: piped\r\n\r\nhello\r\n.\r\nNOOP\r\nMAIL FROM:<b@client.test>\r\n"
               b"RCPT TO:<bad address>\r\nRCPT TO:<four@accepted.test>\r\nRSET\r\nQUIT\r\n")
        done = c.read_reply()
        self.assert_reply(done, 250, "2.0.0")
        qid = re.search(r"queued as (%s)" % QID_RE, done[1][0]).group(1)
        self.assert_reply(c.read_reply(), 250, "2.0.0")                  # NOOP
        self.assert_reply(c.read_reply(), 250, "2.1.0")                  # MAIL
        self.assert_reply(c.read_reply(), 501, "5.1.3")                  # bad RCPT
        self.assert_reply(c.read_reply(), 250, "2.1.5", "four@")          # RCPT
        self.assert_reply(c.read_reply(), 250, "2.0.0")                  # RSET
        self.assert_reply(c.read_reply(), 221, "2.0.0")                  # QUIT
        self.assertTrue(c.closed_by_peer())
        self.assertEqual(c.buf, b"")
        listed = self.queue_list(r)
        self.assertEqual([m["id"] for m in listed], [qid])
        self.assertEqual(listed[0]["rcpts"], [("queued", "one@accepted.test"),
                                              ("queued", "three@accepted.test")])

    def test_pipelined_burst_of_transactions(self):
        r = self.relay()
        c = self.raw(r)
        c.cmd("EHLO client.test")
        n = 20
        burst = b"".join(b"MAIL FROM:<a@relay.test>\r\nRCPT TO:<r%d@example.test>\r\nDATA\r\n"
                         b"Subject: %d\r\n\r\nmessage %d\r\n.\r\n" % (i, i, i) for i in range(n))
        c.send(burst + b"QUIT\r\n")
        ids = []
        for i in range(n):
            self.assert_reply(c.read_reply(), 250, "2.1.0")
            self.assert_reply(c.read_reply(), 250, "2.1.5", "r%d@" % i)
            self.assertEqual(c.read_reply()[0], 354)
            got = c.read_reply()
            self.assert_reply(got, 250, "2.0.0")
            ids.append(re.search(QID_RE, got[1][0]).group(0))
        self.assert_reply(c.read_reply(), 221)
        self.assertEqual(len(set(ids)), n)
        self.assertEqual(ids, sorted(ids), "queue ids sort by arrival")
        listed = self.queue_list(r)
        self.assertEqual([m["id"] for m in listed], ids)
        self.assertEqual([m["rcpts"][0][1] for m in listed], ["r%d@example.test" % i for i in range(n)])

    # ------------------------------------------------------------------ Received:, queue id
    def test_received_header_and_queue_id(self):
        r = self.relay()
        src = self.lab.ip(0, 100)
        s = self.smtp(r, source=src, server_hostname="relay.test")
        s.ehlo()
        s.starttls(context=self.tls_context())
        s.ehlo()
        cipher, version = s.sock.cipher()[0], s.sock.version()
        qid = self._send(s, MSG)
        s.quit()
        self.assertEqual(self.queue_ids(r), [qid])
        show = self.queue_show(r, qid)
        self.assertEqual(show["id"], qid)
        self.assertEqual(show["client"], "%s helo=client.test tls=%s %s" % (src, version, cipher))
        hdr = show["headers"]
        self.assertRegex(hdr[0], r"^Received: from client\.test \(\[%s\]\)\n"
                                 r"\tby relay\.test \(strictrelay\) with ESMTPS id %s\n"
                                 r"\t\(version=%s cipher=%s\)\n"
                                 r"\tfor <bob@example\.test>; \S.*\d{4}"
                         % (re.escape(src), qid, re.escape(version), re.escape(cipher)))
        self.assertEqual(hdr[1:], ["From: a@relay.test", "To: bob@example.test", "Subject: hello"])
        body = self.queue_body(r, qid)
        self.assertTrue(body.startswith(b"Received: from client.test"), body[:200])
        self.assertTrue(body.endswith(MSG), body)
        self.assertEqual(body.count(b"Received:"), 1)
        r.wait_log(r"id=%s client=%s from=<\"?a@relay\.test\"?> nrcpt=1 size=\d+ tls=yes "
                   r"requiretls=no flags=- status=queued" % (qid, re.escape(src)))
        # plaintext: ESMTP, no TLS details, existing Received: fields kept below ours
        s = self.smtp(r, source=src)
        s.ehlo()
        qid2 = self._send(s, b"Received: from elsewhere by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" + MSG)
        s.quit()
        self.assertEqual(self.queue_ids(r), [qid, qid2])
        hdr = self.queue_show(r, qid2)["headers"]
        self.assertRegex(hdr[0], r"^Received: from client\.test \(\[%s\]\)\n\tby relay\.test "
                                 r"\(strictrelay\) with ESMTP id %s\n\tfor <bob@example\.test>; "
                         % (re.escape(src), qid2))
        self.assertNotIn("version=", hdr[0])
        self.assertTrue(hdr[1].startswith("Received: from elsewhere by x;"), hdr)
        self.assertEqual(self.queue_show(r, qid2)["client"], "%s helo=client.test tls=none" % src)


if __name__ == "__main__":
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2)
    sys.stderr.write("inbound_smtp: %.1f s\n" % (time.monotonic() - t0))
    sys.exit(0 if prog.result.wasSuccessful() else 1)
