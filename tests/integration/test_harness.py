#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Self-test of the loopback lab (tests/lib/lab.py), without the relay.

Run: meson test -C build harness --print-errorlogs
 or: /usr/bin/python3 tests/integration/test_harness.py -v
"""

import gzip
import http.client
import json
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import unittest

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(SRCDIR, "tests", "lib")
sys.path.insert(0, LIB)

import lab as labmod  # noqa: E402
from lab import Lab, LabError, listeners, proc_alive, group_members  # noqa: E402

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmax_age: 86400\r\n"

# OpenSSL verify codes as Python's ssl reports them
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_HOSTNAME_MISMATCH = 62


def all_group_pids(lab):
    out = set()
    for p in lab._procs:
        out.add(p.pid)
        out.update(group_members(p.pid))
    return out


class HarnessTest(unittest.TestCase):
    lab = None
    failed = False

    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        lab = cls.lab = Lab("harness")
        try:
            cls._declare(lab)
            lab.start()
        except BaseException:
            lab.close(failed=True)
            raise
        cls.startup = time.monotonic() - t0
        sys.stderr.write("harness: lab (%d certs, %d MX endpoints, %d HTTPS hosts) up in %.2f s "
                         "(processes %.2f s)\n" % (len(lab.ca._cache), len(lab.mx.endpoints),
                                                   len(lab.https.hosts), cls.startup,
                                                   lab.startup_seconds))

    @classmethod
    def _declare(cls, lab):
        d = lab.dns
        d.a("a.example.test", lab.ip(1, 200), lab.ip(1, 201))
        d.aaaa("a.example.test", "::1")
        d.mx("example.test", "mx1.example.test", 10)
        d.mx("example.test", "mx2.example.test", 20)
        d.null_mx("nullmx.test")
        d.txt("_mta-sts.example.test", "v=STSv1; id=20240101T000000")
        d.txt("long.example.test", "x" * 300)
        d.txt("split.example.test", ["v=STSv1; id=ab", "c1"])
        d.txt("quotes.example.test", 'has "quotes", #hash; and \\backslash')
        d.cname("_mta-sts.alias.test", "_mta-sts.example.test")
        d.fault("servfail.test", "servfail")
        d.fault("refused.test", "refused")
        d.fault("timeout.test", "timeout")
        d.fault("trunc.test", "truncate")
        d.txt("big.trunc.test", "y" * 600)
        d.fault("slowdns.test", "delay", delay=0.5)
        d.a("host.slowdns.test", lab.ip(1, 202))

        m = lab.mx
        m.add("mx1.example.test", requiretls=True, dsn=True)
        m.add("mx2.example.test", eightbitmime=False, size=10000, pipelining=False,
              reply={"rcpt": {"nobody@example.test": "550 5.1.1 no such user"},
                     "eom": ["451 4.3.0 try later", None]})
        m.add("greet421.test", reply={"greeting": "421 4.3.2 go away"})
        m.add("closemail.test", close={"mail": True})
        m.add("slowmx.test", delay={"ehlo": 1.5})
        m.add("refused-mx.test", refuse=True)
        m.add("plain.test", starttls=False)
        m.add("expired.test", cert={"expired": True})
        m.add("notyet.test", cert={"not_yet_valid": True})
        m.add("selfsigned.test", cert={"self_signed": True})
        m.add("otherca.test", cert={"other_ca": True})
        m.add("wrongname.test", cert=lab.ca.issue("somebody-else.test"))
        m.add("cnonly.test", cert={"cn_only": True})
        m.add("chain.test", cert={"intermediate": True})
        m.add("rsa.test", cert={"rsa": True})
        m.add("mx.wild.test", cert=lab.ca.issue("*.wild.test"))

        h = lab.https
        h.add_host("mta-sts.example.test", files={
            "/.well-known/mta-sts.txt": POLICY,
            "/html": {"content_type": "text/html", "body": "<p>" + POLICY + "</p>"},
            "/big": "z" * 70000,
            "/redirect": {"status": 301, "location": "https://mta-sts.example.test/.well-known/mta-sts.txt"},
            "/err": {"status": 500, "body": "oops"},
            "/late": {"body": POLICY, "delay": 3},
            "/dribble": {"body": POLICY, "dribble": {"interval": 0.5, "chunk": 1}},
        })
        h.add_host("tlsrpt.example.test", posts={"/report": {}, "/fail": {"status": 503}})
        h.add_host("mta-sts.sni1.test", ip=lab.ip(2, 50), files={"/x": "one"})
        h.add_host("mta-sts.sni2.test", ip=lab.ip(2, 50), files={"/x": "two"})
        h.add_host("mta-sts.badcert.test", cert=lab.ca.issue("mta-sts.elsewhere.test"),
                   files={"/.well-known/mta-sts.txt": POLICY})
        lab.mta_sts("helper.test", mode="testing", mx=["mx1.helper.test", "*.helper.test"], id="h1",
                    extra_ports=(443,))
        cls.rua = lab.tlsrpt_https("helper.test")

    @classmethod
    def tearDownClass(cls):
        if cls.lab is not None:
            cls.lab.close(failed=cls.failed)

    def tearDown(self):
        res = self._outcome.result
        if res.failures or res.errors:
            type(self).failed = True

    # ------------------------------------------------------------------ helpers
    def dig(self, name, rtype="A", *opts):
        return self.lab.dns.dig(name, rtype, *opts)

    def smtp_to(self, name, **kw):
        ip, port = self.lab.mx.addr(name)
        return self.lab.smtp(ip, port, server_hostname=kw.pop("server_hostname", name), **kw)

    def tls_error(self, name, server_hostname=None, cn_fallback=False):
        """None if STARTTLS to MX `name` verifies, else the SSLCertVerificationError."""
        s = self.smtp_to(name, server_hostname=server_hostname or name, timeout=10)
        try:
            s.ehlo()
            s.starttls(context=self.lab.ca.context(cn_fallback=cn_fallback))
            s.ehlo()
            s.quit()
            return None
        except ssl.SSLCertVerificationError as e:
            return e
        finally:
            s.close()

    # ------------------------------------------------------------------ DNS
    def test_dns_records(self):
        self.assertEqual(sorted(self.dig("a.example.test", "A", "+short").split()),
                         [self.lab.ip(1, 200), self.lab.ip(1, 201)])
        self.assertEqual(self.dig("a.example.test", "AAAA", "+short").strip(), "::1")
        self.assertEqual(sorted(self.dig("example.test", "MX", "+short").splitlines()),
                         ["10 mx1.example.test.", "20 mx2.example.test."])
        self.assertEqual(self.dig("mx1.example.test", "A", "+short").strip(),
                         self.lab.mx.addr("mx1.example.test")[0])
        self.assertEqual(self.dig("nullmx.test", "MX", "+short").strip(), "0 .")
        self.assertEqual(self.dig("_mta-sts.example.test", "TXT", "+short").strip(),
                         '"v=STSv1; id=20240101T000000"')
        self.assertEqual(self.dig("long.example.test", "TXT", "+short").strip(),
                         '"%s" "%s"' % ("x" * 255, "x" * 45))
        self.assertEqual(self.dig("split.example.test", "TXT", "+short").strip(),
                         '"v=STSv1; id=ab" "c1"')
        q = self.lab.dns.query("quotes.example.test", "TXT")
        self.assertEqual(b"".join(q.rr[0].rdata.data), b'has "quotes", #hash; and \\backslash')
        out = self.dig("_mta-sts.alias.test", "TXT")
        self.assertRegex(out, r"_mta-sts\.alias\.test\.\s+\d+\s+IN\s+CNAME\s+_mta-sts\.example\.test\.")
        self.assertIn('"v=STSv1; id=20240101T000000"', out)
        # authoritative for .test: NXDOMAIN / NODATA; other names REFUSED
        self.assertIn("status: NXDOMAIN", self.dig("nosuch.example.test"))
        out = self.dig("a.example.test", "MX")
        self.assertIn("status: NOERROR", out)
        self.assertIn("ANSWER: 0", out)
        self.assertIn("status: REFUSED", self.dig("example.com"))

    def test_dns_faults(self):
        self.assertIn("status: SERVFAIL", self.dig("x.servfail.test"))
        self.assertIn("status: REFUSED", self.dig("_mta-sts.refused.test", "TXT"))
        t = time.monotonic()
        out = self.lab.dns.dig("timeout.test", "MX", "+time=1", "+tries=1")
        self.assertRegex(out, r"timed out|no servers could be reached", out)
        self.assertGreaterEqual(time.monotonic() - t, 0.9)
        t = time.monotonic()
        self.assertEqual(self.dig("host.slowdns.test", "A", "+short").strip(), self.lab.ip(1, 202))
        self.assertGreaterEqual(time.monotonic() - t, 0.45)
        # truncation: TC=1 over UDP from the fault server itself, full answer over TCP
        fs = self.lab.dns.fault_server
        udp = self.lab.dns.query("big.trunc.test", "TXT", server=fs)
        self.assertEqual(udp.header.tc, 1)
        self.assertEqual(len(udp.rr), 0)
        tcp = self.lab.dns.query("big.trunc.test", "TXT", server=fs, tcp=True)
        self.assertEqual(tcp.header.tc, 0)
        self.assertEqual(b"".join(tcp.rr[0].rdata.data), b"y" * 600)
        # through dnsmasq the client sees the full answer (dnsmasq retried over TCP
        # upstream); 600 bytes exceed 512, so dig's EDNS0 UDP or TCP gets it
        self.assertIn("y" * 255, self.dig("big.trunc.test", "TXT", "+short"))
        via = self.lab.dns.query("big.trunc.test", "TXT", tcp=True)
        self.assertEqual(b"".join(via.rr[0].rdata.data), b"y" * 600)

    def test_dns_change_and_stub(self):
        d = self.lab.dns
        t = time.monotonic()
        with d.change():
            d.remove("_mta-sts.example.test", "TXT")
            d.txt("_mta-sts.example.test", "v=STSv1; id=2")
            d.a("new.example.test", self.lab.ip(1, 99))
        took = time.monotonic() - t
        self.assertLess(took, 2.0)
        self.assertEqual(self.dig("_mta-sts.example.test", "TXT", "+short").strip(), '"v=STSv1; id=2"')
        self.assertEqual(self.dig("new.example.test", "A", "+short").strip(), self.lab.ip(1, 99))
        d.fault("servfail.test", "nxdomain")           # applies at once (faultdns reload)
        self.assertIn("status: NXDOMAIN", self.dig("x.servfail.test"))
        d.fault("servfail.test", "servfail")
        # restore for other tests
        with d.change():
            d.remove("_mta-sts.example.test", "TXT")
            d.txt("_mta-sts.example.test", "v=STSv1; id=20240101T000000")
        # a port-53 stub + private /etc/resolv.conf for tools that only read resolv.conf
        p = d.run_with_resolv_conf(["dig", "+short", "+time=2", "mx1.example.test"])
        self.assertEqual(p.stdout.strip(), self.lab.mx.addr("mx1.example.test")[0], p.stderr)
        p = d.run_with_resolv_conf(["getent", "ahostsv4", "a.example.test"])
        self.assertIn(self.lab.ip(1, 200), p.stdout, p.stderr)
        with open("/etc/resolv.conf") as f:
            self.assertNotIn(self.lab.ip(0, 253), f.read(), "host resolv.conf must be untouched")

    # ------------------------------------------------------------------ MX peers
    def test_mx_starttls_requiretls_and_spool(self):
        s = self.smtp_to("mx1.example.test")
        code, ehlo = s.ehlo()
        self.assertEqual(code, 250)
        caps = ehlo.decode().splitlines()
        self.assertEqual(caps[0], "mx1.example.test")
        for c in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "STARTTLS", "SMTPUTF8", "DSN"):
            self.assertIn(c, caps)
        self.assertNotIn("REQUIRETLS", caps, "REQUIRETLS must not be offered before STARTTLS")
        self.assertFalse(any(c.startswith("AUTH") for c in caps))
        code, msg = s.docmd("MAIL FROM:<a@relay.test> REQUIRETLS")
        self.assertEqual(code, 555, msg)
        s.rset()
        # STARTTLS verified by Python ssl against the lab CA, host name checked
        s.starttls(context=self.lab.ca.context())
        self.assertIsNotNone(s.sock.getpeercert())
        code, ehlo = s.ehlo()
        self.assertIn("REQUIRETLS", ehlo.decode().splitlines())
        self.assertNotIn("STARTTLS", ehlo.decode().splitlines())
        body = b"Subject: t\r\n\r\nline\r\n.leading dot\r\n"
        s.sendmail("a@relay.test", ["b@example.test", "c@example.test"], body,
                   mail_options=["REQUIRETLS", "BODY=8BITMIME", "ENVID=Q123", "RET=HDRS", "SMTPUTF8"],
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@example.test"])
        s.quit()
        msg = self.lab.mx.wait_messages(1, "mx1.example.test")[-1]
        self.assertEqual(msg["endpoint"], "mx1.example.test")
        self.assertEqual(msg["mail_from"], "a@relay.test")
        self.assertEqual(msg["rcpt_tos"], ["b@example.test", "c@example.test"])
        self.assertEqual(msg["mail_options"], ["REQUIRETLS", "BODY=8BITMIME", "ENVID=Q123", "RET=HDRS",
                                               "SMTPUTF8"])
        self.assertEqual(msg["rcpt_options"][0], ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@example.test"])
        self.assertEqual(msg["tls"]["version"], "TLSv1.3")
        self.assertEqual(msg["tls"]["sni"], "mx1.example.test")
        self.assertEqual(msg["helo"], "client.test")
        self.assertEqual(msg["data"], body)
        self.assertEqual(msg["raw"], body.replace(b"\r\n.", b"\r\n.."))
        sess = [x for x in self.lab.mx.sessions("mx1.example.test") if x["sid"] == msg["session"]][0]
        cmds = [c.upper() for c in self.lab.mx.commands(sess)]
        self.assertIn("STARTTLS", cmds)
        self.assertTrue(any(e["dir"] == "*" and e["line"].startswith("tls TLSv1.3") for e in sess["events"]))

    def test_mx_requiretls_not_offered(self):
        s = self.smtp_to("mx2.example.test")
        s.starttls(context=self.lab.ca.context())
        code, ehlo = s.ehlo()
        caps = ehlo.decode().splitlines()
        self.assertNotIn("REQUIRETLS", caps)
        self.assertNotIn("8BITMIME", caps)
        self.assertNotIn("PIPELINING", caps)
        self.assertIn("SIZE 10000", caps)
        self.assertEqual(s.docmd("MAIL FROM:<a@relay.test> REQUIRETLS")[0], 555)
        self.assertEqual(s.docmd("MAIL FROM:<a@relay.test> BODY=8BITMIME")[0], 555)
        self.assertEqual(s.docmd("MAIL FROM:<a@relay.test> SIZE=20000")[0], 552)
        self.assertEqual(s.docmd("MAIL FROM:<a@relay.test> FOO=BAR")[0], 555)
        self.assertEqual(s.docmd("MAIL FROM:<> SIZE=100")[0], 250)
        s.quit()

    def test_mx_forced_replies(self):
        lab = self.lab
        # per-address RCPT reply; first DATA gets 451, the next one 250
        s = self.smtp_to("mx2.example.test")
        s.ehlo()
        s.mail("a@relay.test")
        self.assertEqual(s.rcpt("nobody@example.test")[0], 550)
        self.assertEqual(s.rcpt("somebody@example.test")[0], 250)
        code, resp = s.data(b"Subject: 1\r\n\r\nx\r\n")
        self.assertEqual((code, resp), (451, b"4.3.0 try later"))
        s.mail("a@relay.test")
        s.rcpt("somebody@example.test")
        self.assertEqual(s.data(b"Subject: 2\r\n\r\nx\r\n")[0], 250)
        s.quit()
        msgs = lab.mx.wait_messages(1, "mx2.example.test")
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]["rcpt_tos"], ["somebody@example.test"])
        self.assertIsNone(msgs[0]["tls"])
        # 421 greeting, then the connection is closed
        with lab.raw(*lab.mx.addr("greet421.test")) as r:
            self.assertEqual(r.read_reply()[0], 421)
            self.assertTrue(r.closed_by_peer())
        # connection closed at MAIL: no reply, no DATA
        with lab.raw(*lab.mx.addr("closemail.test")) as r:
            self.assertEqual(r.read_reply()[0], 220)
            self.assertEqual(r.cmd("EHLO client.test")[0], 250)
            r.send("MAIL FROM:<a@relay.test>\r\n")
            self.assertTrue(r.closed_by_peer())
        sess = lab.mx.sessions("closemail.test")[-1]
        self.assertNotIn("DATA", [c.upper() for c in lab.mx.commands(sess)])
        # delay at EHLO: a client with a short timeout gives up
        with lab.raw(*lab.mx.addr("slowmx.test"), timeout=0.5) as r:
            r.read_reply()
            r.send("EHLO client.test\r\n")
            with self.assertRaises((socket.timeout, TimeoutError)):
                r.read_reply()
        # refuse: nothing listens there
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(lab.mx.addr("refused-mx.test"), timeout=2)
        # change behaviour at run time (acknowledged reload)
        lab.mx.update("plain.test", reply={"mail": "452 4.3.1 insufficient storage"})
        s = self.smtp_to("plain.test")
        s.ehlo()
        self.assertEqual(s.mail("a@relay.test")[0], 452)
        s.quit()
        lab.mx.update("plain.test", reply={})

    def test_mx_pipelining_raw(self):
        lab = self.lab
        with lab.raw(*lab.mx.addr("plain.test")) as r:
            self.assertEqual(r.read_reply()[0], 220)
            code, lines = r.cmd("EHLO client.test")
            self.assertIn("PIPELINING", lines)
            self.assertNotIn("STARTTLS", lines)
            r.send("MAIL FROM:<p@relay.test>\r\nRCPT TO:<x@plain.test>\r\nRCPT TO:<y@plain.test>\r\nDATA\r\n")
            self.assertEqual([r.read_reply()[0] for _ in range(4)], [250, 250, 250, 354])
            r.send("Subject: pipelined\r\n\r\nbare\nLF and .\r\n..\r\n.\r\nQUIT\r\n")
            code, lines = r.read_reply()
            self.assertEqual(code, 250)
            qid = lines[0].rsplit(" ", 1)[1]
            self.assertEqual(r.read_reply()[0], 221)
        msg = [m for m in lab.mx.messages("plain.test") if m["id"] == qid][0]
        self.assertEqual(msg["data"], b"Subject: pipelined\r\n\r\nbare\nLF and .\r\n.\r\n")
        self.assertEqual(msg["rcpt_tos"], ["x@plain.test", "y@plain.test"])

    def test_tls_certificate_failures(self):
        cases = [
            ("expired.test", X509_V_ERR_CERT_HAS_EXPIRED),
            ("notyet.test", X509_V_ERR_CERT_NOT_YET_VALID),
            ("selfsigned.test", X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT),
            ("otherca.test", X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
            ("wrongname.test", X509_V_ERR_HOSTNAME_MISMATCH),
            ("cnonly.test", X509_V_ERR_HOSTNAME_MISMATCH),
        ]
        for name, code in cases:
            with self.subTest(name=name):
                err = self.tls_error(name)
                self.assertIsNotNone(err, "%s verified but should not" % name)
                self.assertEqual(err.verify_code, code, "%s: %s" % (name, err))
        # CN fallback (Python's and OpenSSL's default) accepts the CN-only cert
        self.assertIsNone(self.tls_error("cnonly.test", cn_fallback=True))
        for name in ("chain.test", "rsa.test", "mx1.example.test", "mx.wild.test"):
            with self.subTest(name=name):
                self.assertIsNone(self.tls_error(name))
        # *.wild.test matches one label only
        err = self.tls_error("mx.wild.test", server_hostname="a.mx.wild.test")
        self.assertEqual(err.verify_code, X509_V_ERR_HOSTNAME_MISMATCH)
        # the verdicts agree with openssl verify
        crt, _ = self.lab.ca.issue("expired.test", expired=True)
        p = subprocess.run(["openssl", "verify", "-CAfile", self.lab.ca.file, crt],
                           capture_output=True, text=True)
        self.assertIn("certificate has expired", p.stdout + p.stderr)

    # ------------------------------------------------------------------ HTTPS
    def test_https_policy_host(self):
        get = self.lab.https.get
        st, hdr, body = get("mta-sts.example.test", "/.well-known/mta-sts.txt")
        self.assertEqual((st, hdr["content-type"], body.decode()), (200, "text/plain", POLICY))
        st, hdr, body = get("mta-sts.example.test", "/html")
        self.assertEqual((st, hdr["content-type"]), (200, "text/html"))
        st, hdr, body = get("mta-sts.example.test", "/redirect")
        self.assertEqual(st, 301)
        self.assertEqual(hdr["location"], "https://mta-sts.example.test/.well-known/mta-sts.txt")
        st, hdr, body = get("mta-sts.example.test", "/nope")
        self.assertEqual(st, 404)
        st, hdr, body = get("mta-sts.example.test", "/big")
        self.assertEqual((st, len(body)), (200, 70000))
        st, hdr, body = get("mta-sts.example.test", "/err")
        self.assertEqual((st, body), (500, b"oops"))
        # SNI: two names on one address, each with its own certificate
        self.assertEqual(get("mta-sts.sni1.test", "/x")[2], b"one")
        self.assertEqual(get("mta-sts.sni2.test", "/x")[2], b"two")
        # a host whose certificate is for another name
        with self.assertRaises(ssl.SSLCertVerificationError) as cm:
            get("mta-sts.badcert.test", "/.well-known/mta-sts.txt")
        self.assertEqual(cm.exception.verify_code, X509_V_ERR_HOSTNAME_MISMATCH)
        # curl agrees (name resolved with --resolve, CA = lab CA)
        h = self.lab.https.hosts["mta-sts.example.test"]
        p = subprocess.run(["curl", "-sS", "--cacert", self.lab.ca.file, "--resolve",
                            "mta-sts.example.test:%d:%s" % (h["port"], h["ip"]), "-o", "/dev/null",
                            "-w", "%{http_code} %{content_type}",
                            self.lab.https.url("mta-sts.example.test", "/.well-known/mta-sts.txt")],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.stdout, "200 text/plain", p.stderr)

    def test_helpers(self):
        self.assertEqual(self.dig("_mta-sts.helper.test", "TXT", "+short").strip(), '"v=STSv1; id=h1"')
        st, hdr, body = self.lab.https.get("mta-sts.helper.test", "/.well-known/mta-sts.txt")
        self.assertEqual(body, b"version: STSv1\r\nmode: testing\r\nmx: mx1.helper.test\r\n"
                               b"mx: *.helper.test\r\nmax_age: 86400\r\n")
        self.assertEqual(self.rua, "https://tlsrpt.helper.test:8443/report")
        self.assertEqual(self.dig("_smtp._tls.helper.test", "TXT", "+short").strip(),
                         '"v=TLSRPTv1; rua=%s"' % self.rua)
        self.assertEqual(self.dig("tlsrpt.helper.test", "A", "+short").strip(),
                         self.lab.https.hosts["tlsrpt.helper.test"]["ip"])
        # the reference tool agrees (port-53 stub resolver, port 443, lab CA)
        t = time.monotonic()
        p = self.lab.dns.run_with_resolv_conf(["mta-sts-query", "helper.test"],
                                              env=dict(os.environ, SSL_CERT_FILE=self.lab.ca.file))
        sys.stderr.write("mta-sts-query: %.2f s\n" % (time.monotonic() - t))
        self.assertIn("VALID", p.stdout, p.stdout + p.stderr)
        self.assertIn("'mode': 'testing'", p.stdout)
        p = self.lab.dns.run_with_resolv_conf(["mta-sts-query", "helper.test", "h1"],
                                              env=dict(os.environ, SSL_CERT_FILE=self.lab.ca.file))
        self.assertIn("NOT_CHANGED", p.stdout, p.stdout + p.stderr)
        st, _, _ = self.lab.https.get("tlsrpt.helper.test", "/report", method="POST", body=b"r")
        self.assertEqual(st, 200)
        self.assertEqual(self.lab.https.wait_posts(1, "tlsrpt.helper.test")[0]["body"], b"r")

    def test_https_slow(self):
        get = self.lab.https.get
        t = time.monotonic()
        with self.assertRaises((socket.timeout, TimeoutError)):
            get("mta-sts.example.test", "/late", timeout=1)
        self.assertLess(time.monotonic() - t, 2.5)
        # body dribbled 1 byte / 0.5 s: a reader with a 0.2 s timeout gives up
        h = self.lab.https.hosts["mta-sts.example.test"]
        conn = http.client.HTTPSConnection(h["ip"], h["port"], timeout=0.2,
                                           context=labmod._sni_context(self.lab.ca, h["name"]))
        conn.timeout = 5
        conn.request("GET", "/dribble", headers={"Host": h["name"]})
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        conn.sock.settimeout(0.2)
        got = b""
        with self.assertRaises((socket.timeout, TimeoutError)):
            while True:
                got += r.read(1)
        self.assertLess(len(got), len(POLICY))
        conn.close()

    def test_https_post_capture_and_change(self):
        https = self.lab.https
        report = gzip.compress(json.dumps({"organization-name": "x"}).encode())
        h = https.hosts["tlsrpt.example.test"]
        conn = http.client.HTTPSConnection(h["ip"], h["port"], timeout=10,
                                           context=labmod._sni_context(self.lab.ca, h["name"]))
        conn.request("POST", "/report", body=report,
                     headers={"Host": h["name"], "Content-Type": "application/tlsrpt+gzip"})
        r = conn.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        conn.request("POST", "/fail", body=b"{}", headers={"Host": h["name"],
                                                         "Content-Type": "application/tlsrpt+json"})
        r = conn.getresponse()
        r.read()
        self.assertEqual(r.status, 503)
        conn.close()
        posts = https.wait_posts(2, "tlsrpt.example.test")
        self.assertEqual(posts[0]["path"], "/report")
        self.assertEqual(posts[0]["body"], report)
        self.assertEqual(posts[0]["headers"]["Content-Type"], "application/tlsrpt+gzip")
        self.assertEqual(posts[1]["path"], "/fail")
        # changing a file restarts nginx
        new = POLICY.replace("enforce", "testing")
        https.set_file("mta-sts.example.test", "/.well-known/mta-sts.txt", new)
        self.assertEqual(https.get("mta-sts.example.test", "/.well-known/mta-sts.txt")[2].decode(), new)
        https.set_file("mta-sts.example.test", "/.well-known/mta-sts.txt", POLICY)

    # ------------------------------------------------------------------ relay plumbing (stand-in binary)
    def test_relay_plumbing_with_stand_in(self):
        lab = self.lab
        fake = os.path.join(LIB, "fakerelay.py")
        r = lab.relay(bin=fake, server={"max_message_size": "1M", "relay_networks": None},
                      routes={"example.internal": "[%s]:2525 tls=verify" % lab.ip(1, 1)})
        with open(r.config_path) as f:
            text = f.read()
        self.assertIn("listen = %s:2525" % lab.ip(0, 1), text)
        self.assertIn("dns_servers = %s:5353" % lab.ip(0, 1), text)
        self.assertIn("ca_file = %s" % lab.ca.file, text)
        self.assertIn("smtp_port = 2525", text)
        self.assertIn("https_port = 8443", text)
        self.assertIn("[routes]\nexample.internal = [%s]:2525 tls=verify" % lab.ip(1, 1), text)
        self.assertNotIn("relay_networks", text)
        self.assertTrue(r.running())
        rc, out = lab.swaks("--to", "bob@example.test", "--from", "a@relay.test", "--quit-after", "RCPT")
        self.assertEqual(rc, 0, out)
        s = lab.smtp(source_address=lab.ip(0, 2))
        s.ehlo()
        s.quit()
        r.wait_log(r"connect peer=%s" % re.escape(lab.ip(0, 2)))
        p = r.cli("queue", "list")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "fakerelay queue list config=%s" % r.config_path)
        mark = r.log_mark()
        r.restart()
        self.assertTrue(r.running())
        r.wait_log(r"listening on", start=mark)
        self.assertEqual(r.stop(), 0)
        self.assertIn("stopping on SIGTERM", r.log_text())
        r.start()
        self.assertEqual(r.kill9(), -signal.SIGKILL)
        # a second relay gets the next address
        r2 = lab.relay(bin=fake)
        self.assertEqual(r2.ip, lab.ip(0, 2))
        self.assertTrue(labmod.is_listening(r2.ip, 2525))
        r2.stop()
        # a relay that cannot start is reported with its log
        bad = lab.relay(bin="/bin/false", start=False)
        with self.assertRaises(LabError) as cm:
            bad.start(timeout=3)
        self.assertIn("exited", str(cm.exception))

    # ------------------------------------------------------------------ Postfix
    def test_postfix_mx(self):
        lab = self.lab
        t = time.monotonic()
        pf = lab.postfix_mx(["mx.pf.test", {"name": "plain.pf.test", "tls": "none"}])
        took = time.monotonic() - t
        self.assertLess(took, 5)
        s = lab.smtp(*pf.addr("mx.pf.test"), server_hostname="mx.pf.test")
        s.ehlo()
        s.starttls(context=lab.ca.context())
        code, ehlo = s.ehlo()
        self.assertNotIn("REQUIRETLS", ehlo.decode())
        with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
            s.sendmail("a@relay.test", ["b@pf.test"], b"x", mail_options=["REQUIRETLS"])
        self.assertEqual(cm.exception.smtp_code, 555)
        s.rset()
        s.sendmail("a@relay.test", ["b@pf.test"], b"Subject: to postfix\r\n\r\nhello\r\n")
        s.quit()
        msgs = pf.wait_messages(1)
        m = msgs[0]["message"]
        self.assertEqual(m["Subject"], "to postfix")
        self.assertIn("using TLSv1.3", str(m["Received"]))
        self.assertEqual(self.dig("plain.pf.test", "A", "+short").strip(), pf.addr("plain.pf.test")[0])
        pf.stop()
        self.assertFalse(labmod.is_listening(*pf.addr("mx.pf.test")))


class LifecycleTest(unittest.TestCase):
    """Everything a lab started is gone after it exits: on an exception, and on SIGTERM."""

    def assert_gone(self, pids, net, directory):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            alive = [p for p in pids if proc_alive(p)]
            left = listeners(net)
            if not alive and not left:
                break
            time.sleep(0.05)
        self.assertEqual(alive, [], "processes still alive")
        self.assertEqual(left, [], "still listening on %s*" % net)
        self.assertFalse(os.path.exists(directory), "%s not removed" % directory)

    def test_cleanup_on_exception(self):
        seen = {}
        with self.assertRaises(RuntimeError):
            with Lab("harness-exc") as lab:
                lab.mx.add("mx.x.test")
                lab.https.add_host("mta-sts.x.test", files={"/a": "b"})
                lab.start()
                lab.dns.stub_resolv_conf()
                lab.postfix_mx(["pf.x.test"])
                s = lab.smtp(*lab.mx.addr("mx.x.test"))     # an open session at exit
                s.ehlo()
                seen.update(pids=all_group_pids(lab), net=lab.net, dir=lab.dir, slot=lab.slot)
                self.assertGreaterEqual(len(seen["pids"]), 8)
                self.assertTrue(listeners(lab.net))
                raise RuntimeError("boom")
        s.close()
        self.assert_gone(seen["pids"], seen["net"], seen["dir"])

    def test_cleanup_on_sigterm(self):
        script = textwrap.dedent("""
            import json, sys, time
            sys.path.insert(0, %r)
            from lab import Lab, group_members
            with Lab("harness-sigterm") as lab:
                lab.mx.add("mx.y.test")
                lab.https.add_host("mta-sts.y.test", files={"/a": "b"})
                lab.start()
                pids = set()
                for p in lab._procs:
                    pids.add(p.pid)
                    pids.update(group_members(p.pid))
                print(json.dumps({"pids": sorted(pids), "net": lab.net, "dir": lab.dir}), flush=True)
                time.sleep(20)
        """ % LIB)
        env = dict(os.environ)
        env.pop("STRICTRELAY_KEEP", None)
        p = subprocess.Popen(["/usr/bin/python3", "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, text=True)
        try:
            line = p.stdout.readline()
            if not line:
                self.fail("child lab did not start: %s" % p.stderr.read())
            info = json.loads(line)
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=20)       # also proves nothing holds our pipes
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 128 + signal.SIGTERM, "child stderr:\n" + err)
        self.assert_gone(info["pids"], info["net"], info["dir"])

    def test_parallel_slots(self):
        with Lab("harness-a") as a, Lab("harness-b") as b:
            self.assertNotEqual(a.slot, b.slot)
            self.assertTrue(a.ip(1, 1).startswith("127.%d." % a.slot))
            a.start()
            b.start()
            self.assertEqual(a.dns.dig("ready.lab.test", "A", "+short").strip(), a.ip(0, 1))
            self.assertEqual(b.dns.dig("ready.lab.test", "A", "+short").strip(), b.ip(0, 1))


if __name__ == "__main__":
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2)
    sys.stderr.write("harness self-test: %.1f s\n" % (time.monotonic() - t0))
    sys.exit(0 if prog.result.wasSuccessful() else 1)
