#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""MTA-STS (RFC 8461) on delivery, against real peers on loopback, with every
policy verdict cross-checked against the reference implementation.

What runs: one Lab for the whole file (tests/lib/lab.py): dnsmasq with every
_mta-sts TXT record, nginx serving every policy host (on the relay's port
8443 and on 443 for the reference tool), aiosmtpd MX endpoints with good and
bad certificates, and one or more strictrelay processes per test. Every test
uses its own domains, all declared up front in _declare(); the domain's first
letter says which test owns it (e- enforce, t- testing, n- none, f- policy
host failures, p- the bulk case 05c, x- TXT cases, c- cache, r- routes and
TLS-Required; w1, w2, notin, two, imp, imp2 for mx patterns).

What is checked, per test:
  01  enforce against MX certificates that are valid, for another name,
      expired, self-signed, and no STARTTLS: only the valid one gets the
      message; the others are deferred with 4.7.5 (certificate) or 4.7.10 (no
      STARTTLS), none of them ever sees MAIL/RCPT/DATA, and tls_sessions says
      why (certificate-host-mismatch, -expired, -not-trusted,
      starttls-not-supported) with the policy lines and mx patterns.
  01b the per-recipient deferral line names the policy mode (sts=enforce).
  02  testing: the same five MX all get the message; the failures are
      recorded and logged as "sts=testing enforce mode would refuse this MX".
  03  none (one of them without any mx line, STS-31): all delivered as without
      a policy; tls_sessions policy_type no-policy-found; the none policy is
      cached all the same.
  04  mx patterns at delivery (STS-50a/51/53/58/59): "*.w1.test" (written in
      mixed case) matches mx1.w1.test, not a.b.w1.test nor w1.test itself;
      those two are logged "not used" (no connection) in preference order,
      and recorded as validation-failure/mx-not-in-policy; an MX outside the
      policy alone is deferred 4.7.5; a first-preference MX outside the policy
      is skipped like an unreachable one and the second delivers; testing
      mode only logs a non-matching MX; the implicit MX (the domain's own A
      record) is matched as the domain name.
  05  policy host failures with no cached policy: a 301 to a valid policy (not
      followed), 404, a body of 65537 bytes, Content-Type text/html, a policy
      host certificate for another name and one with only a CN, headers
      later than fetch_timeout (2 s), a body dribbled for longer than it,
      connection refused, no address for the policy host, max_age above
      31557600 (D2), a bad mx line (D3), enforce without mx, "Mode:" in the
      wrong case. Each domain counts as having no policy: the message goes
      to its self-signed MX opportunistically, and one tls_sessions row
      (empty mx_host) carries sts-policy-fetch-error / sts-policy-invalid /
      sts-webpki-invalid.
      Accepted: exactly 65536 bytes, "text/plain; charset=utf-8",
      "Text/Plain; charset=ISO-8859-1", LF-only lines. A second message
      finds the failed id in its 5-minute back-off (STS-17): no new
      request, no new row.
  05c 40 policy fetches failing certificate verification next to 40 SMTP
      sessions of the same relay: every message is delivered, no SMTP/TLS
      session "ends" early.
  06  TXT records: none, two v=STSv1, an invalid id (id=2024-01-01), "V=STSv1"
      and SPF only -> no policy and no request to the policy host; SPF next
      to a valid record, a record in two character-strings (id joined), and
      "v=STSv1 ;id=..." (D1) -> the policy is used. A CNAME'd _mta-sts
      record is followed, the policy still fetched from mta-sts.DOMAIN
      (STS-01); a subdomain never uses its parent's policy (STS-07).
  07  cache, id changed: the new policy is fetched and applied at once, the
      sts_policies row is replaced; no conditional request (STS-14).
  08  cache, same id: a changed policy file is not fetched, neither by the
      running relay nor after a restart (the id is compared with SQLite).
  09  cache and DNS: TXT SERVFAIL, TXT removed and TXT invalid keep the
      cached enforce policy (STS-06/19): the bad-certificate MX stays
      refused, also after a restart.
  10  cache, fetch failing for a new id: the old policy stays (STS-41), the
      failure is recorded, the failing id is not fetched again (STS-17).
  11  restart: with the policy host gone, a restarted relay still enforces
      the policy it cached in SQLite (STS-40).
  11b proactive refresh (STS-20): a policy used lately and fetched over a day
      ago is fetched again after a restart, same id; an unused one is not.
  12  max_age 1: once expired and with the policy host gone, no policy
      applies any more.
  13  a new "none" policy replaces a cached enforce policy, in memory and in
      SQLite, and stays cached when the TXT goes away (STS-56).
  13b a failing fetch while a "none" policy is cached is neither logged as a
      warning nor recorded for the TLS report (STS-56/60).
  14  a [routes] entry with a bracketed next hop: no MTA-STS for the
      recipient domain (delivered with tls=may to a self-signed MX); a route
      to a host name makes that host the policy domain (STS-08).
  15  "TLS-Required: No" (swaks --header): delivered to the self-signed MX of
      an enforce domain whose policy is cached (RTLS-30), the header kept,
      the session recorded with tls_required_no=1 and no policy.

How the relay is observed: its log (per-recipient lines "id=.. to=<..> ..
status=.. dsn=..", connection lines "dest=.. mx=.. result=..", "not used:"
lines, mta-sts lines), its SQLite tables tls_sessions and sts_policies
(read-only), the MX transcripts, and the policy requests themselves: every
policy URL is a capture route of the lab's HTTP backend, so each GET is
recorded with its headers (lab.https.posts(host)); the relay's requests are
told apart from the reference tool's by their User-Agent.

Cross-check with the reference (postfix-mta-sts-resolver 1.1.2, Debian):
for every domain where a fetch happens (and the TXT cases, where it must
not), `mta-sts-query DOMAIN [KNOWN_ID]` runs right after strictrelay made its
decision, with the lab's state unchanged. The tool only knows
/etc/resolv.conf, port 443 and Python's default trust store, so it runs
through lab.dns.run_with_resolv_conf() (unshare --mount with a private
resolv.conf naming a port-53 stub that forwards to the lab DNS),
SSL_CERT_FILE = the lab CA, and every policy host also listens on 443
(extra_ports). Several queries run in parallel. strictrelay's verdict comes
from its own records: a tls_sessions row with an empty mx_host written in
this step -> FETCH_ERROR; else the sts_policies row -> VALID with its id,
mode, max_age and mx list; else NONE. The reference must say the same
(VALID: same id, mode, max_age and mx list, compared case-insensitively),
except where the two differ by design; there the reference's answer is
asserted too, so a change on either side is noticed:
  - f-cn.test: the reference accepts a policy host certificate with only a
    CN (Python's ssl falls back to the CN, hostname_checks_common_name);
    strictrelay needs a SAN DNS-ID (STS-11, NAME-01): sts-webpki-invalid.
  - f-badmx.test: the reference keeps any text as an mx pattern; strictrelay
    rejects the whole policy for one bad mx line (D3): sts-policy-invalid.
  - x-badid.test: the reference does not check the id syntax
    (id=2024-01-01 is fetched and VALID); strictrelay ignores the record
    (STS-04) and does not fetch: NONE.
  D2 (max_age 31557601) is not a difference: both reject it (FETCH_ERROR).
  Nor is "same id" (test 08): `mta-sts-query D ID` answers NOT_CHANGED,
  strictrelay does not fetch.
The whole comparison table is printed to stderr at the end.

Relays: [queue] retry_schedule = 1h, so a deferred message stays put and
every delivery attempt in a test is a new message (deterministic); [mta_sts]
fetch_timeout = 2s. Each relay is stopped when its test ends: exit status 0,
no sanitizer report, no error-level log line. Where the relay's TXT cache
(the lab's TTL of 1 s) must run out after a DNS change, the test waits that
TTL; the 60 s memory copy of the cache is never waited for (a restart
re-reads SQLite).

Checklist: STS-01/02/03/04/05/06/07/08/10/11/13/14/15/16/17/18/19/20/30/31/32/33/
34/40/41/50/51/52/53/55/56/58/59/60 (parts), RTLS-30/31, NAME-01,
D1/D2/D3/D8.

Run: meson test -C build mta_sts --print-errorlogs
 or: STRICTRELAY_BIN=$PWD/build/strictrelay /usr/bin/python3 tests/integration/test_mta_sts.py
"""

import ast
import collections
import concurrent.futures
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

from lab import Lab, LabCase, wait_for  # noqa: E402
from relaycase import check_relay_stopped_clean, log_tail, parse_kv  # noqa: E402

QID = r"[0-9A-Z]{12}"
POLICY_PATH = "/.well-known/mta-sts.txt"
SENDER = "alice@sender.test"
SENDER_MX = "mx1.sender.test"
RELAY_CONFIG = {"queue": {"retry_schedule": "1h"}, "mta_sts": {"fetch_timeout": "2s"}}
FETCH_FAILURES = ("sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid")

# The five MX certificate cases of tests 01-03: suffix -> (cert option, lab
# MX options, tls_sessions result_type, enforce deferral code, why in the
# testing-mode log line, enforce reason)
CERT_CASES = collections.OrderedDict([
    ("ok", (None, {}, "success", None, None, None)),
    ("name", ("wrongname", {}, "certificate-host-mismatch", "4.7.5", "certificate-host-mismatch",
              r"^certificate of the MX not valid for mx1\.%s: certificate-host-mismatch \(")),
    ("exp", ({"expired": True}, {}, "certificate-expired", "4.7.5", "certificate-expired",
             r"^certificate of the MX not valid for mx1\.%s: certificate-expired \(")),
    ("self", ({"self_signed": True}, {}, "certificate-not-trusted", "4.7.5", "certificate-not-trusted",
              r"^certificate of the MX not valid for mx1\.%s: certificate-not-trusted \(")),
    ("plain", (None, {"starttls": False}, "starttls-not-supported", "4.7.10",
               "the MX does not support STARTTLS",
               r"^TLS is required but the MX does not offer STARTTLS$")),
])


def policy_text(mode="enforce", mx=(), max_age=86400, eol="\r\n"):
    lines = ["version: STSv1", "mode: %s" % mode] + ["mx: %s" % m for m in mx]
    lines.append("max_age: %d" % max_age)
    return eol.join(lines) + eol


def padded_policy(domain, total):
    """A valid enforce policy padded with extension lines to exactly total bytes."""
    text = policy_text("enforce", ["mx1." + domain]).encode()
    room = total - len(text)
    while room > 1009 + 10:
        text += b"x-pad: " + b"a" * 1000 + b"\r\n"          # 1009 bytes
        room -= 1009
    text += b"x-pad: " + b"a" * (room - 9) + b"\r\n"
    assert len(text) == total, len(text)
    return text


def make_msg(msgid, rcpt, extra=""):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: mta-sts test\r\nMessage-ID: <%s>\r\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n%s\r\nHello.\r\n" % (
                SENDER, rcpt, msgid, extra)).encode()


def message_id(data):
    m = re.search(rb"^Message-ID:\s*<([^>]*)>", data, re.M | re.I)
    return m.group(1).decode() if m else None


def policy_mx_lines(text):
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        k, sep, v = line.partition(":")
        if sep and k.strip() == "mx":
            out.append(v.strip())
    return out


class MtaStsTest(LabCase):
    """One lab for the whole file; one or more relays per test."""

    timing_label = "mta_sts"
    xcheck_rows = []        # (domain, step, reference, strictrelay, note)

    # domain -> (reference verdict, why) where the two differ on purpose
    BY_DESIGN = {
        "f-cn.test": ("VALID", "STS-11/NAME-01: a CN-only policy host certificate; the reference's "
                               "Python ssl falls back to the CN, strictrelay needs a SAN DNS-ID"),
        "f-badmx.test": ("VALID", "D3: the reference keeps a bad mx line as a pattern; strictrelay "
                                  "rejects the whole policy"),
        "x-badid.test": ("VALID", "STS-04: the reference does not check the id syntax and fetches; "
                                  "strictrelay ignores the invalid record"),
    }

    @classmethod
    def setUpClass(cls):
        cls.lab = lab = Lab("mta_sts")
        try:
            cls._declare(lab)
            lab.start()
        except BaseException:
            lab.close(failed=True)
            raise

    @classmethod
    def publish(cls, lab, domain, mode="enforce", mx=None, max_age=86400, id="1", body=None, txt=True,
                cert=None, **response):
        """_mta-sts TXT plus a policy host whose policy URL records every
        request (a capture route), also on port 443 for mta-sts-query."""
        if body is None:
            body = policy_text(mode, mx if mx is not None else ["mx1." + domain], max_age)
        spec = dict(response, body=body)
        if txt:
            lab.dns.txt("_mta-sts." + domain, "v=STSv1; id=%s" % id)
        return lab.https.add_host("mta-sts." + domain, cert=cert, posts={POLICY_PATH: spec},
                                  extra_ports=(443,))

    @classmethod
    def _declare(cls, lab):
        mx, dns = lab.mx, lab.dns
        mx.add(SENDER_MX)
        dns.mx("sender.test", SENDER_MX)
        # 01-03: each mode against the five MX certificate cases
        for prefix, mode in (("e", "enforce"), ("t", "testing"), ("n", "none")):
            for suffix, (cert, opts, _, _, _, _) in CERT_CASES.items():
                dom = "%s-%s.test" % (prefix, suffix)
                name = "mx1." + dom
                if cert == "wrongname":
                    mx.add(name, cert=lab.ca.issue("somebody-else.test"), **opts)
                else:
                    mx.add(name, cert=cert, **opts)
                dns.mx(dom, name)
                pol_mx = [] if dom == "n-plain.test" else [name]
                cls.publish(lab, dom, mode=mode, mx=pol_mx, id=prefix + "1")
        # 04: mx patterns
        for name in ("a.b.w1.test", "w1.test", "mx1.w1.test", "a.b.w2.test", "mx1.notin.test",
                     "mx1.two.test", "mx2.two.test", "imp.test", "imp2.test"):
            mx.add(name)
        dns.mx("w1.test", "a.b.w1.test", 10)
        dns.mx("w1.test", "w1.test", 20)
        dns.mx("w1.test", "mx1.w1.test", 30)
        cls.publish(lab, "w1.test", mx=["*.W1.test"], id="w1")
        dns.mx("w2.test", "a.b.w2.test", 10)
        cls.publish(lab, "w2.test", mode="testing", mx=["*.w2.test"], id="w2")
        dns.mx("notin.test", "mx1.notin.test")
        cls.publish(lab, "notin.test", mx=["mx1.elsewhere.test"], id="n1")
        dns.mx("two.test", "mx1.two.test", 10)
        dns.mx("two.test", "mx2.two.test", 20)
        cls.publish(lab, "two.test", mx=["mx2.two.test"], id="t1")
        cls.publish(lab, "imp.test", mx=["*.imp.test"], id="i1")        # implicit MX: imp.test
        cls.publish(lab, "imp2.test", mx=["imp2.test"], id="i2")
        # 05: policy host failures; the MX of each is self-signed (valid where
        # the policy is accepted)
        for dom in cls.FETCH_CASES:
            ok = cls.FETCH_CASES[dom][0] == "VALID"
            mx.add("mx1." + dom, cert=None if ok else {"self_signed": True})
            dns.mx(dom, "mx1." + dom)
        p = cls.publish
        p(lab, "f-redir.test", status=301, body="",
          location="https://mta-sts.e-ok.test:8443" + POLICY_PATH)
        p(lab, "f-404.test", status=404, body="not here\n")
        p(lab, "f-big.test", body=padded_policy("f-big.test", 65537))
        p(lab, "f-64k.test", body=padded_policy("f-64k.test", 65536))
        p(lab, "f-html.test", content_type="text/html")
        p(lab, "f-name.test", cert=lab.ca.issue("mta-sts.elsewhere.test"))
        p(lab, "f-cn.test", cert={"cn_only": True})
        p(lab, "f-slow.test", delay=8)
        p(lab, "f-drip.test", dribble={"interval": 0.1, "chunk": 1})    # ~7.5 s for the body
        p(lab, "f-ctcase.test", content_type="Text/Plain; charset=ISO-8859-1")
        p(lab, "f-utf8.test", content_type="text/plain; charset=utf-8")
        p(lab, "f-lf.test", body=policy_text("enforce", ["mx1.f-lf.test"], eol="\n"))
        p(lab, "f-maxage.test", max_age=31557601)
        p(lab, "f-badmx.test", mx=["mx1.f-badmx.test", "mx_2.f-badmx.test"])
        p(lab, "f-nomx.test", mx=[])
        p(lab, "f-mode.test", body="version: STSv1\r\nMode: enforce\r\nmx: mx1.f-mode.test\r\n"
                                   "max_age: 86400\r\n")
        dns.txt("_mta-sts.f-refused.test", "v=STSv1; id=1")
        dns.a("mta-sts.f-refused.test", lab.ip(2, 250))             # nothing listens there
        dns.txt("_mta-sts.f-nohost.test", "v=STSv1; id=1")           # mta-sts.f-nohost.test: NXDOMAIN
        # 05c: many policy hosts with a bad certificate (one IP, SNI), one MX
        mx.add("mx1.pbulk.test", cert={"self_signed": True})
        elsewhere = lab.ca.issue("mta-sts.elsewhere.test")
        for i in range(cls.BULK):
            dom = "p%d.test" % i
            dns.mx(dom, "mx1.pbulk.test")
            dns.txt("_mta-sts." + dom, "v=STSv1; id=1")
            lab.https.add_host("mta-sts." + dom, ip=lab.ip(2, 200), cert=elsewhere,
                               files={POLICY_PATH: policy_text("enforce", ["mx1.pbulk.test"])})
        # 06: TXT records
        for dom, (kind, records) in cls.TXT_CASES.items():
            mx.add("mx1." + dom, cert=None if kind == "used" else {"self_signed": True})
            dns.mx(dom, "mx1." + dom)
            p(lab, dom, txt=False)
            for rec in records:
                if isinstance(rec, tuple) and rec[0] == "CNAME":
                    dns.cname("_mta-sts." + dom, rec[1])
                else:
                    dns.txt("_mta-sts." + dom, rec)
        # STS-01: the TXT the CNAME points to (the policy itself stays at
        # mta-sts.x-cname.test); STS-07: a policy for the parent domain only,
        # which would refuse the self-signed mx1.sub.x-parent.test if used
        dns.txt("_mta-sts.sts-provider.test", "v=STSv1; id=cn1")
        p(lab, "x-parent.test", mx=["mx1.sub.x-parent.test"], id="par1")
        # 07-13: cache; every MX self-signed except c-same's
        for dom, mode, kw in (("c-idchg.test", "testing", {"id": "v1"}),
                              ("c-same.test", "enforce", {"id": "s1"}),
                              ("c-dns.test", "enforce", {"id": "d1"}),
                              ("c-gone.test", "enforce", {"id": "g1"}),
                              ("c-badtxt.test", "enforce", {"id": "b1"}),
                              ("c-fail.test", "enforce", {"id": "f1"}),
                              ("c-restart.test", "enforce", {"id": "r1"}),
                              ("c-maxage.test", "enforce", {"id": "m1", "max_age": 1}),
                              ("c-none.test", "enforce", {"id": "n1"}),
                              ("c-refresh.test", "enforce", {"id": "rf1"}),
                              ("c-unused.test", "enforce", {"id": "u1"}),
                              ("c-nonefail.test", "none", {"id": "x1"})):
            mx.add("mx1." + dom, cert=None if dom == "c-same.test" else {"self_signed": True})
            dns.mx(dom, "mx1." + dom)
            p(lab, dom, mode=mode, **kw)
        # 14-15: routes and TLS-Required: No
        for dom in ("r-route.test", "sh.test", "r-tlsno.test"):
            mx.add("mx1." + dom, cert={"self_signed": True})
            dns.mx(dom, "mx1." + dom)
            p(lab, dom, id="r1")

    # domain -> (what strictrelay must conclude, result_type, detail regex)
    FETCH_CASES = collections.OrderedDict([
        ("f-redir.test", ("FETCH_ERROR", "sts-policy-fetch-error",
                          r"^policy host mta-sts\.f-redir\.test answered HTTP 301$")),
        ("f-404.test", ("FETCH_ERROR", "sts-policy-fetch-error",
                        r"^policy host mta-sts\.f-404\.test answered HTTP 404$")),
        ("f-big.test", ("FETCH_ERROR", "sts-policy-fetch-error",
                        r"^fetching the policy from mta-sts\.f-big\.test: .*exceeds 65536 bytes")),
        ("f-html.test", ("FETCH_ERROR", "sts-policy-invalid",
                         r'^policy host mta-sts\.f-html\.test sent media type "text/html", not text/plain$')),
        ("f-name.test", ("FETCH_ERROR", "sts-webpki-invalid",
                         r"^policy host mta-sts\.f-name\.test: .*hostname mismatch")),
        ("f-cn.test", ("FETCH_ERROR", "sts-webpki-invalid",
                       r"^policy host mta-sts\.f-cn\.test: .*hostname mismatch")),
        ("f-slow.test", ("FETCH_ERROR", "sts-policy-fetch-error",
                         r"^fetching the policy from mta-sts\.f-slow\.test: .*timed out.* 0 bytes received")),
        ("f-drip.test", ("FETCH_ERROR", "sts-policy-fetch-error",
                         r"^fetching the policy from mta-sts\.f-drip\.test: .*timed out.* [1-9]\d* out of \d+ bytes")),
        ("f-refused.test", ("FETCH_ERROR", "sts-policy-fetch-error",
                            r"^fetching the policy from mta-sts\.f-refused\.test: .*connect")),
        ("f-nohost.test", ("FETCH_ERROR", "sts-policy-fetch-error",
                           r"^fetching the policy from mta-sts\.f-nohost\.test: .*NXDOMAIN")),
        ("f-maxage.test", ("FETCH_ERROR", "sts-policy-invalid",
                           r"^the policy from mta-sts\.f-maxage\.test is invalid: line 4: "
                           r"max_age 31557601 is above 31557600$")),
        ("f-badmx.test", ("FETCH_ERROR", "sts-policy-invalid",
                          r'^the policy from mta-sts\.f-badmx\.test is invalid: line 4: '
                          r'bad mx pattern "?mx_2\.f-badmx\.test"?$')),
        ("f-nomx.test", ("FETCH_ERROR", "sts-policy-invalid",
                         r"^the policy from mta-sts\.f-nomx\.test is invalid: no mx with mode enforce$")),
        ("f-mode.test", ("FETCH_ERROR", "sts-policy-invalid",
                         r"^the policy from mta-sts\.f-mode\.test is invalid: missing mode$")),
        ("f-64k.test", ("VALID", None, None)),
        ("f-utf8.test", ("VALID", None, None)),
        ("f-ctcase.test", ("VALID", None, None)),
        ("f-lf.test", ("VALID", None, None)),
    ])

    BULK = 40

    # domain -> ("used" | "ignored", TXT records at _mta-sts.DOMAIN)
    TXT_CASES = collections.OrderedDict([
        ("x-missing.test", ("ignored", [])),
        ("x-two.test", ("ignored", ["v=STSv1; id=1", "v=STSv1; id=2"])),
        ("x-badid.test", ("ignored", ["v=STSv1; id=2024-01-01"])),
        ("x-upper.test", ("ignored", ["V=STSv1; id=1"])),
        ("x-spfonly.test", ("ignored", ["v=spf1 -all"])),
        ("x-spf.test", ("used", ["v=spf1 -all", "v=STSv1; id=spf1"])),
        ("x-multi.test", ("used", [["v=STSv1; id=ab", "c1"]])),
        ("x-ws.test", ("used", ["v=STSv1 ;id=ws1"])),
        ("x-cname.test", ("used", [("CNAME", "_mta-sts.sts-provider.test")])),      # STS-01
        ("sub.x-parent.test", ("ignored", [])),                                      # STS-07
    ])
    TXT_IDS = {"x-spf.test": "spf1", "x-multi.test": "abc1", "x-ws.test": "ws1", "x-cname.test": "cn1"}

    @classmethod
    def tearDownClass(cls):
        if cls.xcheck_rows:
            out = ["", "mta-sts-query cross-check (%d comparisons):" % len(cls.xcheck_rows),
                   "  %-16s %-12s %-44s %-44s %s" % ("domain", "step", "reference", "strictrelay", "note")]
            for row in cls.xcheck_rows:
                out.append("  %-16s %-12s %-44s %-44s %s" % row)
            sys.stderr.write("\n".join(out) + "\n")
        super().tearDownClass()

    # -- relays --------------------------------------------------------------------
    def relay(self, **config):
        cfg = {k: dict(v) for k, v in RELAY_CONFIG.items()}
        for sec, keys in config.items():
            cfg.setdefault(sec, {}).update(keys)
        r = self.lab.relay(**cfg)
        r.stopped_rc = None
        self.addCleanup(self.check_relay_end, r)
        return r

    def stop_relay(self, r):
        """Stops a relay in the middle of a test (for a restart): exit status 0."""
        rc = r.stop()
        self.assertEqual(rc, 0, "relay %d exit status on SIGTERM; log:\n%s" % (r.index, log_tail(r)))

    def check_relay_end(self, r):
        check_relay_stopped_clean(self, r)

    # -- submitting --------------------------------------------------------------------
    def submit(self, r, rcpt, msgid, extra=""):
        """One message over SMTP; returns its queue id."""
        s = smtplib.SMTP(r.ip, r.port, local_hostname="client.test", timeout=30)
        try:
            s.ehlo()
            code, resp = s.mail(SENDER)
            self.assertEqual(code, 250, resp)
            code, resp = s.rcpt(rcpt)
            self.assertEqual(code, 250, "RCPT %s: %r" % (rcpt, resp))
            code, resp = s.data(make_msg(msgid, rcpt, extra))
            self.assertEqual(code, 250, resp)
            m = re.search(r"queued as (%s)" % QID, resp.decode())
            self.assertIsNotNone(m, resp)
            s.quit()
        finally:
            s.close()
        return m.group(1)

    def submit_all(self, r, domains, tag):
        """One message to bob@DOMAIN per domain; {domain: qid}."""
        return {d: self.submit(r, "bob@" + d, "%s-%s@sender.test" % (tag, d)) for d in domains}

    # -- the relay's log -----------------------------------------------------------------
    @staticmethod
    def outcomes(r, qid=None):
        """Per-recipient delivery lines, parsed."""
        out = []
        for line in r.log_text().splitlines():
            m = re.search(r" info delivery: (id=%s to=<.*)$" % QID, line)
            if not m:
                continue
            d = parse_kv(m.group(1))
            d["line"] = line
            if qid is None or d["id"] == qid:
                out.append(d)
        return out

    def wait_outcome(self, r, qid, status, timeout=10, **match):
        deadline = time.monotonic() + timeout
        while True:
            for d in self.outcomes(r, qid):
                if d.get("status") == status and all(d.get(k) == v for k, v in match.items()):
                    return d
            if time.monotonic() > deadline:
                self.fail("no status=%s %s for id=%s within %d s; outcomes %s; relay log:\n%s"
                          % (status, match, qid, timeout, [x["line"] for x in self.outcomes(r, qid)],
                             log_tail(r)))
            time.sleep(0.05)

    @staticmethod
    def connections(r, mx=None):
        """Per-connection lines ("dest=.. mx=.. ip=.. helo=.. result=.."), parsed."""
        out = []
        for line in r.log_text().splitlines():
            m = re.search(r" info delivery: (dest=\S+ mx=\S+ ip=\S+ helo=.* result=.*)$", line)
            if m:
                d = parse_kv(m.group(1))
                if mx is None or d["mx"] == mx:
                    out.append(d)
        return out

    # -- the relay's SQLite tables --------------------------------------------------------
    @staticmethod
    def _query(r, sql, args=()):
        path = os.path.join(r.state_dir, "queue.db")
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            return [dict(x) for x in con.execute(sql, args)]
        finally:
            con.close()

    def tls_rows(self, r, domain=None, mx_host=None, after=0):
        rows = self._query(r, "SELECT * FROM tls_sessions WHERE id > ? ORDER BY id", (after,))
        return [x for x in rows if (domain is None or x["policy_domain"] == domain)
                and (mx_host is None or x["mx_host"] == mx_host)]

    def wait_rows(self, r, domain, mx_host, after=0):
        """The session rows (at least one) written after row id `after`."""
        try:
            return wait_for(lambda: self.tls_rows(r, domain, mx_host, after), 5, what="tls_sessions row")
        except AssertionError:
            self.fail("no tls_sessions row for %s / %s after row %d" % (domain, mx_host, after))

    def last_tls_id(self, r):
        rows = self._query(r, "SELECT max(id) AS m FROM tls_sessions")
        return rows[0]["m"] or 0

    def sts_row(self, r, domain):
        rows = self._query(r, "SELECT * FROM sts_policies WHERE domain = ?", (domain,))
        return rows[0] if rows else None

    def wait_sts_row(self, r, domain, **match):
        try:
            return wait_for(lambda: (lambda x: x if x and all(x[k] == v for k, v in match.items())
                                     else None)(self.sts_row(r, domain)), 5, what="sts_policies row")
        except AssertionError:
            self.fail("no sts_policies row for %s with %s: %s" % (domain, match, self.sts_row(r, domain)))

    def fetch_failure_rows(self, r, domain, after=0):
        return [x for x in self.tls_rows(r, domain, after=after) if x["mx_host"] == ""]

    # -- the policy hosts -------------------------------------------------------------------
    def fetches(self, domain):
        """GET requests strictrelay made for the policy of domain."""
        return [x for x in self.lab.https.posts("mta-sts." + domain)
                if x["method"] == "GET" and x["headers"].get("User-Agent", "").startswith("strictrelay/")]

    def check_request(self, req, domain):
        """STS-10/14: the URL, the Host, no conditional or cache request."""
        self.assertEqual(req["path"], POLICY_PATH)
        self.assertEqual(req["headers"].get("Host"), "mta-sts." + domain)
        lower = {k.lower() for k in req["headers"]}
        for h in ("if-modified-since", "if-none-match", "cookie", "authorization"):
            self.assertNotIn(h, lower, "%s sent on a policy fetch: %s" % (h, req["headers"]))

    # -- MX peers ---------------------------------------------------------------------------
    def mx_sessions(self, name, since=0):
        return self.lab.mx.sessions(name)[since:]

    def assert_no_transaction(self, name, since=0, at_least=1):
        """No MAIL/RCPT/DATA in any session at MX name (nothing sent, not even
        in plaintext); at least `at_least` sessions."""
        sess = self.mx_sessions(name, since)
        self.assertGreaterEqual(len(sess), at_least, "%s was never contacted" % name)
        for s in sess:
            cmds = self.lab.mx.commands(s)
            self.assertFalse([c for c in cmds if c.upper().startswith(("MAIL", "RCPT", "DATA"))],
                             "%s: a transaction was started: %s" % (name, cmds))

    def messages_with(self, name, msgid):
        return [m for m in self.lab.mx.messages(name) if message_id(m["data"]) == msgid]

    def wait_message(self, name, msgid, timeout=10):
        try:
            return wait_for(lambda: self.messages_with(name, msgid), timeout,
                            what="message %s at %s" % (msgid, name))[0]
        except AssertionError:
            failed = []
            for r in self.lab.relays:
                failed += ["relay%d: %s" % (r.index, ln) for ln in r.log_text().splitlines()
                           if re.search(r"status=(deferred|bounced)|not used:", ln)]
            self.fail("message %s never reached %s; deferrals in the relay logs:\n%s\nrelay logs:\n%s"
                      % (msgid, name, "\n".join(failed[-20:]), self.lab.relay_log_tails()))

    def wait_txt_ttl(self):
        """The relay caches TXT answers for their TTL (1 s in the lab): after a
        DNS change, that long until it asks again."""
        time.sleep(self.lab.dns.ttl + 0.3)

    # -- the reference implementation ---------------------------------------------------------
    def reference(self, domain, known_id=None):
        """mta-sts-query DOMAIN [KNOWN_ID] -> {"verdict", "id", "mode", "mx", "max_age", "raw"}."""
        argv = ["mta-sts-query", domain] + ([known_id] if known_id else [])
        p = self.lab.dns.run_with_resolv_conf(argv, env=dict(os.environ, SSL_CERT_FILE=self.lab.ca.file),
                                              timeout=40)
        raw = p.stdout.strip()
        m = re.match(r"^\(<STSFetchResult\.(\w+): \d+>, (.*)\)$", raw, re.S)
        if not m:
            return {"verdict": "UNPARSED", "raw": raw + p.stderr[-500:]}
        out = {"verdict": m.group(1), "raw": raw}
        rest = ast.literal_eval(m.group(2))
        if rest is not None:
            pid, pol = rest
            out.update(id=pid, mode=pol.get("mode"), mx=pol.get("mx"), max_age=pol.get("max_age"))
        return out

    def sr_verdict(self, r, domain, after=0):
        """strictrelay's verdict from its own records (see the docstring)."""
        fails = self.fetch_failure_rows(r, domain, after)
        for x in fails:
            self.assertIn(x["result_type"], FETCH_FAILURES, x)
        if fails:
            return {"verdict": "FETCH_ERROR", "type": fails[-1]["result_type"]}
        row = self.sts_row(r, domain)
        if row:
            return {"verdict": "VALID", "id": row["id"], "mode": row["mode"], "max_age": row["max_age"],
                    "mx": policy_mx_lines(row["policy"])}
        return {"verdict": "NONE"}

    @staticmethod
    def _summary(v):
        if v["verdict"] == "VALID":
            return "VALID id=%s %s age=%s mx=%s" % (v["id"], v["mode"], v["max_age"], ",".join(v["mx"]))
        if v["verdict"] == "FETCH_ERROR" and v.get("type"):
            return "FETCH_ERROR (%s)" % v["type"]
        return v["verdict"]

    def crosscheck(self, r, domains, step="fetch", after=0, known_ids=None):
        """Runs mta-sts-query for every domain (in parallel) and asserts it
        reaches strictrelay's verdict (or the documented by-design one)."""
        self.lab.dns.stub_resolv_conf()          # started once, before the threads
        known_ids = known_ids or {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            futs = {d: pool.submit(self.reference, d, known_ids.get(d)) for d in domains}
            refs = {d: f.result() for d, f in futs.items()}
        for d in domains:
            ref = refs[d]
            if d in known_ids:
                sr = {"verdict": "NOT_CHANGED"} if self.sr_verdict(r, d, after)["verdict"] == "VALID" \
                    else self.sr_verdict(r, d, after)
            else:
                sr = self.sr_verdict(r, d, after)
            note = ""
            want = sr["verdict"]
            if d in self.BY_DESIGN:
                want, note = self.BY_DESIGN[d]
                note = "by design: " + note
            elif d == "f-maxage.test":
                note = "D2: both reject max_age > 31557600"
            type(self).xcheck_rows.append((d, step, self._summary(ref), self._summary(sr), note))
            self.assertEqual(ref["verdict"], want, "%s (%s): reference %s, strictrelay %s"
                             % (d, step, ref.get("raw"), sr))
            if want == "VALID" and sr["verdict"] == "VALID":
                self.assertEqual((ref["id"], ref["mode"], ref["max_age"]),
                                 (sr["id"], sr["mode"], sr["max_age"]), "%s (%s): %s vs %s"
                                 % (d, step, ref["raw"], sr))
                self.assertEqual(sorted(x.lower() for x in ref["mx"]), sorted(x.lower() for x in sr["mx"]),
                                 "%s (%s): mx lists differ: %s vs %s" % (d, step, ref["raw"], sr))
        return refs

    # ===================================================================================
    # 01-03: each mode against valid and bad MX certificates
    # ===================================================================================
    def check_policy_row(self, r, dom, mode, pid, mx):
        row = self.wait_sts_row(r, dom, id=pid)
        self.assertEqual((row["mode"], row["max_age"]), (mode, 86400), row)
        self.assertEqual(row["expires"], row["fetched"] + 86400, row)
        self.assertLessEqual(abs(row["fetched"] - time.time()), 60, row)
        self.assertEqual(row["policy"], policy_text(mode, mx), row)
        return row

    def test_01_enforce_cert_cases(self):
        lab = self.lab
        r = self.relay()
        doms = ["e-%s.test" % s for s in CERT_CASES]
        ids = self.submit_all(r, doms, "t1")
        for suffix, (_, _, result, code, _, reason) in CERT_CASES.items():
            dom = "e-%s.test" % suffix
            name = "mx1." + dom
            if code is None:
                m = self.wait_message(name, "t1-%s@sender.test" % dom)
                self.assertIsNotNone(m["tls"], "delivered without TLS under enforce")
                self.assertEqual(m["tls"]["sni"], name)              # STS-52
                d = self.wait_outcome(r, ids[dom], "sent")
                self.assertEqual((d["sts"], d["verified"], d["verify_name"], d["mx"], d["dsn"]),
                                 ("enforce", "yes", name, name, "2.0.0"), d["line"])
            else:
                d = self.wait_outcome(r, ids[dom], "deferred")
                self.assertEqual(d["dsn"], code, d["line"])
                self.assertRegex(d["reason"], reason.replace("%s", re.escape(dom)))
                self.assertIn("not used: %s (%s)" % (d["reason"], code),
                              "\n".join(ln for ln in r.log_text().splitlines()
                                        if "dest=%s mx=%s ip=" % (dom, name) in ln))
                self.assertEqual(self.messages_with(name, "t1-%s@sender.test" % dom), [])
                self.assert_no_transaction(name)
            # the session record
            rows = wait_for(lambda: self.tls_rows(r, dom, name), 5, what="tls_sessions row for " + name)
            self.assertEqual(len(rows), 1, rows)
            row = rows[0]
            self.assertEqual((row["policy_type"], row["result_type"], row["verified"], row["tls_required_no"],
                              row["mx_ip"]),
                             ("sts", result, int(result == "success"), 0, lab.mx.addr(name)[0]), row)
            self.assertEqual(row["policy_strings"], "version: STSv1\nmode: enforce\nmx: %s\nmax_age: 86400"
                             % name, row)
            self.assertEqual(row["policy_mx"], name, row)
            conn = wait_for(lambda: self.connections(r, name), 5, what="connection line for " + name)
            self.assertEqual([c["result"] for c in conn], [result], conn)
            # the cache: fetched once, stored as published
            self.check_policy_row(r, dom, "enforce", "e1", [name])
            reqs = self.fetches(dom)
            self.assertEqual(len(reqs), 1, reqs)
            self.check_request(reqs[0], dom)
            self.assertIsNotNone(re.search(r"info mta-sts: domain=%s policy id=e1 mode=enforce max_age=86400 "
                                           r"mx=1 fetched from mta-sts\.%s \(%s\)$"
                                           % (re.escape(dom), re.escape(dom),
                                              re.escape(lab.https.hosts["mta-sts." + dom]["ip"])),
                                           r.log_text(), re.M), log_tail(r))
            self.assertEqual(self.fetch_failure_rows(r, dom), [])
        # still queued, nothing bounced
        self.assertEqual(sorted(x["id"] for x in self.outcomes(r) if x["status"] == "bounced"), [])
        self.crosscheck(r, doms)

    def test_01b_deferral_line_names_the_policy(self):
        """The per-recipient line of a deferral carries sts= like the others."""
        r = self.relay()
        qid = self.submit(r, "bob@e-self.test", "t1b@sender.test")
        d = self.wait_outcome(r, qid, "deferred")
        self.assertEqual(d["dsn"], "4.7.5")
        self.assertEqual(d.get("sts"), "enforce", "the deferral line does not say which MTA-STS mode "
                         "refused the MX: %s" % d["line"])

    def test_02_testing_cert_cases(self):
        lab = self.lab
        r = self.relay()
        doms = ["t-%s.test" % s for s in CERT_CASES]
        ids = self.submit_all(r, doms, "t2")
        for suffix, (_, _, result, _, why, _) in CERT_CASES.items():
            dom = "t-%s.test" % suffix
            name = "mx1." + dom
            ip = lab.mx.addr(name)[0]
            m = self.wait_message(name, "t2-%s@sender.test" % dom)
            d = self.wait_outcome(r, ids[dom], "sent")
            self.assertEqual((d["sts"], d["mx"], d["dsn"]), ("testing", name, "2.0.0"), d["line"])
            if suffix == "plain":
                self.assertIsNone(m["tls"])
                self.assertEqual(d["tls"], "none")
            else:
                self.assertIsNotNone(m["tls"], "%s: sent without TLS although offered" % name)
                self.assertEqual(m["tls"]["sni"], name)
                self.assertEqual(d["verified"], "yes" if suffix == "ok" else "no", d["line"])
            # logged with the session's record, after the delivery line
            wait_for(lambda: self.connections(r, name), 5, what="connection line for " + name)
            would = re.findall(r"info delivery: dest=%s mx=%s ip=%s sts=testing enforce mode would refuse "
                               r"this MX: (.*)$" % (re.escape(dom), re.escape(name), re.escape(ip)),
                               r.log_text(), re.M)
            self.assertEqual(would, [why] if why else [], log_tail(r))
            rows = wait_for(lambda: self.tls_rows(r, dom, name), 5, what="tls_sessions row for " + name)
            self.assertEqual(len(rows), 1, rows)
            row = rows[0]
            self.assertEqual((row["policy_type"], row["result_type"], row["verified"]),
                             ("sts", result, int(result == "success")), row)
            self.assertEqual(row["policy_strings"], "version: STSv1\nmode: testing\nmx: %s\nmax_age: 86400"
                             % name, row)
            self.assertEqual(row["policy_mx"], name)
            self.check_policy_row(r, dom, "testing", "t1", [name])
            self.assertEqual(len(self.fetches(dom)), 1)
        self.assertEqual([x for x in self.outcomes(r) if x["status"] != "sent"], [])
        self.crosscheck(r, doms)

    def test_03_none_cert_cases(self):
        r = self.relay()
        doms = ["n-%s.test" % s for s in CERT_CASES]
        ids = self.submit_all(r, doms, "t3")
        for suffix, (_, _, result, _, _, _) in CERT_CASES.items():
            dom = "n-%s.test" % suffix
            name = "mx1." + dom
            m = self.wait_message(name, "t3-%s@sender.test" % dom)
            d = self.wait_outcome(r, ids[dom], "sent")
            self.assertEqual((d["sts"], d["mx"]), ("none", name), d["line"])
            if suffix == "plain":
                self.assertIsNone(m["tls"])
            else:
                self.assertEqual(m["tls"]["sni"], name)
            rows = wait_for(lambda: self.tls_rows(r, dom, name), 5, what="tls_sessions row for " + name)
            self.assertEqual(len(rows), 1, rows)
            self.assertEqual((rows[0]["policy_type"], rows[0]["result_type"], rows[0]["policy_strings"],
                              rows[0]["policy_mx"]), ("no-policy-found", result, "", ""), rows[0])
            # the none policy was fetched and cached all the same (STS-56)
            self.check_policy_row(r, dom, "none", "n1", [] if suffix == "plain" else [name])
            self.assertEqual(len(self.fetches(dom)), 1)
            self.assertEqual(self.fetch_failure_rows(r, dom), [])
        self.assertNotIn("would refuse", r.log_text())
        self.assertEqual([x for x in self.outcomes(r) if x["status"] != "sent"], [])
        self.crosscheck(r, doms)

    # ===================================================================================
    # 04: mx patterns at delivery
    # ===================================================================================
    def not_used_lines(self, r, dom):
        return re.findall(r"info delivery: dest=%s mx=(\S+) not used: (.*)$" % re.escape(dom),
                          r.log_text(), re.M)

    def test_04_mx_patterns(self):
        lab = self.lab
        r = self.relay()
        doms = ["w1.test", "w2.test", "notin.test", "two.test", "imp.test", "imp2.test"]
        ids = self.submit_all(r, doms, "t4")
        nomatch = "MX %s does not match the MTA-STS policy of the domain"

        # *.W1.test: mx1 delivers; a.b.w1.test and w1.test are skipped, in order
        m = self.wait_message("mx1.w1.test", "t4-w1.test@sender.test")
        self.assertEqual(m["tls"]["sni"], "mx1.w1.test")
        d = self.wait_outcome(r, ids["w1.test"], "sent")
        self.assertEqual((d["sts"], d["mx"], d["verified"]), ("enforce", "mx1.w1.test", "yes"))
        self.assertEqual(self.not_used_lines(r, "w1.test"),
                         [("a.b.w1.test", nomatch % "a.b.w1.test"), ("w1.test", nomatch % "w1.test")])
        log = r.log_text()
        self.assertLess(log.index("mx=a.b.w1.test not used"), log.index("mx=w1.test not used"))
        self.assertLess(log.index("mx=w1.test not used"), log.index(d["line"]))
        self.assertEqual(self.mx_sessions("a.b.w1.test"), [], "a non-matching MX was connected to")
        self.assertEqual(self.mx_sessions("w1.test"), [], "a non-matching MX was connected to")
        rows = wait_for(lambda: len(self.tls_rows(r, "w1.test")) >= 3 and self.tls_rows(r, "w1.test"), 5,
                        what="three tls_sessions rows for w1.test")
        self.assertEqual([(x["mx_host"], x["mx_ip"], x["result_type"], x["detail"], x["policy_type"])
                          for x in rows],
                         [("a.b.w1.test", "", "validation-failure", "mx-not-in-policy", "sts"),
                          ("w1.test", "", "validation-failure", "mx-not-in-policy", "sts"),
                          ("mx1.w1.test", lab.mx.addr("mx1.w1.test")[0], "success", "", "sts")])
        self.assertEqual({x["policy_mx"] for x in rows}, {"*.w1.test"})

        # testing: a non-matching MX is used, and the log says enforce would not
        m = self.wait_message("a.b.w2.test", "t4-w2.test@sender.test")
        self.assertEqual(m["tls"]["sni"], "a.b.w2.test")
        d = self.wait_outcome(r, ids["w2.test"], "sent")
        self.assertEqual(d["sts"], "testing")
        # logged as the connection ends (after [delivery] connection_cache_time)
        r.wait_log(r"(?m)info delivery: dest=w2\.test mx=a\.b\.w2\.test ip=%s "
                   r"sts=testing enforce mode would refuse this MX: the MX does not match the policy$"
                   % re.escape(lab.mx.addr("a.b.w2.test")[0]))
        rows = wait_for(lambda: self.tls_rows(r, "w2.test"), 5, what="tls_sessions row for w2.test")
        self.assertEqual([(x["mx_host"], x["result_type"], x["detail"], x["verified"]) for x in rows],
                         [("a.b.w2.test", "validation-failure", "mx-not-in-policy", 1)])

        # the only MX is outside the policy: deferred 4.7.5, never connected
        d = self.wait_outcome(r, ids["notin.test"], "deferred")
        self.assertEqual((d["dsn"], d["reason"]), ("4.7.5", nomatch % "mx1.notin.test"))
        self.assertEqual(self.not_used_lines(r, "notin.test"),
                         [("mx1.notin.test", nomatch % "mx1.notin.test")])
        self.assertEqual(self.mx_sessions("mx1.notin.test"), [])
        rows = wait_for(lambda: self.tls_rows(r, "notin.test"), 5, what="tls_sessions row for notin.test")
        self.assertEqual([(x["mx_host"], x["policy_type"], x["result_type"], x["detail"], x["policy_mx"],
                           x["tls_required_no"]) for x in rows],
                         [("mx1.notin.test", "sts", "validation-failure", "mx-not-in-policy",
                           "mx1.elsewhere.test", 0)])

        # first preference outside the policy: skipped like an unreachable MX (STS-53)
        m = self.wait_message("mx2.two.test", "t4-two.test@sender.test")
        d = self.wait_outcome(r, ids["two.test"], "sent")
        self.assertEqual((d["mx"], d["sts"]), ("mx2.two.test", "enforce"))
        self.assertEqual(self.not_used_lines(r, "two.test"), [("mx1.two.test", nomatch % "mx1.two.test")])
        log = r.log_text()
        self.assertLess(log.index("dest=two.test mx=mx1.two.test not used"), log.index(d["line"]))
        self.assertEqual(self.mx_sessions("mx1.two.test"), [])
        self.assertEqual(len(self.mx_sessions("mx2.two.test")), 1)

        # implicit MX: the domain name itself is matched (STS-59)
        d = self.wait_outcome(r, ids["imp.test"], "deferred")
        self.assertEqual((d["dsn"], d["reason"]), ("4.7.5", nomatch % "imp.test"))
        self.assertEqual(self.mx_sessions("imp.test"), [])
        self.wait_message("imp2.test", "t4-imp2.test@sender.test")
        d = self.wait_outcome(r, ids["imp2.test"], "sent")
        self.assertEqual((d["mx"], d["sts"], d["verified"]), ("imp2.test", "enforce", "yes"))
        for dom in doms:
            self.assertEqual(len(self.fetches(dom)), 1, dom)
        self.crosscheck(r, doms)

    # ===================================================================================
    # 05: policy host failures (no cached policy)
    # ===================================================================================
    def test_05_policy_host_failures(self):
        r = self.relay()
        doms = list(self.FETCH_CASES)
        redirect_target_before = len(self.fetches("e-ok.test"))
        t0 = time.monotonic()
        ids = self.submit_all(r, doms, "t5")
        for dom, (verdict, rtype, detail) in self.FETCH_CASES.items():
            name = "mx1." + dom
            d = self.wait_outcome(r, ids[dom], "sent")
            m = self.wait_message(name, "t5-%s@sender.test" % dom)
            self.assertEqual(m["tls"]["sni"], name)
            if verdict == "VALID":
                # accepted: the policy applies (and the MX is valid)
                self.assertEqual((d["sts"], d["verified"]), ("enforce", "yes"), d["line"])
                row = self.wait_sts_row(r, dom, id="1")
                self.assertEqual(row["mode"], "enforce")
                self.wait_rows(r, dom, name)       # written after any fetch failure row
                self.assertEqual(self.fetch_failure_rows(r, dom), [])
                continue
            # no policy: opportunistic TLS to a self-signed MX
            self.assertEqual((d["sts"], d["verified"]), ("none", "no"), d["line"])
            rows = wait_for(lambda: self.fetch_failure_rows(r, dom), 5, what="fetch failure row for " + dom)
            self.assertEqual(len(rows), 1, rows)
            row = rows[0]
            self.assertEqual((row["policy_type"], row["result_type"], row["mx_ip"], row["tls_required_no"]),
                             ("sts", rtype, "", 0), row)
            self.assertRegex(row["detail"], detail)
            mxrows = wait_for(lambda: self.tls_rows(r, dom, name), 5, what="tls_sessions row for " + name)
            self.assertEqual([(x["policy_type"], x["result_type"]) for x in mxrows],
                             [("no-policy-found", "certificate-not-trusted")])
            self.assertIsNone(self.sts_row(r, dom), "an invalid policy was cached")
            self.assertRegex(r.log_text(), r"(?m) warn mta-sts: domain=%s %s: .*; no policy applies$"
                             % (re.escape(dom), rtype))
        # what reached the policy hosts: one GET each, except where TLS failed
        for dom in doms:
            n = 0 if dom in ("f-name.test", "f-cn.test", "f-refused.test", "f-nohost.test") else 1
            reqs = self.fetches(dom)
            self.assertEqual(len(reqs), n, "%s: %s" % (dom, reqs))
            for q in reqs:
                self.check_request(q, dom)
        # STS-13: the redirect was not followed
        self.assertEqual(len(self.fetches("e-ok.test")), redirect_target_before)
        # the slow hosts cost fetch_timeout (2 s), not their 8 s (the whole
        # request is bounded, not only the wait for the headers)
        self.assertLess(time.monotonic() - t0, 6)
        self.crosscheck(r, doms)

        # STS-17: the failing ids are not fetched again within 5 minutes
        rows_before = {d: len(self.fetch_failure_rows(r, d)) for d in doms}
        reqs_before = {d: len(self.fetches(d)) for d in doms}
        ids = self.submit_all(r, doms, "t5b")
        for dom in doms:
            self.wait_outcome(r, ids[dom], "sent")
            self.wait_message("mx1." + dom, "t5b-%s@sender.test" % dom)
            wait_for(lambda: len(self.tls_rows(r, dom, "mx1." + dom)) >= 2, 5, what="second session row")
        for dom in doms:
            self.assertEqual(len(self.fetch_failure_rows(r, dom)), rows_before[dom], dom)
            self.assertEqual(len(self.fetches(dom)), reqs_before[dom], dom)

    def test_05c_policy_fetch_tls_failures_do_not_break_smtp_sessions(self):
        """Policy fetches that fail certificate verification (HTTPS, curl)
        while SMTP sessions of the same relay are under way: every message
        is delivered (opportunistically: no policy applies), none is deferred
        because its SMTP/TLS session "ended"."""
        lab = self.lab
        r = self.relay()
        doms = ["p%d.test" % i for i in range(self.BULK)]
        s = smtplib.SMTP(r.ip, r.port, local_hostname="client.test", timeout=30)
        ids = {}
        try:
            s.ehlo()
            for dom in doms:
                rcpt = "bob@" + dom
                code, resp = s.mail(SENDER)
                self.assertEqual(code, 250, resp)
                code, resp = s.rcpt(rcpt)
                self.assertEqual(code, 250, resp)
                code, resp = s.data(make_msg("t5c-%s@sender.test" % dom, rcpt))
                self.assertEqual(code, 250, resp)
                ids[dom] = re.search(r"queued as (%s)" % QID, resp.decode()).group(1)
            s.quit()
        finally:
            s.close()
        wait_for(lambda: len([x for x in self.outcomes(r) if x["status"] in ("sent", "deferred", "bounced")])
                 >= len(doms), 20, what="an outcome for every message")
        wait_for(lambda: len(self.tls_rows(r)) >= 2 * len(doms), 10, what="all tls_sessions rows")
        self.assertEqual(len([x for x in self.tls_rows(r) if x["result_type"] == "sts-webpki-invalid"]),
                         len(doms), "one policy fetch failure per domain")
        bad = [x["line"] for x in self.outcomes(r) if x["status"] != "sent"]
        ended = re.findall(r"(?m)^.*TLS session ended in state.*$", r.log_text())
        self.assertEqual(len(bad), 0, "%d of %d messages not delivered, e.g.:\n%s"
                         % (len(bad), len(doms), "\n".join(bad[:3])))
        self.assertEqual(ended, [], "SMTP/TLS sessions ended early")
        got = {message_id(m["data"]) for m in lab.mx.messages("mx1.pbulk.test")}
        self.assertEqual(sorted(d for d in doms if "t5c-%s@sender.test" % d not in got), [])

    # ===================================================================================
    # 06: TXT records
    # ===================================================================================
    def test_06_txt_records(self):
        r = self.relay()
        doms = list(self.TXT_CASES)
        ids = self.submit_all(r, doms, "t6")
        for dom, (kind, _) in self.TXT_CASES.items():
            name = "mx1." + dom
            d = self.wait_outcome(r, ids[dom], "sent")
            self.wait_message(name, "t6-%s@sender.test" % dom)
            if kind == "used":
                self.assertEqual((d["sts"], d["verified"]), ("enforce", "yes"), d["line"])
                row = self.wait_sts_row(r, dom)
                self.assertEqual((row["id"], row["mode"]), (self.TXT_IDS[dom], "enforce"))
                self.assertEqual(len(self.fetches(dom)), 1, dom)
            else:
                self.assertEqual((d["sts"], d["verified"]), ("none", "no"), d["line"])
                self.assertEqual(self.fetches(dom), [], "%s: policy fetched for an unusable TXT" % dom)
                self.assertIsNone(self.sts_row(r, dom))
            self.wait_rows(r, dom, name)
            self.assertEqual(self.fetch_failure_rows(r, dom), [], dom)
        # STS-01: the policy of the CNAME'd TXT came from mta-sts.x-cname.test
        for req in self.fetches("x-cname.test"):
            self.check_request(req, "x-cname.test")
        self.assertEqual(self.fetches("sts-provider.test"), [])
        # STS-07: never the parent's policy
        self.assertEqual(self.fetches("x-parent.test"), [])
        self.assertIsNone(self.sts_row(r, "x-parent.test"))
        self.crosscheck(r, doms)

    # ===================================================================================
    # 07-13: the cache
    # ===================================================================================
    def test_07_id_change_refetches(self):
        lab = self.lab
        dom, name = "c-idchg.test", "mx1.c-idchg.test"
        r = self.relay()
        q1 = self.submit(r, "bob@" + dom, "t7-1@sender.test")
        self.wait_message(name, "t7-1@sender.test")
        self.assertEqual(self.wait_outcome(r, q1, "sent")["sts"], "testing")
        row1 = self.wait_sts_row(r, dom, id="v1", mode="testing")
        self.crosscheck(r, [dom], "id v1")
        # the domain moves to enforce with a new id
        lab.https.set_file("mta-sts." + dom, POLICY_PATH,
                           {"body": policy_text("enforce", [name]), "capture": True})
        with lab.dns.change():
            lab.dns.remove("_mta-sts." + dom)
            lab.dns.txt("_mta-sts." + dom, "v=STSv1; id=v2")
        self.wait_txt_ttl()
        sessions = len(self.mx_sessions(name))
        after = self.last_tls_id(r)
        q2 = self.submit(r, "bob@" + dom, "t7-2@sender.test")
        d = self.wait_outcome(r, q2, "deferred")
        self.assertEqual(d["dsn"], "4.7.5", d["line"])
        self.assert_no_transaction(name, sessions)
        row2 = self.wait_sts_row(r, dom, id="v2")
        self.assertEqual((row2["mode"], row2["policy"]), ("enforce", policy_text("enforce", [name])))
        self.assertGreaterEqual(row2["fetched"], row1["fetched"])
        reqs = self.fetches(dom)
        self.assertEqual(len(reqs), 2, reqs)
        self.check_request(reqs[1], dom)
        rows = self.wait_rows(r, dom, name, after)
        self.assertEqual([(x["policy_type"], x["result_type"]) for x in rows],
                         [("sts", "certificate-not-trusted")])
        self.assertIn("mode: enforce", rows[0]["policy_strings"])
        self.crosscheck(r, [dom], "id v2", after=after)

    def test_08_same_id_no_refetch(self):
        lab = self.lab
        dom, name = "c-same.test", "mx1.c-same.test"
        r = self.relay()
        q1 = self.submit(r, "bob@" + dom, "t8-1@sender.test")
        self.wait_message(name, "t8-1@sender.test")
        self.assertEqual(self.wait_outcome(r, q1, "sent")["sts"], "enforce")
        row1 = self.wait_sts_row(r, dom, id="s1")
        self.crosscheck(r, [dom], "id s1")
        # a changed file under the same id: mx1 would not match it any more
        lab.https.set_file("mta-sts." + dom, POLICY_PATH,
                           {"body": policy_text("enforce", ["other.c-same.test"]), "capture": True})
        self.wait_txt_ttl()
        q2 = self.submit(r, "bob@" + dom, "t8-2@sender.test")
        self.wait_message(name, "t8-2@sender.test")
        self.assertEqual(self.wait_outcome(r, q2, "sent")["sts"], "enforce")
        # after a restart the id is compared with the SQLite copy: still no fetch
        self.stop_relay(r)
        r.start()
        q3 = self.submit(r, "bob@" + dom, "t8-3@sender.test")
        self.wait_message(name, "t8-3@sender.test")
        self.assertEqual(self.wait_outcome(r, q3, "sent")["sts"], "enforce")
        self.assertEqual(len(self.fetches(dom)), 1, self.fetches(dom))
        self.assertEqual(self.sts_row(r, dom)["fetched"], row1["fetched"])
        self.assertEqual(self.sts_row(r, dom)["policy"], row1["policy"])
        # the reference, given the id it knows, does not fetch either
        self.crosscheck(r, [dom], "known id s1", known_ids={dom: "s1"})

    def check_still_enforced(self, r, dom, tag):
        name = "mx1." + dom
        sessions = len(self.mx_sessions(name))
        after = self.last_tls_id(r)
        qid = self.submit(r, "bob@" + dom, tag)
        d = self.wait_outcome(r, qid, "deferred")
        self.assertEqual(d["dsn"], "4.7.5", d["line"])
        self.assertRegex(d["reason"], r"certificate-not-trusted")
        self.assert_no_transaction(name, sessions)
        self.assertEqual(self.messages_with(name, tag), [])
        self.wait_rows(r, dom, name, after)        # the session is recorded (and all before it)
        return d

    def test_09_dns_failure_and_txt_removed_keep_the_policy(self):
        lab = self.lab
        r = self.relay()
        doms = {"c-dns.test": "t9d", "c-gone.test": "t9g", "c-badtxt.test": "t9b"}
        for dom, tag in doms.items():
            self.check_still_enforced(r, dom, tag + "-1@sender.test")
            self.wait_sts_row(r, dom, mode="enforce")
        self.crosscheck(r, list(doms), "first")
        # SERVFAIL; no record at all; a record that no longer parses
        with lab.dns.change():
            lab.dns.fault("_mta-sts.c-dns.test", "servfail")
            lab.dns.remove("_mta-sts.c-gone.test")
            lab.dns.remove("_mta-sts.c-badtxt.test")
            lab.dns.txt("_mta-sts.c-badtxt.test", "v=STSv1; id=b-2")
        ans = lab.dns.query("_mta-sts.c-dns.test", "TXT")
        self.assertEqual(ans.header.rcode, 2, "the lab does not answer SERVFAIL: %s" % ans)
        ans = lab.dns.query("_mta-sts.c-gone.test", "TXT")
        self.assertEqual(ans.header.rcode, 3, "the TXT is still there: %s" % ans)
        self.wait_txt_ttl()
        after = self.last_tls_id(r)
        for dom, tag in doms.items():
            self.check_still_enforced(r, dom, tag + "-2@sender.test")
            self.assertEqual(len(self.fetches(dom)), 1)
            self.assertEqual(self.fetch_failure_rows(r, dom, after), [])
            rows = self.wait_rows(r, dom, "mx1." + dom, after)
            self.assertEqual([x["policy_type"] for x in rows], ["sts"])
        # and after a restart, from SQLite alone
        self.stop_relay(r)
        r.start()
        for dom, tag in doms.items():
            self.check_still_enforced(r, dom, tag + "-3@sender.test")
            self.assertEqual(len(self.fetches(dom)), 1)

    def test_10_failed_refetch_keeps_the_old_policy(self):
        lab = self.lab
        dom = "c-fail.test"
        r = self.relay()
        self.check_still_enforced(r, dom, "t10-1@sender.test")
        row1 = self.wait_sts_row(r, dom, id="f1")
        self.crosscheck(r, [dom], "id f1")
        # new id, and the policy host answers 404
        lab.https.set_file("mta-sts." + dom, POLICY_PATH, {"status": 404, "body": "gone\n", "capture": True})
        with lab.dns.change():
            lab.dns.remove("_mta-sts." + dom)
            lab.dns.txt("_mta-sts." + dom, "v=STSv1; id=f2")
        self.wait_txt_ttl()
        after = self.last_tls_id(r)
        mark = r.log_mark()
        self.check_still_enforced(r, dom, "t10-2@sender.test")
        rows = wait_for(lambda: self.fetch_failure_rows(r, dom, after), 5, what="fetch failure row")
        self.assertEqual([(x["result_type"], x["detail"]) for x in rows],
                         [("sts-policy-fetch-error", "policy host mta-sts.c-fail.test answered HTTP 404")])
        r.wait_log(r" warn mta-sts: domain=c-fail\.test sts-policy-fetch-error: policy host "
                   r"mta-sts\.c-fail\.test answered HTTP 404; keeping the cached policy$", start=mark)
        row2 = self.sts_row(r, dom)
        self.assertEqual((row2["id"], row2["fetched"], row2["policy"]), ("f1", row1["fetched"], row1["policy"]))
        self.assertEqual(len(self.fetches(dom)), 2)
        self.crosscheck(r, [dom], "id f2", after=after)
        # STS-17: f2 is not tried again at once
        after2 = self.last_tls_id(r)
        self.check_still_enforced(r, dom, "t10-3@sender.test")
        self.assertEqual(len(self.fetches(dom)), 2)
        self.assertEqual(self.fetch_failure_rows(r, dom, after2), [])

    def test_11_restart_keeps_the_cache(self):
        lab = self.lab
        dom = "c-restart.test"
        r = self.relay()
        self.check_still_enforced(r, dom, "t11-1@sender.test")
        self.wait_sts_row(r, dom, id="r1")
        self.crosscheck(r, [dom], "id r1")
        # the policy host goes away: no address, and nothing behind it either
        lab.https.set_file("mta-sts." + dom, POLICY_PATH, None)
        lab.dns.remove("mta-sts." + dom)
        self.stop_relay(r)
        r.start()
        self.check_still_enforced(r, dom, "t11-2@sender.test")
        self.assertEqual(len(self.fetches(dom)), 1)
        self.assertEqual(self.fetch_failure_rows(r, dom), [])

    def test_11b_proactive_refresh(self):
        """STS-20: a cached policy in use and fetched more than a day ago is
        fetched again soon after the start (then hourly checks), whatever
        the TXT id says; one not used for 30 days is left alone."""
        lab = self.lab
        used, unused = "c-refresh.test", "c-unused.test"
        r = self.relay()
        for dom in (used, unused):
            self.check_still_enforced(r, dom, "t11b-%s@sender.test" % dom)
            self.wait_sts_row(r, dom)
        self.stop_relay(r)
        # same id, a different policy body: only a proactive refresh can get it
        lab.https.set_file("mta-sts." + used, POLICY_PATH,
                           {"body": policy_text("enforce", ["mx1." + used], 604800), "capture": True})
        now = int(time.time())
        con = sqlite3.connect(os.path.join(r.state_dir, "queue.db"), timeout=10)
        try:
            con.execute("UPDATE sts_policies SET fetched = ?, last_used = ? WHERE domain = ?",
                        (now - 2 * 86400, now - 3600, used))
            con.execute("UPDATE sts_policies SET fetched = ?, last_used = ? WHERE domain = ?",
                        (now - 2 * 86400, now - 31 * 86400, unused))
            con.commit()
        finally:
            con.close()
        mark = r.log_mark()
        r.start()
        r.wait_log(r" info mta-sts: domain=c-refresh\.test refreshing the cached policy$", timeout=20,
                   start=mark)
        row = self.wait_sts_row(r, used, id="rf1", max_age=604800)
        self.assertGreaterEqual(row["fetched"], now)
        self.assertEqual(len(self.fetches(used)), 2)
        self.assertEqual(len(self.fetches(unused)), 1, "a policy unused for 30 days was refreshed")
        self.assertNotIn("domain=c-unused.test refreshing", r.log_text()[mark:])

    def test_12_max_age_expiry(self):
        lab = self.lab
        dom, name = "c-maxage.test", "mx1.c-maxage.test"
        r = self.relay()
        # a policy fetched now applies even though max_age 1 ends it at once
        self.check_still_enforced(r, dom, "t12-1@sender.test")
        row = self.wait_sts_row(r, dom, id="m1")
        self.assertEqual((row["max_age"], row["expires"]), (1, row["fetched"] + 1))
        self.crosscheck(r, [dom], "max_age 1")
        lab.https.set_file("mta-sts." + dom, POLICY_PATH, {"status": 404, "body": "gone\n", "capture": True})
        wait_for(lambda: time.time() >= row["expires"] + 0.1, 5, what="the policy's expiry")
        after = self.last_tls_id(r)
        q2 = self.submit(r, "bob@" + dom, "t12-2@sender.test")
        m = self.wait_message(name, "t12-2@sender.test")
        self.assertIsNotNone(m["tls"])
        d = self.wait_outcome(r, q2, "sent")
        self.assertEqual((d["sts"], d["verified"]), ("none", "no"), d["line"])
        rows = wait_for(lambda: self.fetch_failure_rows(r, dom, after), 5, what="fetch failure row")
        self.assertEqual([x["result_type"] for x in rows], ["sts-policy-fetch-error"])
        self.assertEqual([x["policy_type"] for x in self.wait_rows(r, dom, name, after)],
                         ["no-policy-found"])
        self.assertEqual(len(self.fetches(dom)), 2)
        self.crosscheck(r, [dom], "expired", after=after)

    def test_13_mode_none_replaces_enforce(self):
        lab = self.lab
        dom, name = "c-none.test", "mx1.c-none.test"
        r = self.relay()
        self.check_still_enforced(r, dom, "t13-1@sender.test")
        self.wait_sts_row(r, dom, id="n1", mode="enforce")
        self.crosscheck(r, [dom], "enforce n1")
        lab.https.set_file("mta-sts." + dom, POLICY_PATH, {"body": policy_text("none", []), "capture": True})
        with lab.dns.change():
            lab.dns.remove("_mta-sts." + dom)
            lab.dns.txt("_mta-sts." + dom, "v=STSv1; id=n2")
        self.wait_txt_ttl()
        after = self.last_tls_id(r)

        def delivered(tag):
            before = self.last_tls_id(r)
            qid = self.submit(r, "bob@" + dom, tag)
            d = self.wait_outcome(r, qid, "sent")
            self.wait_message(name, tag)
            self.assertEqual((d["sts"], d["verified"]), ("none", "no"), d["line"])
            self.wait_rows(r, dom, name, before)

        delivered("t13-2@sender.test")
        row = self.wait_sts_row(r, dom, id="n2")
        self.assertEqual((row["mode"], row["policy"]), ("none", policy_text("none", [])))
        self.assertEqual([x["policy_type"] for x in self.wait_rows(r, dom, name, after)],
                         ["no-policy-found"])
        self.crosscheck(r, [dom], "none n2", after=after)
        # the TXT goes away: the cached none still applies, not the old enforce
        lab.dns.remove("_mta-sts." + dom)
        self.wait_txt_ttl()
        delivered("t13-3@sender.test")
        self.stop_relay(r)
        r.start()
        delivered("t13-4@sender.test")
        self.assertEqual(len(self.fetches(dom)), 2)
        self.assertEqual(self.fetch_failure_rows(r, dom), [])

    def test_13b_failed_refresh_of_a_none_policy_is_not_reported(self):
        """STS-56/60: with a cached "none" policy, a failing fetch is neither
        alerted nor reported (no tls_sessions failure row, which the TLS
        report would count as a failed session)."""
        lab = self.lab
        dom, name = "c-nonefail.test", "mx1.c-nonefail.test"
        r = self.relay()
        q1 = self.submit(r, "bob@" + dom, "t13b-1@sender.test")
        self.wait_message(name, "t13b-1@sender.test")
        self.assertEqual(self.wait_outcome(r, q1, "sent")["sts"], "none")
        self.wait_sts_row(r, dom, id="x1", mode="none")
        lab.https.set_file("mta-sts." + dom, POLICY_PATH, {"status": 404, "body": "gone\n", "capture": True})
        with lab.dns.change():
            lab.dns.remove("_mta-sts." + dom)
            lab.dns.txt("_mta-sts." + dom, "v=STSv1; id=x2")
        self.wait_txt_ttl()
        after = self.last_tls_id(r)
        q2 = self.submit(r, "bob@" + dom, "t13b-2@sender.test")
        self.wait_message(name, "t13b-2@sender.test")
        self.assertEqual(self.wait_outcome(r, q2, "sent")["sts"], "none")
        wait_for(lambda: self.tls_rows(r, dom, name, after=after), 5, what="the session's row")
        self.assertEqual(len(self.fetches(dom)), 2, "the new id was not fetched")
        self.assertEqual(self.sts_row(r, dom)["id"], "x1")
        self.assertNotRegex(r.log_text(), r"warn mta-sts: domain=c-nonefail\.test ")
        self.assertEqual(self.fetch_failure_rows(r, dom, after), [],
                         "a failed refresh of a cached mode-none policy is recorded for the TLS report")

    # ===================================================================================
    # 14-15: routes and TLS-Required: No
    # ===================================================================================
    def test_14_routes(self):
        lab = self.lab
        ip, port = lab.mx.addr("mx1.r-route.test")
        r = self.relay(routes={"r-route.test": "[%s]:%d tls=may" % (ip, port),
                               "r-smart.test": "sh.test tls=may"})
        q1 = self.submit(r, "bob@r-route.test", "t14-1@sender.test")
        m = self.wait_message("mx1.r-route.test", "t14-1@sender.test")
        self.assertIsNotNone(m["tls"], "tls=may: STARTTLS expected")
        d = self.wait_outcome(r, q1, "sent")
        self.assertEqual((d["sts"], d["verified"]), ("none", "no"), d["line"])
        self.assertTrue(d["dest"].startswith("route(r-route.test)"), d["line"])
        self.assertEqual(self.fetches("r-route.test"), [])
        self.assertIsNone(self.sts_row(r, "r-route.test"))
        rows = self.wait_rows(r, None, d["mx"])
        self.assertEqual([(x["policy_type"], x["result_type"]) for x in rows],
                         [("no-policy-found", "certificate-not-trusted")])
        # STS-08: a route to a host name: that host is the policy domain
        sessions = len(self.mx_sessions("mx1.sh.test"))
        q2 = self.submit(r, "bob@r-smart.test", "t14-2@sender.test")
        d = self.wait_outcome(r, q2, "deferred")
        self.assertEqual(d["dsn"], "4.7.5", d["line"])
        self.assert_no_transaction("mx1.sh.test", sessions)
        self.assertEqual(self.wait_sts_row(r, "sh.test")["mode"], "enforce")
        self.assertIsNone(self.sts_row(r, "r-smart.test"))
        self.assertEqual(len(self.fetches("sh.test")), 1)
        self.crosscheck(r, ["sh.test"], "route host")

    def test_15_tls_required_no(self):
        lab = self.lab
        dom, name = "r-tlsno.test", "mx1.r-tlsno.test"
        r = self.relay()
        # without the header the enforce policy refuses the self-signed MX
        self.check_still_enforced(r, dom, "t15-1@sender.test")
        self.wait_sts_row(r, dom, mode="enforce")
        after = self.last_tls_id(r)
        rc, out = lab.swaks("--server", "%s:%d" % (r.ip, r.port), "--to", "bob@" + dom, "--from", SENDER,
                            "--header", "TLS-Required: No", "--header", "Message-Id: <t15-2@sender.test>")
        self.assertEqual(rc, 0, out)
        qid = re.search(r"queued as (%s)" % QID, out).group(1)
        m = self.wait_message(name, "t15-2@sender.test")
        self.assertIsNotNone(m["tls"], "STARTTLS is still tried opportunistically")
        self.assertRegex(m["data"].decode(), r"(?m)^TLS-Required: No\r$")      # RTLS-31
        d = self.wait_outcome(r, qid, "sent")
        self.assertEqual((d["sts"], d["verified"]), ("none", "no"), d["line"])
        rows = wait_for(lambda: self.tls_rows(r, dom, after=after), 5, what="tls_sessions row")
        self.assertEqual([(x["mx_host"], x["policy_type"], x["result_type"], x["tls_required_no"])
                          for x in rows], [(name, "no-policy-found", "certificate-not-trusted", 1)])
        failed_counted = [x for x in self.tls_rows(r, dom) if x["tls_required_no"] == 0
                          and x["result_type"] != "success"]
        self.assertEqual(len(failed_counted), 1, "only the message without the header counts: %s"
                         % failed_counted)
        self.assertEqual(len(self.fetches(dom)), 1, "the header skips the policy lookup")


if __name__ == "__main__":
    unittest.main()
