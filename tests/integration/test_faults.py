#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Faults around the relay: a full disk under the queue, and DNS and HTTPS
failures during delivery.

- Disk full: the queue (state_dir) lives on a small tmpfs. Once it is full
  the relay answers 452 4.3.1 (RFC 3463: mail system full) instead of 250,
  keeps running and serving, loses nothing it acknowledged before, and
  accepts and delivers again as soon as space returns.
- Low disk: with less than [queue] min_free_space (plus the client's SIZE)
  free, MAIL gets 452 4.3.1 before any data is sent.
- DNS and HTTPS faults during delivery (DNS server gone, SERVFAIL, answers
  slower than dns_timeout, policy host gone or slow): the message is deferred,
  never delivered with less security than a cached enforce policy or
  REQUIRETLS demands, and delivered once the fault is gone. (test_mta_sts.py
  and test_requiretls.py cover policy-host failures on the first fetch and
  TXT failures with a cached policy; these cover what they do not.)

The file runs itself inside `unshare --mount` (tests run as root), so the
tmpfs mount vanishes with the test process whatever happens.

Run: meson test -C build faults --print-errorlogs
"""

import os
import re
import subprocess
import sys
import time
import unittest

if os.environ.get("STRICTRELAY_FAULTS_NS") != "1":
    # a private mount namespace for the tmpfs (the lab itself needs nothing else)
    os.environ["STRICTRELAY_FAULTS_NS"] = "1"
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable,
                          os.path.abspath(__file__)] + sys.argv[1:])

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relaycase import QID_RE, SANITIZER_RE, log_tail, wait_for  # noqa: E402
from lab import Lab, LabCase  # noqa: E402


def message(token, size=0):
    body = b"".join(b"%06d %s\r\n" % (i, b"x" * 70) for i in range(size // 78 + 1)) if size else b"hi\r\n"
    return (b"From: <a@relay.test>\r\nSubject: %s\r\nMessage-ID: <%s@relay.test>\r\n\r\n"
            % (token.encode(), token.encode())) + body


def subject_of(data):
    m = re.search(rb"^Subject: (\S+)\r$", data, re.M)
    return m.group(1).decode() if m else None


class Faults(LabCase):
    timing_label = "faults"

    @classmethod
    def setUpClass(cls):
        cls.lab = lab = Lab("faults")
        try:
            lab.mx.add("mx1.full.test", refuse=True, starttls=False)
            lab.dns.mx("full.test", "mx1.full.test")
            lab.mx.add("mx1.low.test", starttls=False)
            lab.dns.mx("low.test", "mx1.low.test")
            # DNS and HTTPS faults: two domains with an MTA-STS enforce policy
            # and an MX offering REQUIRETLS; an MX the policies do not name
            # (valid certificate for its own name, REQUIRETLS too)
            for dom in ("dnsf.test", "polf.test"):
                lab.mx.add("mx1." + dom, requiretls=True)
                lab.dns.mx(dom, "mx1." + dom)
                lab.mta_sts(dom, mode="enforce", mx=["mx1." + dom], id="1")
            lab.mx.add("mx.evil.test", requiretls=True)
            lab.start()
        except BaseException:
            lab.close(failed=True)
            raise

    def send(self, r, token, size=0, rcpt="bob@full.test"):
        """One transaction; returns the reply to the end of data (code, text)."""
        s = self.lab.smtp(r.ip, r.port, timeout=20)
        try:
            s.ehlo()
            code, rep = s.mail("a@relay.test")
            if code != 250:
                return code, rep.decode()
            code, rep = s.rcpt(rcpt)
            if code != 250:
                return code, rep.decode()
            code, rep = s.data(message(token, size))
            try:
                s.quit()
            except Exception:       # noqa: BLE001 - the reply is what counts
                pass
            return code, rep.decode()
        finally:
            s.close()

    def check_log(self, r):
        bad = [ln for ln in r.log_text().splitlines() if SANITIZER_RE.search(ln)]
        self.assertEqual(bad, [], "sanitizer report in the relay log:\n" + log_tail(r, 60))

    # ------------------------------------------------------------------ disk full
    def relay_on_tmpfs(self, min_free_space, tmpfs_size):
        """A started relay whose state_dir is a tmpfs of tmpfs_size."""
        r = self.lab.relay(start=False, queue={"retry_schedule": "1s", "min_free_space": min_free_space},
                           server={"max_message_size": "2M"}, tlsrpt={"enabled": False},
                           mta_sts={"enabled": False}, requiretls={"preflight": False})
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % tmpfs_size, "tmpfs",
                        r.state_dir], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", r.state_dir])
        r.start()
        return r

    def test_disk_full(self):
        lab = self.lab
        # min_free_space 0: the last line of defence, the store's own
        # disk-full handling at the end of DATA (test_disk_low: the check at MAIL)
        r = self.relay_on_tmpfs(0, "6m")
        acked = {}
        for i in range(5):
            code, rep = self.send(r, "before-%d" % i, 20000)
            self.assertEqual(code, 250, rep)
            acked["before-%d" % i] = rep
        # fill the file system (leave the relay nothing)
        filler = os.path.join(r.state_dir, "filler")
        p = subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k"], capture_output=True)
        self.assertIn(b"No space left on device", p.stderr)
        st = os.statvfs(r.state_dir)
        wal = os.path.getsize(os.path.join(r.state_dir, "queue.db-wal"))
        sys.stderr.write("faults: state_dir free after filling: %d bytes; wal %d bytes\n"
                         % (st.f_bavail * st.f_frsize, wal))
        # larger than the WAL file: SQLite reuses its pages, so only growth needs space
        size = wal + 300000
        self.assertLess(size, 1900000)
        replies = []
        for i in range(4):
            replies.append(self.send(r, "full-%d" % i, size))
        sys.stderr.write("faults: replies on a full disk: %s\n" % replies)
        for code, rep in replies:
            self.assertEqual(code, 452, replies)
            self.assertRegex(rep, r"^4\.3\.1 ", replies)
        self.assertTrue(r.running(), log_tail(r))
        # the scheduler keeps trying the queued mail meanwhile, and cannot record
        # the outcome: it holds the mail for a retry step (1 s) instead of
        # trying again at once (which was a tight loop of thousands per second)
        mark = r.log_mark()
        time.sleep(2.5)
        self.assertTrue(r.running(), log_tail(r))
        attempts = len(re.findall(r"id=\S+ to=<bob@full\.test> .*status=deferred", r.log_text()[mark:]))
        unrecorded = r.log_text()[mark:].count("cannot record the delivery outcome")
        sys.stderr.write("faults: on the full disk in 2.5 s: %d delivery attempts, %d outcomes not "
                         "recorded\n" % (attempts, unrecorded))
        self.assertGreater(unrecorded, 0, "the full disk did not stop the outcome writes: the test "
                           "proves nothing about them")
        self.assertLessEqual(attempts, 5 * 4, "retrying without a pause on a full disk")
        c = lab.raw(r.ip, r.port)
        self.assertEqual(c.read_reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        c.close()
        # space returns: accepted again, and everything is delivered once the MX is up
        os.unlink(filler)
        got = wait_for(lambda: (lambda x: x if x[0] == 250 else None)(self.send(r, "after-0", 20000)),
                       timeout=10, interval=0.5, what="a 250 after space returned")
        acked["after-0"] = got[1]
        lab.mx.update("mx1.full.test", refuse=False)
        wait_for(lambda: set(acked) <= {subject_of(m["data"]) for m in lab.mx.messages("mx1.full.test")},
                 timeout=30, interval=0.3, what="every acknowledged message delivered")
        wait_for(lambda: "Queue is empty." in r.cli("queue", "list").stdout, timeout=20,
                 interval=0.3, what="an empty queue")
        subjects = [subject_of(m["data"]) for m in lab.mx.messages("mx1.full.test")]
        self.assertEqual(sorted(subjects), sorted(acked), "each acknowledged message exactly once, "
                         "nothing refused was delivered")
        self.assertEqual(r.stop(), 0, log_tail(r))
        self.check_log(r)

    def test_disk_low_refuses_at_mail(self):
        """[queue] min_free_space: MAIL gets 452 4.3.1 (before the client sends
        any data) when the queue's file system has less than min_free_space
        plus the declared SIZE; accepted again once space returns."""
        lab = self.lab
        r = self.relay_on_tmpfs("3M", "10m")

        def free():
            st = os.statvfs(r.state_dir)
            return st.f_bavail * st.f_frsize

        def mail(size=None):
            s = lab.smtp(r.ip, r.port, timeout=20)
            try:
                s.ehlo()
                code, rep = s.mail("a@relay.test", ["SIZE=%d" % size] if size else [])
                return code, rep.decode()
            finally:
                s.close()
        acked = []
        code, rep = self.send(r, "low-0", 20000, rcpt="bob@low.test")
        self.assertEqual(code, 250, rep)
        acked.append("low-0")
        # leave 4 MiB: enough without SIZE, not for SIZE=1.5 MB (3 MiB + 1.5 MB)
        filler = os.path.join(r.state_dir, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (free() - 4 * 1024 * 1024))
        self.assertEqual(mail()[0], 250)
        code, rep = mail(1500000)
        self.assertEqual(code, 452, rep)
        self.assertRegex(rep, r"^4\.3\.1 Insufficient system storage")
        code, rep = self.send(r, "low-1", 20000, rcpt="bob@low.test")
        self.assertEqual(code, 250, rep)
        acked.append("low-1")
        # under min_free_space: every MAIL is refused, the client never sends DATA
        with open(filler, "ab") as f:
            f.write(b"\0" * (free() - 2 * 1024 * 1024))
        self.assertLess(free(), 3 * 1024 * 1024)
        for i in range(3):
            code, rep = self.send(r, "refused-%d" % i, 20000, rcpt="bob@low.test")
            self.assertEqual(code, 452, rep)
            self.assertRegex(rep, r"^4\.3\.1 ")
        line = r.wait_log(r"warn smtpd: MAIL refused with 452 4\.3\.1: \S+ has (\d+) KiB free, less than "
                          r"\[queue\] min_free_space 3072 KiB \+ SIZE (\d+) KiB \(refusals=(\d+)\)")
        self.assertEqual(line.group(2), "1464", "the first refusal logged is the SIZE=1500000 one")
        self.assertTrue(r.running(), log_tail(r))
        # space returns
        os.unlink(filler)
        code, rep = self.send(r, "low-2", 20000, rcpt="bob@low.test")
        self.assertEqual(code, 250, rep)
        acked.append("low-2")
        wait_for(lambda: set(acked) <= {subject_of(m["data"]) for m in lab.mx.messages("mx1.low.test")},
                 timeout=20, interval=0.3, what="the accepted messages delivered")
        delivered = [subject_of(m["data"]) for m in lab.mx.messages("mx1.low.test")]
        self.assertFalse([x for x in delivered if x and x.startswith("refused-")], "refused mail delivered")
        self.assertEqual(r.stop(), 0, log_tail(r))
        self.check_log(r)

    # ------------------------------------------------------------------ DNS and HTTPS
    def fault_relay(self):
        # connection_cache_time 0: every attempt looks the destination up
        # again, rather than reusing the verified connection of the last one
        return self.lab.relay(queue={"retry_schedule": "1s"},
                              delivery={"dns_timeout": "1s", "connect_timeout": "3s",
                                        "connection_cache_time": 0},
                              mta_sts={"fetch_timeout": "2s"}, requiretls={"preflight": False},
                              tlsrpt={"enabled": False})

    def send_pair(self, r, dom, tag):
        """A plain message and a REQUIRETLS one (over STARTTLS) to bob@dom:
        {subject: qid}."""
        out = {}
        for rtls in (False, True):
            subject = "%s-%s" % (tag, "rtls" if rtls else "plain")
            s = self.lab.smtp(r.ip, r.port, server_hostname="relay.test")
            try:
                s.ehlo()
                s.starttls(context=self.lab.ca.context())
                s.ehlo()
                self.assertEqual(s.mail("alice@relay.test", ["REQUIRETLS"] if rtls else [])[0], 250)
                self.assertEqual(s.rcpt("bob@" + dom)[0], 250)
                code, rep = s.data(message(subject))
                self.assertEqual(code, 250, rep)
                out[subject] = re.search(r"queued as (%s)" % QID_RE, rep.decode()).group(1)
                s.quit()
            finally:
                s.close()
        return out

    @staticmethod
    def outcomes(r, qid):
        """[(status, dsn, line)] of the delivery attempts of qid."""
        return [(m.group(1), m.group(2), m.group(0)) for m in re.finditer(
            r"^.* delivery: id=%s to=<[^>]*> .*status=(\w+) dsn=(\S+).*$" % qid, r.log_text(), re.M)]

    def expect_deferred(self, r, sent, what, attempts=2):
        """Every message in sent: at least `attempts` deferrals (4.x.x), no other
        outcome, and nothing delivered anywhere."""
        for subject, qid in sent.items():
            got = wait_for(lambda: (lambda o: o if len(o) >= attempts else None)(self.outcomes(r, qid)),
                           timeout=15, interval=0.2, what="%s: %d attempts of %s" % (what, attempts, subject))
            for status, dsn, line in got:
                self.assertEqual(status, "deferred", "%s: %s" % (what, line))
                self.assertRegex(dsn, r"^4\.", "%s: %s" % (what, line))
        arrived = {subject_of(m["data"]) for m in self.lab.mx.messages()}
        self.assertEqual(arrived & set(sent), set(), "%s: delivered during the fault" % what)

    def expect_delivered(self, r, dom, sent):
        """Each message at mx1.DOM exactly once, over TLS (SNI = the MX name),
        the REQUIRETLS ones with the parameter; none anywhere else."""
        mx = "mx1." + dom
        wait_for(lambda: set(sent) <= {subject_of(m["data"]) for m in self.lab.mx.messages(mx)},
                 timeout=20, interval=0.3, what="delivery to %s once the fault is gone" % mx)
        for m in self.lab.mx.messages():
            subj = subject_of(m["data"])
            if subj not in sent:
                continue
            self.assertEqual(m["endpoint"], mx, subj)
            self.assertIsNotNone(m["tls"], subj)
            self.assertEqual(m["tls"]["sni"], mx, subj)
            self.assertEqual("REQUIRETLS" in m["mail_options"], subj.endswith("-rtls"), (subj, m["mail_options"]))
        counts = [subject_of(m["data"]) for m in self.lab.mx.messages()]
        self.assertEqual({x: counts.count(x) for x in sent}, {x: 1 for x in sent})
        for subject, qid in sent.items():
            final = self.outcomes(r, qid)[-1]
            self.assertEqual(final[0], "sent", final[2])

    def test_dns_faults_during_delivery_defer(self):
        """SERVFAIL, answers slower than dns_timeout, and the DNS server gone,
        for a domain with a cached enforce policy: plain and REQUIRETLS mail
        defers (4.x.x, never bounced, never delivered), then goes to the
        policy's MX over verified TLS once DNS answers again."""
        lab, dom = self.lab, "dnsf.test"
        r = self.fault_relay()
        first = self.send_pair(r, dom, "dns-0")
        self.expect_delivered(r, dom, first)            # the policy is now cached
        all_sent = dict(first)
        for kind in ("servfail", "delay", "gone"):
            with self.subTest(fault=kind):
                t0 = time.monotonic()
                if kind == "gone":
                    lab.dns.stop()
                else:
                    # c-ares waits dns_timeout, then twice that on its second
                    # try: 3 s in all here. An answer after 6 s is too late
                    # for every try, however loaded the machine.
                    lab.dns.fault(dom, kind, delay=6 if kind == "delay" else None)
                time.sleep(1.2)             # answers cached before the fault expire (TTL 1 s)
                sent = self.send_pair(r, dom, "dns-" + kind)
                all_sent.update(sent)
                # an attempt that waits for DNS takes 3 x dns_timeout per lookup
                self.expect_deferred(r, sent, "DNS " + kind, attempts=1 if kind == "delay" else 2)
                if kind == "gone":
                    lab.dns.start()
                else:
                    lab.dns.remove(dom)
                    lab.dns.mx(dom, "mx1." + dom)
                self.expect_delivered(r, dom, sent)
                sys.stderr.write("faults: DNS %s: deferred, then delivered, in %.1f s\n"
                                 % (kind, time.monotonic() - t0))
        self.expect_delivered(r, dom, all_sent)
        self.assertEqual(lab.mx.messages("mx.evil.test"), [])
        self.assertEqual(r.stop(), 0, log_tail(r))
        self.check_log(r)

    def test_policy_host_faults_keep_the_cached_policy(self):
        """The MX of a domain with a cached enforce policy moves to a host the
        policy does not name, the _mta-sts id changes, and the policy host is
        slow (beyond fetch_timeout), then gone: the cached policy stays in
        force, so nothing goes to the new MX (deferred, never bounced); once
        the MX is back, mail flows with the policy host still gone."""
        lab, dom = self.lab, "polf.test"
        host = "mta-sts." + dom
        r = self.fault_relay()
        first = self.send_pair(r, dom, "pol-0")
        self.expect_delivered(r, dom, first)
        all_sent = dict(first)
        policy = "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"   # would downgrade, if fetched
        lab.https.set_file(host, "/.well-known/mta-sts.txt", {"body": policy, "delay": 6})
        with lab.dns.change():
            lab.dns.remove("_mta-sts." + dom)
            lab.dns.txt("_mta-sts." + dom, "v=STSv1; id=2")
            lab.dns.remove(dom, "MX")
            lab.dns.mx(dom, "mx.evil.test")
        time.sleep(1.1)                                   # the lab's TTL
        sent = self.send_pair(r, dom, "pol-slow")
        all_sent.update(sent)
        self.expect_deferred(r, sent, "policy host slow")
        # gone: its name points where nothing listens
        with lab.dns.change():
            lab.dns.remove(host, "A")
            lab.dns.a(host, lab.ip(2, 250))
        sent = self.send_pair(r, dom, "pol-gone")
        all_sent.update(sent)
        self.expect_deferred(r, sent, "policy host gone")
        self.assertEqual(lab.mx.messages("mx.evil.test"), [], "delivered to an MX the cached policy does not name")
        # the MX is back; the policy host is still gone: the cached policy is used
        with lab.dns.change():
            lab.dns.remove(dom, "MX")
            lab.dns.mx(dom, "mx1." + dom)
        self.expect_delivered(r, dom, all_sent)
        self.assertEqual(lab.mx.messages("mx.evil.test"), [])
        self.assertRegex(r.log_text(), r"mta-sts.*polf\.test.*(keeping the cached policy|cached)")
        self.assertEqual(r.stop(), 0, log_tail(r))
        self.check_log(r)


if __name__ == "__main__":
    unittest.main(verbosity=2)
