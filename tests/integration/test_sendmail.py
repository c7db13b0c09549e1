#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""`strictrelay sendmail` (and a link named sendmail) against real peers on
loopback (tests/lib/lab.py): local injection straight into the queue
database, delivered by a running relay to aiosmtpd MX peers.

- -t: recipients from To/Cc/Bcc (folded), Bcc gone from the delivered
  message, command-line recipients added, -i keeps a "." line, the added
  Received/From/Date/Message-ID headers, CR LF on the wire;
- -f, -F and explicit recipients without -t (To: is not a recipient then),
  and a "." line ending the message without -i;
- a symlink named `sendmail` in the test's temp dir, LF input, -oi, -C;
- injection while the relay is stopped: queued on disk, delivered once the
  relay starts; [requiretls] require_for from:/to: rules tag the message and
  8-bit content is flagged (checked on a relay that is never started);
- bad input: non-zero exit with a "strictrelay: sendmail: ..." message and
  nothing queued (bad address, no recipients, -t with a bad header, too big,
  line too long, unknown flag, missing config, a user who may not write the
  queue).

Run: meson test -C build sendmail --print-errorlogs
 or: STRICTRELAY_BIN=$PWD/build/strictrelay /usr/bin/python3 tests/integration/test_sendmail.py
"""

import email
import email.policy
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))

from lab import Lab, LabCase, wait_for  # noqa: E402
from relaycase import SANITIZER_RE  # noqa: E402

QID = r"[0-9A-HJKMNP-TV-Z]{12}"
MX = "mx1.sm.test"
MX2 = "mx1.other.test"
EX_USAGE, EX_DATAERR, EX_NOPERM, EX_CONFIG = 64, 65, 77, 78


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.default)


class SendmailTest(LabCase):
    timing_label = "sendmail"

    @classmethod
    def setUpClass(cls):
        cls.lab = lab = Lab("sendmail")
        try:
            lab.mx.add(MX)
            lab.dns.mx("sm.test", MX)
            lab.mx.add(MX2)
            lab.dns.mx("other.test", MX2)
            lab.start()
            cls.relay = lab.relay(server={"max_message_size": "64K"})
        except BaseException:
            lab.close(failed=True)
            raise
        cls.tmp = tempfile.mkdtemp(prefix="sendmail-", dir=lab.dir)

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.relay.running():
                rc = cls.relay.stop()
                assert rc == 0, "relay exited %r" % rc
            assert not SANITIZER_RE.search(cls.relay.log_text()), cls.relay.log_text()[-3000:]
        finally:
            super().tearDownClass()

    # -- helpers --------------------------------------------------------------
    def inject(self, args, data, relay=None, argv0=None, config=True, user=None):
        """Runs `strictrelay sendmail ARGS -c CONF` (or argv0 ARGS) with data on
        stdin; returns the CompletedProcess (bytes)."""
        relay = relay or self.relay
        cmd = [argv0] if argv0 else [relay.bin, "sendmail"]
        cmd += list(args)
        if config:
            cmd += ["-c", relay.config_path]
        if user:
            cmd = ["setpriv", "--reuid=%s" % user, "--regid=nogroup", "--clear-groups"] + cmd
        return subprocess.run(cmd, input=data, capture_output=True, timeout=60,
                              env=dict(os.environ, **relay.env))

    def queued(self, relay=None):
        """{id: (sender, flags, [recipients])} straight from the queue database."""
        relay = relay or self.relay
        path = os.path.join(relay.state_dir, "queue.db")
        if not os.path.exists(path):
            return {}
        db = sqlite3.connect(path, timeout=10)
        try:
            out = {}
            for mid, sender, flags in db.execute("SELECT id, sender, flags FROM messages"):
                rcpts = [r for (r,) in db.execute(
                    "SELECT address FROM recipients WHERE message_id = ? ORDER BY id", (mid,))]
                out[mid] = (sender, flags, rcpts)
            return out
        finally:
            db.close()

    def wait_delivered(self, endpoint, marker, timeout=15):
        """The message whose data holds marker, at endpoint."""
        found = []

        def arrived():
            found[:] = [m for m in self.lab.mx.messages(endpoint) if marker in m["data"]]
            return found
        wait_for(arrived, timeout=timeout, what="message %r at %s" % (marker, endpoint))
        return found[0]

    # -- tests ------------------------------------------------------------------
    def test_01_extract_recipients_and_remove_bcc(self):
        msg = (b"To: Bob <bob@sm.test>,\r\n\tCarol <carol@sm.test>\r\n"
               b"Cc: dave@other.test (Dave)\r\n"
               b"Bcc: \"Hidden, One\" <hidden@other.test>,\r\n  hidden2@sm.test\r\n"
               b"Subject: test-t marker-01\r\n"
               b"\r\nfirst line\r\n.\r\n..two dots\r\nlast\r\n")
        t0 = time.monotonic()
        p = self.inject(["-t", "-i", "-v", "extra@other.test"], msg)
        self.assertEqual(p.returncode, 0, p.stderr)
        qid = re.search(rb"queued as (" + QID.encode() + rb")", p.stdout)
        self.assertTrue(qid, p.stdout)
        qid = qid.group(1).decode()
        self.assertEqual(p.stderr, b"")
        # one SMTP transaction per MX; both arrive
        m1 = self.wait_delivered(MX, b"marker-01")
        m2 = self.wait_delivered(MX2, b"marker-01")
        took = time.monotonic() - t0
        sys.stderr.write("sendmail: injected to delivered (2 MX) in %.2f s\n" % took)
        self.assertLess(took, 10)
        self.assertEqual(sorted(m1["rcpt_tos"]), ["bob@sm.test", "carol@sm.test", "hidden2@sm.test"])
        self.assertEqual(sorted(m2["rcpt_tos"]),
                         ["dave@other.test", "extra@other.test", "hidden@other.test"])
        self.assertEqual(m1["mail_from"], "root@relay.test")
        data = m1["data"]
        self.assertEqual(data, m2["data"])
        # CR LF only, no Bcc, the body intact (the "." line kept by -i)
        self.assertNotIn(b"\n", data.replace(b"\r\n", b""))
        self.assertNotRegex(data, rb"(?im)^bcc:")
        self.assertNotIn(b"hidden", data.split(b"\r\n\r\n")[0].replace(b"Received", b""))
        self.assertTrue(data.endswith(b"\r\n\r\nfirst line\r\n.\r\n..two dots\r\nlast\r\n"), data)
        first = data.split(b"\r\n")[0]
        self.assertEqual(first, b"Received: by relay.test (strictrelay, from userid 0)")
        self.assertIn(b"\tid " + qid.encode() + b"; ", data)
        e = parse(data)
        self.assertEqual(e["Subject"], "test-t marker-01")
        self.assertEqual(e["From"].addresses[0].addr_spec, "root@relay.test")
        self.assertTrue(e["Date"].datetime)
        self.assertRegex(e["Message-ID"], r"^<\d{14}\.%s@relay\.test>$" % qid)
        # one Received: (ours); the relay adds none when it delivers
        self.assertEqual(len(e.get_all("Received")), 1)

    def test_02_sender_fullname_explicit_recipients(self):
        msg = (b"From: keep-me <app@sm.test>\nTo: not-a-recipient@sm.test\n"
               b"Subject: marker-02\n\nbody\n.\nafter the dot\n")
        p = self.inject(["-f", "bounces@sm.test", "-F", "Ignored Name", "bob@sm.test",
                         "carol@other.test"], msg)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"")     # no -v: nothing printed
        m1 = self.wait_delivered(MX, b"marker-02")
        m2 = self.wait_delivered(MX2, b"marker-02")
        self.assertEqual(m1["rcpt_tos"], ["bob@sm.test"])
        self.assertEqual(m2["rcpt_tos"], ["carol@other.test"])
        self.assertEqual(m1["mail_from"], "bounces@sm.test")
        data = m1["data"]
        # the existing From: is kept, -F only names an added one; "." ended the input
        self.assertIn(b"\r\nFrom: keep-me <app@sm.test>\r\n", data)
        self.assertNotIn(b"Ignored Name", data)
        self.assertTrue(data.endswith(b"\r\n\r\nbody\r\n"), data)
        self.assertNotIn(b"after the dot", data)
        # a single recipient is named in Received:
        one = self.inject(["-f", "bounces@sm.test", "-F", "Report Bot", "solo@sm.test"],
                          b"Subject: marker-02b\n\nx\n")
        self.assertEqual(one.returncode, 0, one.stderr)
        d = self.wait_delivered(MX, b"marker-02b")["data"]
        self.assertRegex(d, rb"^Received: by relay\.test \(strictrelay, from userid 0\)\r\n"
                            rb"\tid " + QID.encode() + rb"\r\n\tfor <solo@sm\.test>; ")
        self.assertIn(b"\r\nFrom: Report Bot <bounces@sm.test>\r\n", d)

    def test_03_symlink_named_sendmail(self):
        link = os.path.join(self.tmp, "sendmail")
        if not os.path.lexists(link):
            os.symlink(self.relay.bin, link)
        msg = b"Subject: marker-03\nTo: x@sm.test\n\nvia the link\n.\nnot sent\n"
        # -oi: a "." line is text; -C: the config (sendmail's spelling); -- then rcpt
        p = self.inject(["-oi", "-oem", "-C", self.relay.config_path, "-f", "<>", "--",
                         "linked@sm.test"], msg, argv0=link, config=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        m = self.wait_delivered(MX, b"marker-03")
        self.assertEqual(m["rcpt_tos"], ["linked@sm.test"])
        self.assertEqual(m["mail_from"], "")            # -f "<>": the null sender
        self.assertTrue(m["data"].endswith(b"\r\n\r\nvia the link\r\n.\r\nnot sent\r\n"))
        # a null sender's added From: is the invoking user
        self.assertIn(b"\r\nFrom: ", m["data"])
        self.assertRegex(m["data"], rb"\r\nFrom: [^\r]*<root@relay\.test>\r\n")
        # --help through the link: the man-page style help, exit 0
        h = subprocess.run([link, "--help"], capture_output=True, timeout=30)
        self.assertEqual(h.returncode, 0)
        self.assertIn(b"strictrelay sendmail - queue a message", h.stdout)
        for section in (b"SYNOPSIS", b"DESCRIPTION", b"OPTIONS", b"EXIT STATUS"):
            self.assertIn(section, h.stdout)
        # -bi (newaliases) does nothing, successfully
        self.assertEqual(subprocess.run([link, "-bi"], capture_output=True).returncode, 0)

    def test_04_relay_stopped_then_started(self):
        r = self.lab.relay(start=False, requiretls={
            "require_for": "to:rtls.test, from:@tagged.test", "preflight": False})
        p = self.inject(["-t"], b"To: late@sm.test\nSubject: marker-04\n\nwritten while down\n",
                        relay=r)
        self.assertEqual(p.returncode, 0, p.stderr)
        q = self.queued(r)
        self.assertEqual([v[2] for v in q.values()], [["late@sm.test"]])
        self.assertIn("queued", r.cli("queue", "list").stdout)
        r.start()
        try:
            m = self.wait_delivered(MX, b"marker-04")
            self.assertEqual(m["rcpt_tos"], ["late@sm.test"])
            wait_for(lambda: not self.queued(r), timeout=10, what="queue empty")
        finally:
            self.assertEqual(r.stop(), 0)
        self.assertFalse(SANITIZER_RE.search(r.log_text()), r.log_text()[-3000:])

        # require_for rules and 8-bit content, on the stopped relay (not delivered)
        before = set(self.queued(r))
        for args, body in ((["a@rtls.test"], b"Subject: r1\n\nx\n"),
                           (["-f", "app@tagged.test", "b@sm.test"], b"Subject: r2\n\nx\n"),
                           (["c@sm.test"], b"Subject: r3\nTLS-Required: No\n\ncaf\xc3\xa9\n")):
            p = self.inject(args, body, relay=r)
            self.assertEqual(p.returncode, 0, p.stderr)
        new = {v[2][0]: v[1] for k, v in self.queued(r).items() if k not in before}
        self.assertEqual(set(new), {"a@rtls.test", "b@sm.test", "c@sm.test"})
        self.assertTrue(new["a@rtls.test"] & 2, "to: rule tags REQUIRETLS(rule)")
        self.assertTrue(new["b@sm.test"] & 2, "from: rule tags REQUIRETLS(rule)")
        self.assertFalse(new["c@sm.test"] & 2)
        self.assertTrue(new["c@sm.test"] & 4, "TLS-Required: No")
        self.assertTrue(new["c@sm.test"] & 32, "8-bit content flagged")
        self.assertFalse(new["a@rtls.test"] & 32)
        self.assertIn("REQUIRETLS(rule)", r.cli("queue", "list").stdout)

    def test_05_bad_input_queues_nothing(self):
        before = self.queued()
        big = b"Subject: big\n\n" + (b"x" * 70 + b"\n") * 1000      # 72 KB > 64K
        cases = [
            (["root"], b"Subject: s\n\nx\n", EX_DATAERR, "\"root\": address has no domain"),
            (["bob@sm.test", "Bob bob@sm.test"], b"x\n", EX_DATAERR, "not an address"),
            ([], b"Subject: s\n\nx\n", EX_DATAERR, "no recipients"),
            (["-t"], b"Subject: no rcpt headers\n\nx\n", EX_DATAERR, "no recipients"),
            (["-t"], b"To: ok@sm.test\nCc: broken@\n\nx\n", EX_DATAERR, "Cc: header"),
            (["-f", "not an address", "a@sm.test"], b"x\n", EX_DATAERR, "sender (-f)"),
            (["a@sm.test"], big, EX_DATAERR, "max_message_size"),
            (["a@sm.test"], b"Subject: s\n\n" + b"y" * 1200 + b"\n", EX_DATAERR,
             "line 3 of the message is 1200 octets"),
            (["a@sm.test"], b"Subject: s\n\nnul\x00here\n", EX_DATAERR, "NUL"),
            (["-z", "a@sm.test"], b"x\n", EX_USAGE, "unknown option -z"),
            (["-bp"], b"", EX_USAGE, "strictrelay queue list"),
        ]
        for args, data, rc, text in cases:
            with self.subTest(args=args):
                p = self.inject(args, data)
                self.assertEqual(p.returncode, rc, p.stderr)
                err = p.stderr.decode()
                self.assertTrue(err.startswith("strictrelay: sendmail: "), err)
                self.assertIn(text, err)
        # an unreadable configuration names the file
        p = self.inject(["-c", "/nonexistent/strictrelay.conf", "a@sm.test"], b"x\n", config=False)
        self.assertEqual(p.returncode, EX_CONFIG, p.stderr)
        self.assertIn(b"/nonexistent/strictrelay.conf", p.stderr)
        # a user who may not write the queue is told who may
        conf = os.path.join(self.tmp, "nobody.conf")
        with open(self.relay.config_path) as src, open(conf, "w") as dst:
            dst.write(src.read())
        os.chmod(conf, 0o644)
        os.chmod(self.tmp, 0o755)
        p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            self.relay.bin, "sendmail", "-c", conf, "a@sm.test"],
                           input=b"x\n", capture_output=True, timeout=30)
        self.assertEqual(p.returncode, EX_NOPERM, p.stderr)
        self.assertRegex(p.stderr.decode(), r"^strictrelay: sendmail: cannot (write|open) the "
                                            r"queue.*only .* may queue mail")
        # nothing of it reached the queue
        self.assertEqual(self.queued(), before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
