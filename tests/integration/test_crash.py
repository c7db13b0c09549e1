#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Crash under load: clients send continuously while the relay is killed with
SIGKILL every few seconds and restarted at once. Afterwards every message that
got a 250 has reached the loopback MX, and exactly once, except duplicates of
deliveries that were in flight at a kill (counted, printed, and each one
checked against a kill time).

Each message carries a unique token (Subject and body), so 250 replies are
matched to arrivals; the body is checked byte for byte.

Duration: STRICTRELAY_CRASH_SECONDS (default 30, as in CI). The long run:
    STRICTRELAY_CRASH_SECONDS=300 BUILD=build tests/run crash

Run: meson test -C build crash --print-errorlogs
"""

import collections
import hashlib
import os
import random
import re
import signal
import smtplib
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relaycase import QID_RE, SANITIZER_RE, log_tail, wait_for  # noqa: E402
from lab import Lab, LabCase  # noqa: E402

DURATION = float(os.environ.get("STRICTRELAY_CRASH_SECONDS", "30"))
SENDERS = 4                 # concurrent client sessions
MAX_PER_DOMAIN = 4          # outbound sessions (so deliveries in flight at a kill)
KILL_EVERY = (2.0, 4.0)     # seconds between kills (uniform)
MX = "mx1.crash.test"
TOKEN_RE = re.compile(rb"^Subject: crash (t\d+-\d+)\r$", re.M)


def make_message(token):
    body = b"".join(b"%s line %d of the crash test\r\n" % (token.encode(), i) for i in range(20))
    return (b"From: <load@relay.test>\r\nTo: <sink@crash.test>\r\nSubject: crash %s\r\n"
            b"Message-ID: <%s@relay.test>\r\n\r\n" % (token.encode(), token.encode())) + body


def body_digest(data):
    """sha256 of what follows the header section (the relay prepends Received:)."""
    i = data.find(b"\r\n\r\n")
    return hashlib.sha256(data[i + 4:]).hexdigest()


class CrashUnderLoad(LabCase):
    timing_label = "crash"

    @classmethod
    def setUpClass(cls):
        cls.lab = lab = Lab("crash")
        try:
            # plaintext sink: this test is about the queue, and the 2 shared
            # cores are better spent on the relay than on TLS handshakes
            lab.mx.add(MX, starttls=False)
            lab.dns.mx("crash.test", MX)
            lab.start()
        except BaseException:
            lab.close(failed=True)
            raise

    def test_sigkill_loop_under_load(self):
        lab = self.lab
        r = lab.relay(queue={"retry_schedule": "1s"},
                      delivery={"max_per_domain": MAX_PER_DOMAIN, "connect_timeout": "3s"},
                      server={"command_timeout": "5s"},
                      requiretls={"preflight": False}, tlsrpt={"enabled": False},
                      mta_sts={"enabled": False})
        lock = threading.Lock()
        acked = {}          # token -> (qid, body digest, time of the 250)
        sent = {}           # token -> body digest (everything whose DATA we finished sending)
        errors = collections.Counter()
        stop = threading.Event()

        def sender(i):
            n = 0
            while not stop.is_set():
                try:
                    s = smtplib.SMTP(r.ip, r.port, local_hostname="load%d.test" % i, timeout=10)
                except OSError:
                    errors["connect"] += 1
                    time.sleep(0.05)        # relay down: being restarted
                    continue
                try:
                    s.ehlo()
                    # a few messages per session, so kills also hit reused sessions
                    for _ in range(random.randint(1, 5)):
                        if stop.is_set():
                            break
                        token = "t%d-%d" % (i, n)
                        n += 1
                        msg = make_message(token)
                        code, rep = s.mail("load%d@relay.test" % i)
                        if code != 250:
                            raise smtplib.SMTPResponseException(code, rep)
                        code, rep = s.rcpt("sink@crash.test")
                        if code != 250:
                            raise smtplib.SMTPResponseException(code, rep)
                        with lock:
                            sent[token] = body_digest(msg)
                        code, rep = s.data(msg)
                        if code != 250:
                            raise smtplib.SMTPResponseException(code, rep)
                        m = re.match(r"2\.0\.0 Ok: queued as (%s)$" % QID_RE, rep.decode())
                        assert m, rep
                        with lock:
                            acked[token] = (m.group(1), body_digest(msg), time.time())
                    s.quit()
                except (smtplib.SMTPException, OSError) as e:
                    # killed under us; a 4xx is a bug (the relay never says it while up)
                    with lock:
                        errors[type(e).__name__ if not isinstance(e, smtplib.SMTPResponseException)
                               else "reply %d" % e.smtp_code] += 1
                finally:
                    try:
                        s.close()
                    except OSError:
                        pass

        threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(SENDERS)]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        kills = []          # wall-clock times of the SIGKILLs
        restart_times = []
        rnd = random.Random(8)
        try:
            while time.monotonic() - t_start < DURATION:
                time.sleep(rnd.uniform(*KILL_EVERY))
                kills.append(time.time())
                self.assertEqual(r.kill9(), -signal.SIGKILL, "the relay had died before the kill:\n"
                                 + log_tail(r))
                t0 = time.monotonic()
                r.start()
                restart_times.append(time.monotonic() - t0)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        load_seconds = time.monotonic() - t_start
        with lock:
            acked_now = dict(acked)
            sent_now = dict(sent)

        # every 250 is delivered; then the queue drains completely
        spool = lab.mx.spool

        def count_spool():
            return len([f for f in os.listdir(spool) if f.endswith(".json")])
        try:
            wait_for(lambda: count_spool() >= len(acked_now), timeout=60, interval=0.5,
                     what="%d acknowledged messages at the MX" % len(acked_now))
        except AssertionError:
            pass            # reported precisely below
        wait_for(lambda: "Queue is empty." in r.cli("queue", "list").stdout, timeout=60,
                 interval=0.5, what="an empty queue")
        arrivals = collections.defaultdict(list)     # token -> [(received_ts, digest)]
        strangers = []
        for m in lab.mx.messages(MX):
            tm = TOKEN_RE.search(m["data"])
            if not tm:
                strangers.append(m["data"][:200])
                continue
            arrivals[tm.group(1).decode()].append((m["received_ts"], body_digest(m["data"])))

        missing = sorted(t for t in acked_now if t not in arrivals)
        corrupt = sorted(t for t, a in arrivals.items()
                         if any(d != sent_now.get(t) for _, d in a))
        dups = {t: len(a) for t, a in arrivals.items() if len(a) > 1}
        unacked = sorted(t for t in arrivals if t not in acked_now)
        # a duplicate is a delivery the relay made but had not recorded when it
        # was killed: its first arrival must lie shortly before some kill
        unexplained = []
        for t in dups:
            times = sorted(ts for ts, _ in arrivals[t])
            # (the MX may store it just after the kill: the relay had sent
            # the final dot and died before reading the 250)
            if not any(-1.0 <= k - times[0] < 5.0 for k in kills):
                qid = acked_now.get(t, ("?",))[0]
                unexplained.append("%s (qid %s): arrivals %s, kills %s; log:\n%s" % (
                    t, qid, ["%.2f" % x for x in times], ["%.2f" % k for k in kills],
                    "\n".join(ln for ln in r.log_text().splitlines() if qid in ln)))
        log = r.log_text()
        sys.stderr.write(
            "crash: %.0f s of load, %d kills (restart %.2f-%.2f s), %d messages acknowledged "
            "(%.1f/s), %d arrived at the MX, %d duplicates %s, %d stored without a 250 "
            "(client cut off by a kill) %s, client errors %s\n"
            % (load_seconds, len(kills), min(restart_times), max(restart_times), len(acked_now),
               len(acked_now) / load_seconds, sum(len(a) for a in arrivals.values()),
               sum(v - 1 for v in dups.values()), sorted(dups.items())[:20], len(unacked),
               unacked[:10], dict(errors)))
        self.assertEqual([ln for ln in log.splitlines() if SANITIZER_RE.search(ln)], [])
        self.assertEqual(strangers, [], "messages at the MX that nobody sent")
        self.assertEqual(missing, [], "acknowledged with 250 but never delivered")
        self.assertEqual(corrupt, [], "delivered with a different body")
        self.assertEqual(unexplained, [], "duplicates not explained by a kill")
        # at most one delivery per outbound session can be in flight at a kill
        self.assertLessEqual(sum(v - 1 for v in dups.values()), MAX_PER_DOMAIN * len(kills),
                             "more duplicates than deliveries in flight at the kills")
        self.assertEqual(sorted(t for t in unacked if t not in sent_now), [],
                         "delivered although the client never finished sending it")
        # what the relay said while it was up is 250 or nothing: no 4xx/5xx
        self.assertEqual([k for k in errors if k.startswith("reply")], [],
                         "error replies during the run: %s" % dict(errors))
        # the run meant something: load was acknowledged all along, kills hit it
        self.assertGreaterEqual(len(kills), max(3, int(DURATION / 5)))
        self.assertGreaterEqual(len(acked_now), 20 * len(kills), "too little load to prove anything")
        kills_with_load = sum(1 for k in kills if any(k - 2.5 < a[2] < k for a in acked_now.values()))
        self.assertGreaterEqual(kills_with_load, len(kills) - 1,
                                "kills that happened while no message was being accepted")
        # the last relay is healthy: it stops cleanly
        self.assertEqual(r.stop(), 0, log_tail(r))


if __name__ == "__main__":
    unittest.main(verbosity=2)
