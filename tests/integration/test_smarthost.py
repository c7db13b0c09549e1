#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The relay as a smarthost (issue 7): SMTP AUTH on the submission listeners,
relaying for authenticated clients from outside relay_networks, failed-AUTH
lockout, per-client connection and message-rate limits, sender_domains,
`strictrelay passwd`, privilege drop, SIGHUP reload under load, SIGTERM drain.

Clients are swaks (--auth, --tls, --tlsc) and Python's smtplib. Mail goes on
to a lab MX (aiosmtpd) over the lab DNS. relay_networks excludes the lab's
addresses in the main relay, so every client there is "outside".

Run: meson test -C build smarthost --print-errorlogs
"""

import base64
import http.client
import os
import pwd
import smtplib
import ssl
import subprocess
import sys
import threading
import time
import unittest

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))

from lab import Lab, LabCase, RawClient, wait_for  # noqa: E402

BIN = os.environ.get("STRICTRELAY_BIN") or os.path.join(SRCDIR, "build", "strictrelay")
SUBMISSION = 2587
SUBMISSIONS = 2465
PRIVILEGED_METRICS_PORT = 981
MX = "mx1.dest.test"


def passwd_line(user, password):
    p = subprocess.run([BIN, "passwd", user], input=password + "\n", capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("strictrelay passwd failed: %s" % p.stderr)
    return p.stdout


def rr(c, timeout=None):
    """A RawClient's next reply as one string: "250 line1 | line2"."""
    code, lines = c.read_reply(timeout)
    return "%d %s" % (code, " | ".join(lines))


def cc(c, line):
    c.send(line + "\r\n")
    return rr(c)


def auth_plain(s, user, password):
    """One AUTH PLAIN attempt (smtplib's login() would try LOGIN after a
    failed PLAIN, which counts twice); returns (code, text)."""
    token = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
    return s.docmd("AUTH", "PLAIN " + token)


def msg(token, rcpt, sender="app@example.org"):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\n"
            "token %s\r\n" % (sender, rcpt, token, token, token)).encode()


class Smarthost(LabCase):
    timing_label = "smarthost"

    @classmethod
    def setUpClass(cls):
        cls.lab = Lab(name="Smarthost")
        lab = cls.lab
        lab.mx.add(MX)
        for d in ("dest.test", "rate.test", "priv.test", "hup.test", "drain.test"):
            lab.dns.mx(d, MX, 10)
        lab.start()
        cls.users_dir = os.path.join(lab.dir, "auth")
        os.makedirs(cls.users_dir)
        cls.users_file = os.path.join(cls.users_dir, "users")
        with open(cls.users_file, "w") as f:
            f.write("# test users\n" + passwd_line("alice", "s3cret pass") +
                    passwd_line("bob@example.org", "hunter2"))
        os.chmod(cls.users_file, 0o640)
        ip = lab.ip(0, 1)
        cls.relay = lab.relay(
            server={"relay_networks": "127.255.255.254/32",
                    "submission_listen": "%s:%d" % (ip, SUBMISSION),
                    "submission_tls_listen": "%s:%d" % (ip, SUBMISSIONS),
                    "max_connections_per_client": 4},
            auth={"users_file": cls.users_file, "max_failures": 3, "failure_window": "5m"},
            mta_sts={"enabled": "no"}, tlsrpt={"enabled": "no"})
        cls.ctx = ssl.create_default_context(cafile=lab.ca.file)
        cls.ctx.check_hostname = False

    def submit(self, user, password, token, rcpt, port=SUBMISSION, source=None):
        s = self.lab.smtp(self.relay.ip, port, source_address=source)
        try:
            s.starttls(context=self.ctx)
            s.ehlo()
            s.login(user, password)
            s.sendmail("app@example.org", [rcpt], msg(token, rcpt))
        finally:
            s.quit()

    def delivered(self, token):
        return [m for m in self.lab.mx.messages(MX) if ("token " + token).encode() in m["data"]]

    # -- AUTH ------------------------------------------------------------------
    def test_01_swaks_auth_plain_and_login(self):
        rc, out = self.lab.swaks("--server", "%s:%d" % (self.relay.ip, SUBMISSION), "--tls",
                                 "--auth", "PLAIN", "--auth-user", "alice",
                                 "--auth-password", "s3cret pass", "--from", "app@example.org",
                                 "--to", "r1@dest.test", "--header", "Subject: tok-plain",
                                 "--body", "token tok-plain")
        self.assertEqual(rc, 0, out)
        self.assertIn("235 2.7.0", out)
        self.assertRegex(out, r"250-AUTH PLAIN LOGIN")
        # implicit TLS (port 465 style) with LOGIN
        rc, out = self.lab.swaks("--server", "%s:%d" % (self.relay.ip, SUBMISSIONS), "--tlsc",
                                 "--auth", "LOGIN", "--auth-user", "bob@example.org",
                                 "--auth-password", "hunter2", "--from", "app@example.org",
                                 "--to", "r2@dest.test", "--body", "token tok-login")
        self.assertEqual(rc, 0, out)
        self.assertIn("235 2.7.0", out)
        wait_for(lambda: self.delivered("tok-plain") and self.delivered("tok-login"),
                 timeout=15, what="both messages at the MX")
        m = self.delivered("tok-plain")[0]
        self.assertRegex(m["data"].decode(), r"with ESMTPSA id")
        self.relay.wait_log(r"auth=ok user=alice")
        self.relay.wait_log(r'auth=ok user="?bob@example.org')

    def test_02_no_auth_before_tls(self):
        c = RawClient(self.relay.ip, SUBMISSION)
        try:
            self.assertTrue(rr(c).startswith("220"))
            r = cc(c, "EHLO client.test")
            self.assertIn("STARTTLS", r)
            self.assertNotIn("AUTH", r)
            self.assertTrue(cc(c, "AUTH PLAIN AGFsaWNlAHMzY3JldCBwYXNz").startswith("538 5.7.11"))
            self.assertTrue(cc(c, "MAIL FROM:<app@example.org>").startswith("530 5.7.0"))
        finally:
            c.close()
        # port 25 never offers AUTH, not even inside TLS
        s = self.lab.smtp(self.relay.ip, self.relay.port)
        s.starttls(context=self.ctx)
        s.ehlo()
        self.assertFalse(s.has_extn("auth"))
        s.quit()
        # the swaks view: AUTH demanded without TLS fails
        rc, out = self.lab.swaks("--server", "%s:%d" % (self.relay.ip, SUBMISSION),
                                 "--auth", "PLAIN", "--auth-user", "alice",
                                 "--auth-password", "s3cret pass", "--to", "x@dest.test")
        self.assertNotEqual(rc, 0, out)

    def test_03_relay_from_outside_only_after_auth(self):
        # port 25 from outside relay_networks: refused
        s = self.lab.smtp(self.relay.ip, self.relay.port)
        s.ehlo()
        s.mail("app@example.org")
        code, text = s.rcpt("r3@dest.test")
        self.assertEqual(code, 554, text)
        s.quit()
        # submission without AUTH: refused at MAIL
        s = self.lab.smtp(self.relay.ip, SUBMISSION)
        s.starttls(context=self.ctx)
        s.ehlo()
        code, text = s.mail("app@example.org")
        self.assertEqual(code, 530, text)
        s.quit()
        # with AUTH: relayed and delivered
        self.submit("alice", "s3cret pass", "tok-outside", "r3@dest.test")
        wait_for(lambda: self.delivered("tok-outside"), timeout=15, what="delivery")

    def test_04_wrong_password_and_lockout(self):
        src = self.lab.ip(0, 77)   # its own address: the lockout is per client IP
        for i in range(3):
            s = self.lab.smtp(self.relay.ip, SUBMISSION, source_address=src)
            s.starttls(context=self.ctx)
            s.ehlo()
            code, text = auth_plain(s, "alice", "wrong %d" % i)
            if i < 2:
                self.assertEqual(code, 535, text)
                s.quit()
            else:
                self.assertEqual(code, 421, text)  # the third failure locks
                s.close()
        self.relay.wait_log(r"client=%s conn=\d+ 3 failed AUTH attempts" % src.replace(".", r"\."))
        # locked: even the right password is not checked now
        s = self.lab.smtp(self.relay.ip, SUBMISSION, source_address=src)
        s.starttls(context=self.ctx)
        s.ehlo()
        code, text = auth_plain(s, "alice", "s3cret pass")
        self.assertEqual(code, 421, text)
        s.close()
        # an unknown user costs the same and fails the same way
        s = self.lab.smtp(self.relay.ip, SUBMISSION)
        s.starttls(context=self.ctx)
        s.ehlo()
        t0 = time.monotonic()
        code, text = auth_plain(s, "mallory", "x")
        self.assertEqual(code, 535, text)
        self.assertGreater(time.monotonic() - t0, 0.005)
        s.quit()
        # other clients are not locked out
        self.submit("alice", "s3cret pass", "tok-afterlock", "r4@dest.test",
                    source=self.lab.ip(0, 78))

    def test_05_connections_per_client(self):
        src = self.lab.ip(0, 90)
        conns = [RawClient(self.relay.ip, self.relay.port, source=src) for _ in range(4)]
        try:
            for c in conns:
                self.assertTrue(rr(c).startswith("220"))
            extra = RawClient(self.relay.ip, self.relay.port, source=src)
            r = rr(extra)
            extra.close()
            self.assertTrue(r.startswith("421 4.3.2"), r)
            self.assertIn("Too many connections from your address", r)
            other = RawClient(self.relay.ip, self.relay.port, source=self.lab.ip(0, 91))
            self.assertTrue(rr(other).startswith("220"))
            other.close()
        finally:
            for c in conns:
                c.close()
        # slots free again once the connections are gone
        def fifth_ok():
            c = RawClient(self.relay.ip, self.relay.port, source=src)
            try:
                return rr(c).startswith("220")
            finally:
                c.close()
        wait_for(fifth_ok, timeout=5, what="a new connection accepted")

    def test_05b_network_limits(self):
        """limit_prefix_v4 = 24: two addresses of one /24 are one client."""
        r = self.lab.relay(server={"max_connections_per_client": 2, "limit_prefix_v4": 24,
                                   "max_messages_per_minute": 2},
                           mta_sts={"enabled": "no"}, tlsrpt={"enabled": "no"})
        try:
            a = RawClient(r.ip, r.port, source=self.lab.ip(0, 100))
            b = RawClient(r.ip, r.port, source=self.lab.ip(0, 101))
            self.assertTrue(rr(a).startswith("220"))
            self.assertTrue(rr(b).startswith("220"))
            c = RawClient(r.ip, r.port, source=self.lab.ip(0, 102))
            self.assertTrue(rr(c).startswith("421 4.3.2"))
            c.close()
            r.wait_log(r"refused: too many connections from this client \(\d+ connections, 2 from "
                       + self.lab.net.replace(".", r"\.") + r"0\.0/24\)")
            for x in (a, b):
                x.close()

            def probe_ok():
                p = RawClient(r.ip, r.port, source=self.lab.ip(0, 103))
                try:
                    return rr(p).startswith("220")
                finally:
                    p.close()
            wait_for(probe_ok, timeout=5, what="the /24's connections freed")
            # the message rate is shared by the /24 too
            for i, src in enumerate((100, 101, 102)):
                s = self.lab.smtp(r.ip, r.port, source_address=self.lab.ip(0, src))
                s.ehlo()
                code, text = s.mail("app@example.org")
                self.assertEqual(code, 250 if i < 2 else 450, text)
                s.quit()
        finally:
            self.assertEqual(r.stop(), 0)

    # -- limits for internal clients -----------------------------------------------
    def test_06_rate_limit_and_sender_domains(self):
        r = self.lab.relay(server={"max_messages_per_minute": 2,
                                   "sender_domains": "example.org, apps.example.org"},
                           mta_sts={"enabled": "no"}, tlsrpt={"enabled": "no"})
        try:
            s = r.smtp()
            s.ehlo()
            code, text = s.mail("app@elsewhere.test")
            self.assertEqual(code, 553, text)
            s.rset()
            s.sendmail("app@apps.example.org", ["a@rate.test"], msg("tok-r1", "a@rate.test"))
            s.sendmail("app@example.org", ["b@rate.test"], msg("tok-r2", "b@rate.test"))
            code, text = s.mail("app@example.org")
            self.assertEqual(code, 450, text)
            self.assertIn(b"4.7.1", text)
            s.quit()
            # another client is not limited by this one
            s = self.lab.smtp(r.ip, r.port, source_address=self.lab.ip(0, 92))
            s.ehlo()
            s.sendmail("app@example.org", ["c@rate.test"], msg("tok-r3", "c@rate.test"))
            s.quit()
            wait_for(lambda: all(self.delivered(t) for t in ("tok-r1", "tok-r2", "tok-r3")),
                     timeout=15, what="rate.test deliveries")
        finally:
            self.assertEqual(r.stop(), 0)

    # -- privileges ------------------------------------------------------------------
    def test_07_privilege_drop(self):
        nobody = pwd.getpwnam("nobody")
        r = self.lab.relay(start=False, server={"user": "nobody", "run_as_root": None},
                           mta_sts={"enabled": "no"}, tlsrpt={"enabled": "no"})
        # a privileged port: bound while still root, served as nobody
        r.configure(metrics={"listen": "%s:%d" % (r.ip, PRIVILEGED_METRICS_PORT)})
        os.rmdir(r.state_dir)          # the relay creates it for its user
        os.chmod(r.dir, 0o755)
        for p in (r.config_path,) + tuple(r.config["server"][k] for k in ("tls_cert", "tls_key")):
            os.chmod(os.path.dirname(p), 0o755)
        r.start()
        try:
            with open("/proc/%d/status" % r.pid) as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            uids = status["Uid"].split()
            gids = status["Gid"].split()
            self.assertEqual(uids, [str(nobody.pw_uid)] * 4, status["Uid"])
            self.assertEqual(gids, [str(nobody.pw_gid)] * 4, status["Gid"])
            self.assertEqual(os.stat(r.state_dir).st_uid, nobody.pw_uid)
            r.wait_log(r"dropped privileges: user=nobody uid=%d" % nobody.pw_uid)
            h = http.client.HTTPConnection(r.ip, PRIVILEGED_METRICS_PORT, timeout=10)
            try:
                h.request("GET", "/healthz")
                resp = h.getresponse()
                self.assertEqual((resp.status, resp.read()), (200, b"ok\n"))
            finally:
                h.close()
            s = r.smtp()
            s.starttls(context=self.ctx)
            s.ehlo()
            s.sendmail("app@example.org", ["p@priv.test"], msg("tok-priv", "p@priv.test"))
            s.quit()
            wait_for(lambda: self.delivered("tok-priv"), timeout=15, what="delivery as nobody")
            self.assertEqual(os.stat(os.path.join(r.state_dir, "queue.db")).st_uid, nobody.pw_uid)
        finally:
            self.assertEqual(r.stop(), 0)
        # as root without user and without run_as_root: refuses to start
        p = subprocess.run([BIN, "serve", "-c", r.config_path], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, STRICTRELAY_SERVER_USER="",
                                                STRICTRELAY_SERVER_LISTEN="%s:2599" % r.ip))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("refusing to run as root", p.stderr)

    # -- signals ---------------------------------------------------------------------
    def test_08_sighup_reload_under_load(self):
        users = os.path.join(self.users_dir, "users-hup")
        with open(users, "w") as f:
            f.write(passwd_line("alice", "s3cret pass"))
        r = self.lab.relay(start=False, auth={"users_file": users}, mta_sts={"enabled": "no"},
                           tlsrpt={"enabled": "no"})
        r.configure(server={"submission_listen": "%s:%d" % (r.ip, SUBMISSION)})
        r.start()
        acked, errors = [], []
        stop = threading.Event()

        def load(worker):
            n = 0
            while not stop.is_set():
                try:
                    s = self.lab.smtp(r.ip, r.port)
                    s.ehlo()
                    for _ in range(5):
                        tok = "hup-%d-%d" % (worker, n)
                        n += 1
                        s.sendmail("app@example.org", ["h@hup.test"], msg(tok, "h@hup.test"))
                        acked.append(tok)
                    s.quit()
                except (smtplib.SMTPException, OSError) as e:
                    errors.append(repr(e))
        threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            mark = r.log_mark()
            # a new user and a smaller size limit
            with open(users, "a") as f:
                f.write(passwd_line("carol", "pw-carol"))
            r.configure(server={"max_message_size": "20M"})
            r.reload()
            r.wait_log(r"SIGHUP: reloaded .*changed=server.max_message_size certificate=reloaded users=reloaded",
                       start=mark)
            time.sleep(0.3)
            # an invalid file changes nothing
            mark = r.log_mark()
            r.configure(server={"max_recipients": "lots"})
            r.reload()
            r.wait_log(r"SIGHUP: .*max_recipients.*keeping the running configuration", start=mark)
            r.configure(server={"max_recipients": None})
            # a listen change is reported as needing a restart
            mark = r.log_mark()
            r.configure(server={"listen": "%s:%d, %s:2526" % (r.ip, r.port, r.ip)})
            r.reload()
            r.wait_log(r"take effect only after a restart: server.listen", start=mark)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(errors, [])
        self.assertGreater(len(acked), 20)
        # the new settings are live
        s = self.lab.smtp(r.ip, r.port)
        s.ehlo()
        self.assertEqual(s.esmtp_features.get("size"), str(20 * 1024 * 1024))
        s.quit()
        s = self.lab.smtp(r.ip, SUBMISSION)
        s.starttls(context=self.ctx)
        s.ehlo()
        s.login("carol", "pw-carol")
        s.quit()
        # nothing acknowledged was lost
        wait_for(lambda: len({t for t in acked if self.delivered(t)}) == len(acked), timeout=30,
                 what="every acknowledged message delivered (%d)" % len(acked))
        self.assertEqual(r.stop(), 0)

    def test_09_sigterm_drains(self):
        r = self.lab.relay(mta_sts={"enabled": "no"}, tlsrpt={"enabled": "no"})
        c = RawClient(r.ip, r.port)
        self.assertTrue(rr(c).startswith("220"))
        cc(c, "EHLO client.test")
        self.assertTrue(cc(c, "MAIL FROM:<app@example.org>").startswith("250"))
        self.assertTrue(cc(c, "RCPT TO:<d@drain.test>").startswith("250"))
        self.assertTrue(cc(c, "DATA").startswith("354"))
        c.send(b"Subject: drain\r\n\r\ntoken tok-drain\r\n")
        idle = RawClient(r.ip, r.port)
        self.assertTrue(rr(idle).startswith("220"))
        t0 = time.monotonic()
        r._proc.send_signal(15)
        # the idle client is told at once; new clients are not accepted
        self.assertTrue(rr(idle).startswith("421 4.3.2"))
        idle.close()
        # the transaction in progress finishes: 250, then 421
        reply = cc(c, ".")
        self.assertTrue(reply.startswith("250 2.0.0"), reply)
        self.assertTrue(rr(c).startswith("421"))
        c.close()
        self.assertEqual(r.stop(timeout=15), 0)
        self.assertLess(time.monotonic() - t0, 12)
        # acknowledged before the stop: delivered after the restart
        r.start()
        wait_for(lambda: self.delivered("tok-drain"), timeout=15, what="drained message delivered")
        self.assertEqual(r.stop(), 0)

    def test_10_passwd_cli(self):
        p = subprocess.run([BIN, "passwd", "bad:name"], input="x\n", capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a usable user name", p.stderr)
        p = subprocess.run([BIN, "passwd", "u1"], input="", capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no password", p.stderr)
        line = passwd_line("u1", "pw")
        self.assertRegex(line, r"^u1:\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}\n$")
        self.assertNotEqual(line, passwd_line("u1", "pw"))  # salted
        # a users file with a bad hash stops the relay at start with file:line
        bad = os.path.join(self.users_dir, "users-bad")
        with open(bad, "w") as f:
            f.write(line + "u2:plaintext\n")
        r = self.lab.relay(start=False, auth={"users_file": bad})
        p = subprocess.run([BIN, "serve", "-c", r.config_path], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:2: user u2" % bad, p.stderr)


if __name__ == "__main__":
    unittest.main()
