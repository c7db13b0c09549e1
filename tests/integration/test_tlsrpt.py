#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""SMTP TLS reporting (RFC 8460) end to end, against real peers on loopback.

Real outbound sessions are recorded by the relay in tls_sessions; `strictrelay
tlsrpt run` (and the daemon's daily timer) turn them into reports that go to
the lab's HTTPS POST capture (nginx + httpback) and, for mailto: ruas, through
the relay's own queue to aiosmtpd MX peers. Checklist items RPT-01..29, D8,
D11, D12 (/work/shared/spec/checklists.md section 2).

  01 every result type in one run: valid certificate (success), wrong name
     (certificate-host-mismatch), expired (certificate-expired), self-signed
     and other-CA (certificate-not-trusted), no STARTTLS
     (starttls-not-supported), an MX outside an enforce policy (D8:
     validation-failure + mx-not-in-policy, never contacted) and outside a
     testing policy (contacted), policy fetch errors (sts-policy-fetch-error:
     404; sts-policy-invalid: text/html, a bad policy; sts-webpki-invalid: an
     expired certificate on the policy host), a domain without a policy
     (no-policy-found, D11). Every report is checked field by field against
     the RFC tables (exact key sets, types, RFC 3339 date range of the whole
     UTC day, report-id, policy-string one element per line, mx-host an
     array, failure-details keys and counts) and against two independent
     expectations: what the test sent (MX transcripts: addresses, EHLO
     names, session counts) and a re-aggregation of the tls_sessions rows.
     File name, gzip round trip, one POST per report with the file's bytes,
     tlsrpt_reports / tlsrpt_deliveries rows, mailto copies in the queue.
     Records: a multi-string record next to an unrelated TXT record (RPT-01),
     whitespace around "," and a trailing ";", a %-encoded mailto address
     with a query (RPT-02).
  02 HTTPS delivery: 503 leaves the delivery pending (attempts 1, next
     attempt in 10 min) and the report pending; 200 after a restart delivers
     the same bytes (report sent); a report whose 24 h retry window is over
     fails; a report with an https and a mailto rua is 'sent' as soon as the
     mail was queued (RPT-03), its failing https delivery is not retried
     before it is due; a 302 is no success and is not followed (RPT-22 [I]).
  03 mailto: the report mail through the queue to a loopback MX, parsed as
     MIME (multipart/report; report-type=tlsrpt, text/plain, base64
     application/tlsrpt+gzip attachment named like the file), TLS-Report-*
     headers, Subject, TLS-Required: No, no REQUIRETLS; DKIM verified by
     Debian's `dkimverify` (RSA-2048 and Ed25519 keys from `openssl genpkey`,
     key records from `strictrelay tlsrpt dkim-record` served by the lab DNS
     through its port-53 stub) and by dkimpy in strict TLSRPT mode; tampered
     copies fail. The report mail's own session is not counted in the next
     report (tls_required_no = 1).
  04 no report without a usable _smtp._tls record (none, two records, no
     rua, only an unknown scheme): logged, state no-rua, no POST; a day with
     only successes (failure-details []), where the session of a
     TLS-Required: No message is not counted (RPT-13, D11); a second run
     skips the day, --force sends a new report with a new report-id,
     --no-send writes files and records nothing.
  05 the daemon's daily timer: rows dated yesterday and the day before
     (inserted into SQLite directly) are reported within seconds of a start
     with max_delay = 0s; today and a day beyond the 7-day catch-up window
     are not; a restart reports nothing twice. RPT-14 address forms.
  06 prints one real report (pretty JSON) for the record.

Test shortcuts (documented where used): tls_sessions rows inserted directly
(05), tlsrpt_deliveries.next_attempt and tlsrpt_reports.created moved in
SQLite while the relay is stopped (02) instead of waiting 10 minutes or a day.

Every relay is stopped at the end of its test: exit status 0, no sanitizer
report, no error-level log line; every CLI run: exit status 0 and no
sanitizer report.

Run: meson test -C build tlsrpt --print-errorlogs
 or: STRICTRELAY_BIN=$PWD/build/strictrelay /usr/bin/python3 tests/integration/test_tlsrpt.py
"""

import base64
import collections
import datetime
import email
import email.policy
import gzip
import ipaddress
import json
import os
import re
import smtplib
import sqlite3
import subprocess
import sys
import time
import unittest

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))

from lab import Lab, LabCase, wait_for  # noqa: E402
from relaycase import SANITIZER_RE  # noqa: E402

ERROR_LINE_RE = re.compile(r"(?m)^\S+ (error|crit|fatal) .*$")
QID_RE = r"[0-9A-Z]{12}"

REPORTS = "reports.test"              # every HTTPS rua lives here, one path per domain
RUA_MX = "mx.rua.test"                # MX of rua.test, where mailto reports go
CONTACT = "tlsrpt@sender.test"
SUBMITTER = "sender.test"
ORG = "strictrelay test lab"
TLSRPT_CONF = {"contact_info": CONTACT, "organization_name": ORG, "max_delay": "0s"}
# No retry during a test: every extra session would change the counts.
QUEUE_CONF = {"retry_schedule": "1h"}

RESULT_TYPES = {"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
                "dane-required", "sts-policy-fetch-error", "sts-policy-invalid",
                "sts-webpki-invalid"}
DETAIL_KEYS = {"result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
               "receiving-ip", "failed-session-count", "additional-information",
               "failure-reason-code"}
FETCH_TYPES = {"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"}
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
ADDR_SPEC_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def sts_lines(mode, mx, max_age=86400):
    """The policy lines lab.mta_sts() publishes (CRLF-joined there)."""
    return ["version: STSv1", "mode: %s" % mode] + ["mx: %s" % m for m in mx] + \
        ["max_age: %d" % max_age]


POLICY_ENFORCE = sts_lines("enforce", ["*.enforce.test"])
POLICY_TESTING = sts_lines("testing", ["mx1.testing.test"])
POLICY_OKONLY = sts_lines("enforce", ["mx1.okonly.test"])
BAD_POLICY = "version: STSv1\r\nmode: bogus\r\nmx: mx.fetch.test\r\nmax_age: 86400\r\n"
HTML_POLICY = {"content_type": "text/html",
               "body": "version: STSv1\r\nmode: enforce\r\nmx: mx.fetch.test\r\nmax_age: 86400\r\n"}

# enforce.test: MX hosts in preference order; every one but the last fails
# in its own way, the last takes the message. mx0.elsewhere.test is outside
# the policy (D8) and must never be contacted.
ENFORCE_MX = [
    ("mx-name.enforce.test", "certificate-host-mismatch", "hostname mismatch"),
    ("mx-exp.enforce.test", "certificate-expired", "certificate has expired"),
    ("mx-self.enforce.test", "certificate-not-trusted", "self-signed certificate"),
    ("mx-other.enforce.test", "certificate-not-trusted", "unable to get local issuer certificate"),
    ("mx-plain.enforce.test", "starttls-not-supported", None),
    ("mx-ok.enforce.test", "success", None),
]
# test 01's mailto ruas as published, and the address the mail goes to
MAILTO_01 = {"enforce.test": ("mailto:tlsrpt%2Benforce@rua.test?subject=ignored",
                              "tlsrpt+enforce@rua.test"),
             "nopolicy.test": ("mailto:tlsrpt@rua.test", "tlsrpt@rua.test")}
FETCH_CASES = [   # domain, failure type, failure-reason-code
    ("f404.test", "sts-policy-fetch-error", "policy host mta-sts.f404.test answered HTTP 404"),
    ("fhtml.test", "sts-policy-invalid",
     'policy host mta-sts.fhtml.test sent media type "text/html", not text/plain'),
    ("fbad.test", "sts-policy-invalid",
     "the policy from mta-sts.fbad.test is invalid: line 2: unknown mode bogus"),
    ("fcert.test", "sts-webpki-invalid",
     "policy host mta-sts.fcert.test: SSL certificate problem: certificate has expired (curl 60)"),
]

VERIFY_STRICT = (
    "import sys, dkim\n"
    "msg = open(sys.argv[1], 'rb').read()\n"
    "ok = dkim.verify(msg, tlsrpt='strict')\n"
    "print('strict tlsrpt verify:', ok)\n"
    "sys.exit(0 if ok else 1)\n")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def day_text(day0):
    return time.strftime("%Y-%m-%d", time.gmtime(day0))


def norm_ip(s):
    """RFC 5952 text for IPv6, dotted IPv4 for IPv4(-mapped); other text unchanged."""
    try:
        a = ipaddress.ip_address(s)
    except ValueError:
        return s
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


def lines(text):
    out = []
    for ln in (text or "").split("\n"):
        ln = ln[:-1] if ln.endswith("\r") else ln
        if ln:
            out.append(ln)
    return out


def unique_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = [k for k, n in collections.Counter(keys).items() if n > 1]
    if dup:
        raise ValueError("duplicate JSON member(s) %s (I-JSON, RFC 7493)" % dup)
    return dict(pairs)


def canon(obj):
    return json.dumps(obj, sort_keys=True)


def sort_policies(policies):
    """Policies (and their failure-details) in a canonical order for comparison."""
    out = []
    for p in policies:
        q = dict(p)
        q["failure-details"] = sorted(p.get("failure-details", []), key=canon)
        out.append(q)
    return sorted(out, key=canon)


def aggregate_rows(rows):
    """An independent re-aggregation of tls_sessions rows into RFC 8460
    policies[], after the rules documented in tlsrpt/report.h."""
    pols = collections.OrderedDict()
    for r in rows:
        if r["tls_required_no"]:
            continue
        none = r["policy_type"] == "no-policy-found"
        key = (r["policy_type"], () if none else tuple(lines(r["policy_strings"])),
               () if none else tuple(lines(r["policy_mx"])))
        p = pols.setdefault(key, {"ok": 0, "fail": collections.Counter(),
                                  "why": collections.defaultdict(collections.Counter)})
        if r["mx_host"] == "":
            ok, rt = False, r["result_type"]
        elif none:
            ok = bool(r["tls"])
            rt = "validation-failure" if r["starttls_offered"] else "starttls-not-supported"
        else:
            ok, rt = r["result_type"] == "success", r["result_type"]
        if ok:
            p["ok"] += 1
            continue
        k = (rt or "validation-failure", norm_ip(r["sending_ip"]),
             r["mx_host"].lower().rstrip("."), r["mx_helo"], norm_ip(r["mx_ip"]))
        p["fail"][k] += 1
        if r["detail"]:
            p["why"][k][r["detail"]] += 1
    out = []
    for (ptype, strings, mx), p in pols.items():
        policy = {"policy-type": ptype, "policy-domain": rows[0]["policy_domain"].lower()}
        if ptype != "no-policy-found":
            policy["policy-string"] = list(strings)
            policy["mx-host"] = list(mx)
        details = []
        for k, n in p["fail"].items():
            d = {"result-type": k[0], "failed-session-count": n}
            for name, v in zip(("sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
                                "receiving-ip"), k[1:]):
                if v:
                    d[name] = v
            if p["why"][k]:
                best = sorted(p["why"][k].items(), key=lambda kv: (-kv[1], kv[0].encode()))[0][0]
                d["failure-reason-code"] = best
            details.append(d)
        out.append({"policy": policy,
                    "summary": {"total-successful-session-count": p["ok"],
                                "total-failure-session-count": sum(p["fail"].values())},
                    "failure-details": details})
    return out


def mx_session_facts(lab, endpoint):
    """What the MX side saw of each session at endpoint: (sending ip,
    receiving ip, greeting name), from the aiosmtpd transcript."""
    out = []
    for s in lab.mx.sessions(endpoint):
        src = dst = helo = None
        for e in s["events"]:
            m = re.match(r"^connect from (\S+):\d+ to (\S+):\d+$", e["line"])
            if e["dir"] == "*" and m:
                src, dst = m.group(1), m.group(2)
            m = re.match(r"^220 (\S+) ", e["line"])
            if e["dir"] == "S" and m and helo is None:
                helo = m.group(1)
        out.append((src, dst, helo))
    return out


def parse_dkim_tags(value):
    v = re.sub(r"\s+", "", value)
    return dict(t.split("=", 1) for t in v.split(";") if t)


# ---------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------

class TlsrptTest(LabCase):
    """One lab for the whole file; each test has its own relay (own state
    directory, so its own tls_sessions) and its own domains."""

    maxDiff = None
    timing_label = "tlsrpt"
    example = None          # (file name, pretty JSON) of one real report, for test_06

    @classmethod
    def setUpClass(cls):
        # Reports are per UTC day: never straddle midnight. Only within the
        # last 150 s of a day does this wait (for the next day to begin).
        left = 86400 - time.time() % 86400
        if left < 150:
            sys.stderr.write("tlsrpt: %.0f s to UTC midnight: waiting for the new day\n" % left)
            time.sleep(left + 1)
        cls.day0 = int(time.time()) - int(time.time()) % 86400
        cls.day = day_text(cls.day0)
        cls.lab = lab = Lab("tlsrpt")
        try:
            cls._declare(lab)
            lab.start()
            cls._keys(lab)
        except BaseException:
            lab.close(failed=True)
            raise

    @classmethod
    def _https_rua(cls, lab, domain, status=200, txt=None):
        """A POST capture at https://reports.test:8443/DOMAIN answering
        `status`; the _smtp._tls record is lab.tlsrpt_https()'s unless txt
        replaces it (a str, or a list of several records)."""
        url = lab.tlsrpt_https(domain, host=REPORTS, path="/" + domain, status=status)
        if txt is not None:
            lab.dns.remove("_smtp._tls." + domain, "TXT")
            for t in ([txt] if isinstance(txt, str) else txt):
                lab.dns.txt("_smtp._tls." + domain, t)
        return url

    @classmethod
    def _declare(cls, lab):
        mx, dns, ca = lab.mx, lab.dns, lab.ca
        rua_https = "https://%s:8443/" % REPORTS
        # where mailto: reports go
        mx.add(RUA_MX)
        dns.mx("rua.test", RUA_MX)

        # --- 01 ------------------------------------------------------------------
        mx.add("mx0.elsewhere.test")                    # outside enforce.test's policy
        dns.mx("enforce.test", "mx0.elsewhere.test", 5)
        certs = {"mx-name.enforce.test": ca.issue("somebody-else.test"),
                 "mx-exp.enforce.test": {"expired": True},
                 "mx-self.enforce.test": {"self_signed": True},
                 "mx-other.enforce.test": {"other_ca": True}}
        for i, (name, _, _) in enumerate(ENFORCE_MX):
            if name.startswith("mx-plain"):
                mx.add(name, starttls=False)
            else:
                mx.add(name, cert=certs.get(name))
            dns.mx("enforce.test", name, 10 * (i + 1))
        # RPT-12: a refused connection is no TLS session (not recorded)
        mx.add("mx-down.enforce.test", refuse=True)
        dns.mx("enforce.test", "mx-down.enforce.test", 15)
        lab.mta_sts("enforce.test", mode="enforce", mx=["*.enforce.test"])
        # RPT-02: the mailto address is %-decoded, its query dropped
        cls._https_rua(lab, "enforce.test", txt="v=TLSRPTv1; rua=%senforce.test,"
                       "mailto:tlsrpt%%2Benforce@rua.test?subject=ignored" % rua_https)

        # testing.test: first an MX outside the policy, then (DNS changed) the
        # policy's MX with a certificate for another name; both take the mail.
        mx.add("mx.outside.test")
        mx.add("mx1.testing.test", cert=ca.issue("somebody-else.test"))
        dns.mx("testing.test", "mx.outside.test")
        lab.mta_sts("testing.test", mode="testing", mx=["mx1.testing.test"])
        # RPT-01: character-strings joined without spaces; a TXT record that
        # is no v=TLSRPTv1 record is ignored
        cls._https_rua(lab, "testing.test", txt=[
            ["v=TLSRPTv1; rua=https://reports.te", "st:8443/testing.test"],
            "site-verification=0123456789abcdef"])

        # nopolicy.test: no MTA-STS. First an expired certificate (TLS is
        # established: a success without a policy, D11), then no STARTTLS.
        mx.add("mx-exp.nopolicy.test", cert={"expired": True})
        mx.add("mx-plain.nopolicy.test", starttls=False)
        dns.mx("nopolicy.test", "mx-exp.nopolicy.test")
        cls._https_rua(lab, "nopolicy.test", txt="v=TLSRPTv1;rua=mailto:tlsrpt@rua.test , "
                       "%snopolicy.test;" % rua_https)

        # policy fetch failures; the mail then goes to mx.fetch.test without a policy
        mx.add("mx.fetch.test")
        for dom, _, _ in FETCH_CASES:
            dns.mx(dom, "mx.fetch.test")
            cls._https_rua(lab, dom)
        lab.mta_sts("f404.test", policy={"status": 404, "body": "no such policy\n"})
        lab.mta_sts("fhtml.test", policy=HTML_POLICY)
        lab.mta_sts("fbad.test", policy=BAD_POLICY)
        lab.mta_sts("fcert.test", mode="enforce", mx=["mx.fetch.test"], cert={"expired": True})

        # --- 02 ------------------------------------------------------------------
        mx.add("mx.t2.test")
        for dom in ("retry.test", "expire.test", "both.test"):
            dns.mx(dom, "mx.t2.test")
            cls._https_rua(lab, dom, status=503)
        dns.remove("_smtp._tls.both.test", "TXT")
        dns.txt("_smtp._tls.both.test",
                "v=TLSRPTv1; rua=%sboth.test, mailto:tlsrpt@rua.test" % rua_https)
        # RPT-22 [I]: a redirect is not followed (and is no success)
        dns.mx("redirect.test", "mx.t2.test")
        cls._https_rua(lab, "redirect.test")
        lab.https.set_file(REPORTS, "/redirect.test", {
            "status": 302, "location": "https://%s:8443/redirect-target" % REPORTS, "capture": True})
        lab.https.set_file(REPORTS, "/redirect-target", {"status": 200, "capture": True})

        # --- 03: the report goes to the policy domain itself -----------------------
        mx.add("mx1.mailrpt.test")
        dns.mx("mailrpt.test", "mx1.mailrpt.test")
        dns.txt("_smtp._tls.mailrpt.test", "v=TLSRPTv1; rua=mailto:tlsrpt@mailrpt.test")

        # --- 04 ------------------------------------------------------------------
        mx.add("mx.t4.test")
        mx.add("mx1.okonly.test")
        dns.mx("okonly.test", "mx1.okonly.test")
        lab.mta_sts("okonly.test", mode="enforce", mx=["mx1.okonly.test"])
        cls._https_rua(lab, "okonly.test")
        for dom in ("norec.test", "tworec.test", "norua.test", "badscheme.test"):
            dns.mx(dom, "mx.t4.test")
        cls._https_rua(lab, "tworec.test", txt=[
            "v=TLSRPTv1; rua=%stworec.test" % rua_https,
            "v=TLSRPTv1; rua=mailto:tlsrpt@rua.test"])
        dns.txt("_smtp._tls.norua.test", "v=TLSRPTv1; ruf=mailto:tlsrpt@rua.test")
        dns.txt("_smtp._tls.badscheme.test", "v=TLSRPTv1; rua=ftp://%s/badscheme" % REPORTS)

        # --- 05 ------------------------------------------------------------------
        cls._https_rua(lab, "catchup.test")
        cls._https_rua(lab, "catchup2.test")

    @classmethod
    def _keys(cls, lab):
        """DKIM keys made with openssl genpkey: RSA-2048 and Ed25519."""
        cls.rsa_key = os.path.join(lab.dir, "dkim-rsa.key")
        cls.ed_key = os.path.join(lab.dir, "dkim-ed25519.key")
        for path, args in ((cls.rsa_key, ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                           (cls.ed_key, ["-algorithm", "ed25519"])):
            subprocess.run(["openssl", "genpkey"] + args + ["-out", path], check=True,
                           capture_output=True)
            os.chmod(path, 0o644)

    # -- relays and the CLI ----------------------------------------------------------
    def relay(self, start=True, **config):
        config.setdefault("tlsrpt", dict(TLSRPT_CONF))
        config.setdefault("queue", dict(QUEUE_CONF))
        r = self.lab.relay(start=start, **config)
        self.addCleanup(self.check_relay_end, r)
        return r

    def check_relay_end(self, r):
        """Alive until now, exit 0 on SIGTERM, no sanitizer report, no error line."""
        if r._proc is None:
            return
        if getattr(r, "stopped_rc", None) is None:
            self.assertTrue(r.running(), "relay %d died; log:\n%s" % (r.index, r.log_text()[-4000:]))
            r.stopped_rc = r.stop()
        self.assertEqual(r.stopped_rc, 0, "relay %d exit status; log:\n%s" % (r.index, r.log_text()[-4000:]))
        text = r.log_text()
        m = SANITIZER_RE.search(text)
        self.assertIsNone(m, "sanitizer report in relay %d log:\n%s" % (
            r.index, text[m.start():m.start() + 4000] if m else ""))
        m = ERROR_LINE_RE.search(text)
        self.assertIsNone(m, "error-level line in relay %d log: %s" % (r.index, m.group(0) if m else ""))

    def restart(self, r):
        rc = r.stop()
        self.assertEqual(rc, 0, "relay exit status on SIGTERM; log:\n%s" % r.log_text()[-4000:])
        r.start()

    def cli(self, r, *args, ok=True):
        """strictrelay ARGS -c CONF: no sanitizer report; exit 0 unless ok=False."""
        p = r.cli(*args)
        out = p.stdout + p.stderr
        m = SANITIZER_RE.search(out)
        self.assertIsNone(m, "sanitizer report from `%s`:\n%s" % (" ".join(args), out[m.start():] if m else ""))
        if ok:
            self.assertEqual(p.returncode, 0, "`%s` exit status:\n%s" % (" ".join(args), out))
            m = ERROR_LINE_RE.search(p.stderr)
            self.assertIsNone(m, "error-level line from `%s`: %s" % (" ".join(args), m.group(0) if m else ""))
        return p

    def run_report(self, r, *extra, out=None):
        """`tlsrpt run --date DAY [--out DIR] EXTRA`; returns (summary line, stderr)."""
        args = ["tlsrpt", "run", "--date", self.day] + (["--out", out] if out else []) + list(extra)
        p = self.cli(r, *args)
        summary = p.stdout.strip()
        self.assertEqual(len(summary.splitlines()), 1, "one summary line: %r" % p.stdout)
        return summary, p.stderr

    def summary(self, domains, reports, delivered, pending, no_rua, skipped, errors=0):
        return ("%s: %d policy domain%s, %d report%s built, %d delivered, %d pending, "
                "%d without rua, %d already reported, %d errors" % (
                    self.day, domains, "" if domains == 1 else "s", reports,
                    "" if reports == 1 else "s", delivered, pending, no_rua, skipped, errors))

    # -- SQLite --------------------------------------------------------------------------
    @staticmethod
    def db_rows(r, sql, args=()):
        path = os.path.join(r.state_dir, "queue.db")
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            return [dict(x) for x in con.execute(sql, args)]
        finally:
            con.close()

    @staticmethod
    def db_write(r, sql, args=()):
        """A test shortcut: writes the relay's queue.db directly (relay stopped)."""
        assert not r.running(), "db_write with the relay running"
        con = sqlite3.connect(os.path.join(r.state_dir, "queue.db"), timeout=10)
        try:
            cur = con.execute(sql, args)
            con.commit()
            return cur.rowcount
        finally:
            con.close()

    def tls_rows(self, r, domain=None):
        rows = self.db_rows(r, "SELECT * FROM tls_sessions ORDER BY id")
        return [x for x in rows if domain is None or x["policy_domain"] == domain]

    def wait_rows(self, r, domain, n, timeout=10):
        try:
            return wait_for(lambda: len(self.tls_rows(r, domain)) >= n and self.tls_rows(r, domain),
                            timeout, 0.05, "%d tls_sessions rows for %s" % (n, domain))
        except AssertionError:
            self.fail("expected %d tls_sessions rows for %s, have %d; relay log:\n%s" % (
                n, domain, len(self.tls_rows(r, domain)), r.log_text()[-4000:]))

    def reports(self, r, domain=None):
        rows = self.db_rows(r, "SELECT * FROM tlsrpt_reports ORDER BY id")
        return [x for x in rows if domain is None or x["policy_domain"] == domain]

    def deliveries(self, r, report_id):
        return self.db_rows(r, "SELECT * FROM tlsrpt_deliveries WHERE report = ? ORDER BY id",
                            (report_id,))

    # -- sending -------------------------------------------------------------------------
    def send(self, r, rcpt, endpoint, tag, headers=""):
        """One message through the relay; waits until `endpoint` has it."""
        lab = self.lab
        before = len([m for m in lab.mx.messages(endpoint) if m["rcpt_tos"] == [rcpt]])
        data = ("From: <sender@client.test>\r\nTo: <%s>\r\nSubject: tlsrpt test %s\r\n"
                "Message-ID: <%s@client.test>\r\n%s\r\nHello %s.\r\n" % (
                    rcpt, tag, tag, headers, tag)).encode()
        s = smtplib.SMTP(r.ip, r.port, local_hostname="client.test", timeout=30)
        try:
            s.sendmail("sender@client.test", [rcpt], data)
            s.quit()
        finally:
            s.close()
        try:
            wait_for(lambda: len([m for m in lab.mx.messages(endpoint) if m["rcpt_tos"] == [rcpt]])
                     > before, 15, 0.05, "message %s at %s" % (tag, endpoint))
        except AssertionError:
            self.fail("message %s for %s never reached %s; relay log:\n%s\nMX transcript:\n%s" % (
                tag, rcpt, endpoint, r.log_text()[-5000:], lab.mx.transcript(endpoint)[-3000:]))

    # -- HTTPS posts ------------------------------------------------------------------------
    def posts_at(self, path):
        return [p for p in self.lab.https.posts(REPORTS) if p["path"] == path]

    def wait_posts_at(self, path, n, timeout=15):
        try:
            return wait_for(lambda: len(self.posts_at(path)) >= n and self.posts_at(path),
                            timeout, 0.05, "%d POST(s) at %s" % (n, path))
        except AssertionError:
            self.fail("expected %d POST(s) at %s, got %d; relay logs:\n%s" % (
                n, path, len(self.posts_at(path)), self.lab.relay_log_tails()))

    def check_post(self, post, body):
        self.assertEqual(post["method"], "POST")
        ctype = {k.lower(): v for k, v in post["headers"].items()}.get("content-type")
        self.assertEqual(ctype, "application/tlsrpt+gzip", "RPT-22 media type")
        self.assertEqual(post["body"], body, "the POST carries the report file's bytes")

    # -- mail at the MX peers ------------------------------------------------------------
    def report_mails(self, endpoint, rcpt, domain):
        """Report mails for `domain` to `rcpt` that reached `endpoint`."""
        tag = b"\r\nTLS-Report-Domain: " + domain.encode() + b"\r\n"
        return [m for m in self.lab.mx.messages(endpoint) if m["rcpt_tos"] == [rcpt] and tag in m["data"]]

    def wait_report_mails(self, endpoint, rcpt, domain, n, timeout=15):
        try:
            return wait_for(lambda: len(self.report_mails(endpoint, rcpt, domain)) >= n
                            and self.report_mails(endpoint, rcpt, domain), timeout, 0.05,
                            "%d report mail(s) at %s" % (n, endpoint))
        except AssertionError:
            self.fail("expected %d report mail(s) for %s to %s at %s, got %d; relay logs:\n%s" % (
                n, domain, rcpt, endpoint, len(self.report_mails(endpoint, rcpt, domain)),
                self.lab.relay_log_tails()))

    # -- the report itself -----------------------------------------------------------------
    def read_out(self, out_dir):
        """{policy domain: (file name, gzip bytes)} of the files in out_dir."""
        files = {}
        for fn in sorted(os.listdir(out_dir)):
            m = re.match(r"^([^!]+)!([^!]+)!(\d+)!(\d+)!([0-9a-f]+)\.json\.gz$", fn)
            self.assertIsNotNone(m, "RPT-20 file name: %r" % fn)
            self.assertNotIn(m.group(2), files, "one file per policy domain in %s" % out_dir)
            with open(os.path.join(out_dir, fn), "rb") as f:
                files[m.group(2)] = (fn, f.read())
        return files

    def check_report(self, fn, gz, domain):
        """Field-by-field checks of one report (RFC 8460 4.4, checklist 2.2,
        RPT-20/21); returns the parsed JSON."""
        self.assertEqual(gz[:3], b"\x1f\x8b\x08", "RPT-21: gzip (deflate) magic")
        raw = gzip.decompress(gz)
        text = raw.decode("utf-8")               # I-JSON: UTF-8
        doc = json.loads(text, object_pairs_hook=unique_keys)
        # top level
        self.assertEqual(set(doc), {"organization-name", "date-range", "contact-info", "report-id",
                                    "policies"}, "top-level members")
        self.assertEqual(doc["organization-name"], ORG)
        dr = doc["date-range"]
        self.assertIsInstance(dr, dict)
        self.assertEqual(set(dr), {"start-datetime", "end-datetime"})
        for k in dr:
            self.assertRegex(dr[k], RFC3339_RE, "RFC 3339 %s" % k)
        start = datetime.datetime.fromisoformat(dr["start-datetime"].replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(dr["end-datetime"].replace("Z", "+00:00"))
        self.assertEqual(int(start.timestamp()), self.day0, "date range starts at UTC midnight")
        self.assertEqual(int(end.timestamp()), self.day0 + 86400, "date range ends at the next midnight")
        self.assertEqual(dr["start-datetime"], self.day + "T00:00:00Z")
        self.assertIsInstance(doc["contact-info"], str)
        self.assertRegex(doc["contact-info"], ADDR_SPEC_RE, "contact-info is an addr-spec")
        self.assertEqual(doc["contact-info"], CONTACT)
        rid = doc["report-id"]
        self.assertIsInstance(rid, str)
        m = re.match(r"^%s\.%s\.([0-9a-f]{16})@%s$" % (re.escape(self.day), re.escape(domain),
                                                       re.escape(SUBMITTER)), rid)
        self.assertIsNotNone(m, "report-id shape: %r" % rid)
        # file name: sender!policy-domain!begin!end!unique-id.json.gz (RPT-20)
        self.assertEqual(fn, "%s!%s!%d!%d!%s.json.gz" % (SUBMITTER, domain, int(start.timestamp()),
                                                        int(end.timestamp()), m.group(1)))
        # policies
        self.assertIsInstance(doc["policies"], list, "policies MUST be an array")
        self.assertGreaterEqual(len(doc["policies"]), 1)
        for p in doc["policies"]:
            self.assertEqual(set(p), {"policy", "summary", "failure-details"})
            pol = p["policy"]
            self.assertIn(pol["policy-type"], ("sts", "tlsa", "no-policy-found"))
            if pol["policy-type"] == "no-policy-found":
                self.assertEqual(set(pol), {"policy-type", "policy-domain"}, "D11")
            else:
                self.assertEqual(set(pol), {"policy-type", "policy-string", "policy-domain", "mx-host"})
                self.assertIsInstance(pol["policy-string"], list)
                self.assertTrue(all(isinstance(x, str) and "\n" not in x and "\r" not in x
                                    for x in pol["policy-string"]), "one line per element, never nested")
                self.assertIsInstance(pol["mx-host"], list, "D12: mx-host is an array")
                self.assertTrue(all(isinstance(x, str) for x in pol["mx-host"]))
            self.assertEqual(pol["policy-domain"], domain)
            s = p["summary"]
            self.assertEqual(set(s), {"total-successful-session-count", "total-failure-session-count"})
            for k, v in s.items():
                self.assertIs(type(v), int, "%s is a JSON integer" % k)
                self.assertGreaterEqual(v, 0)
            self.assertIsInstance(p["failure-details"], list)
            total = 0
            for d in p["failure-details"]:
                self.assertLessEqual(set(d), DETAIL_KEYS, "unknown failure-details member")
                self.assertIn(d["result-type"], RESULT_TYPES, "RPT-11 registry")
                self.assertIs(type(d["failed-session-count"]), int)
                self.assertGreaterEqual(d["failed-session-count"], 1)
                total += d["failed-session-count"]
                for k in set(d) - {"failed-session-count"}:
                    self.assertIsInstance(d[k], str)
                    self.assertNotEqual(d[k], "", "empty values are left out, not written as \"\"")
                if d["result-type"] in ("certificate-not-trusted", "validation-failure"):
                    self.assertIn("failure-reason-code", d, "SHOULD for %s" % d["result-type"])
                if d["result-type"] not in FETCH_TYPES and \
                        d.get("failure-reason-code") != "mx-not-in-policy":
                    for k in ("sending-mta-ip", "receiving-mx-hostname", "receiving-ip"):
                        self.assertIn(k, d, "required for a session failure")
                for k in ("sending-mta-ip", "receiving-ip"):
                    if k in d:
                        self.assertEqual(d[k], norm_ip(d[k]), "RPT-14 address form")
            # the implementation's documented rule: one row counts once
            self.assertEqual(total, s["total-failure-session-count"])
        return doc

    def expect_report(self, doc, expected, rows):
        """doc's policies equal `expected` (what the test sent) and the
        re-aggregation of the relay's rows for the domain."""
        got = sort_policies(doc["policies"])
        self.assertEqual(got, sort_policies(expected),
                         "report vs what was sent:\n%s" % json.dumps(doc["policies"], indent=1))
        self.assertEqual(got, sort_policies(aggregate_rows(rows)),
                         "report vs tls_sessions rows:\n%s" % json.dumps(rows, indent=1))

    @staticmethod
    def detail(rt, count, facts=None, host=None, reason=None):
        """An expected failure-details element; facts = (sending ip, receiving ip, helo)."""
        d = {"result-type": rt, "failed-session-count": count}
        if facts is not None:
            d["sending-mta-ip"], d["receiving-ip"], d["receiving-mx-helo"] = facts
        if host is not None:
            d["receiving-mx-hostname"] = host
        if reason is not None:
            d["failure-reason-code"] = reason
        return d

    def one_fact(self, endpoint, n):
        """The MX side's (sending ip, receiving ip, helo) of its n sessions (all alike)."""
        facts = mx_session_facts(self.lab, endpoint)
        self.assertEqual(len(facts), n, "sessions at %s" % endpoint)
        self.assertEqual(len(set(facts)), 1, "all sessions at %s alike: %s" % (endpoint, facts))
        self.assertNotIn(None, facts[0])
        return facts[0]

    def check_report_mail(self, m, domain, fn, gz, report_id, sender):
        """RPT-23..27 on a report mail as the MX received it; returns the parsed message."""
        self.assertEqual(m["mail_from"], sender)
        self.assertNotIn("REQUIRETLS", " ".join(m["mail_options"]).upper(),
                         "RPT-27: never sent with REQUIRETLS")
        msg = email.message_from_bytes(m["data"], policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "tlsrpt", "RPT-23")
        self.assertEqual(msg["TLS-Report-Domain"], domain, "RPT-24")
        self.assertEqual(msg["TLS-Report-Submitter"], SUBMITTER, "RPT-24")
        self.assertEqual(msg["TLS-Report-Submitter"], CONTACT.split("@")[1],
                         "submitter = the domain of contact-info")
        self.assertEqual(re.sub(r"\s+", " ", str(msg["Subject"])).strip(),
                         "Report Domain: %s Submitter: %s Report-ID: <%s>" % (domain, SUBMITTER, report_id),
                         "RPT-25")
        self.assertEqual(msg["TLS-Required"], "No", "RPT-27 [I]")
        self.assertEqual(len(msg.get_all("TLS-Report-Domain")), 1)
        parts = list(msg.iter_parts())
        self.assertEqual([p.get_content_type() for p in parts], ["text/plain", "application/tlsrpt+gzip"])
        att = parts[1]
        self.assertEqual(att.get_content_disposition(), "attachment")
        self.assertEqual(att.get_filename(), fn, "RPT-23: attachment named like the RPT-20 file")
        self.assertEqual(att["Content-Transfer-Encoding"], "base64")
        payload = att.get_payload(decode=True)
        self.assertEqual(payload, gz, "the attachment is the report file")
        self.assertEqual(json.loads(gzip.decompress(payload)), json.loads(gzip.decompress(gz)))
        self.assertIn(domain, parts[0].get_content())
        return msg

    # ===================================================================================
    # 01 every result type, field by field
    # ===================================================================================
    def test_01_every_result_type(self):
        lab = self.lab
        r = self.relay()
        # testing.test: first the MX outside the policy gets the mail (testing
        # mode); nopolicy.test: first an expired certificate
        self.send(r, "bob@testing.test", "mx.outside.test", "testing0")
        self.wait_rows(r, "testing.test", 1)
        self.send(r, "bob@nopolicy.test", "mx-exp.nopolicy.test", "nopolicy0")
        self.wait_rows(r, "nopolicy.test", 1)
        # then the policy's MX with the wrong name, and an MX without STARTTLS
        with lab.dns.change():
            for dom, host in (("testing.test", "mx1.testing.test"),
                              ("nopolicy.test", "mx-plain.nopolicy.test")):
                lab.dns.remove(dom, "MX")
                lab.dns.mx(dom, host)
        t_swap = time.monotonic()
        # enforce.test, twice: six MX sessions (five failing) plus the MX
        # outside the policy, which is skipped without a connection (D8)
        for i in range(2):
            self.send(r, "bob@enforce.test", "mx-ok.enforce.test", "enforce%d" % i)
            self.wait_rows(r, "enforce.test", 7 * (i + 1))
        # policy fetch failures, one message each (one after the other)
        for dom, _, _ in FETCH_CASES:
            self.send(r, "bob@" + dom, "mx.fetch.test", dom)
            self.wait_rows(r, dom, 2)
        # The relay caches DNS answers for their TTL (the lab's is 1 s): the
        # changed MX records are seen once the old answers expired.
        left = 1.5 - (time.monotonic() - t_swap)
        if left > 0:
            time.sleep(left)
        self.send(r, "bob@testing.test", "mx1.testing.test", "testing1")
        self.wait_rows(r, "testing.test", 2)
        self.send(r, "bob@nopolicy.test", "mx-plain.nopolicy.test", "nopolicy1")
        self.wait_rows(r, "nopolicy.test", 2)

        # what the relay recorded, per domain, matches what was sent
        rows = {d: self.tls_rows(r, d) for d in ["enforce.test", "testing.test", "nopolicy.test"]
                + [c[0] for c in FETCH_CASES]}
        self.assertEqual([(x["mx_host"], x["result_type"], x["detail"]) for x in rows["enforce.test"]],
                         2 * ([("mx0.elsewhere.test", "validation-failure", "mx-not-in-policy")]
                              + [(h, t, w or "") for h, t, w in ENFORCE_MX]))
        self.assertEqual(lab.mx.sessions("mx0.elsewhere.test"), [],
                         "D8: the MX outside an enforce policy is never contacted")
        self.assertEqual(len(re.findall(r"dest=enforce\.test mx=mx-down\.enforce\.test ip=\S+ not used: "
                                        r"connect: connection refused", r.log_text())), 2,
                         "the refusing MX was tried for each message")
        for dom, ftype, why in FETCH_CASES:
            got = [(x["policy_type"], x["mx_host"], x["result_type"], x["detail"]) for x in rows[dom]]
            self.assertEqual(sorted(got), sorted([("sts", "", ftype, why),
                                                  ("no-policy-found", "mx.fetch.test", "success", "")]))
        for dom, rs in rows.items():
            self.assertEqual([x["tls_required_no"] for x in rs], [0] * len(rs), dom)

        # --- the run ---
        out = os.path.join(lab.dir, "out01")
        os.mkdir(out)
        t_run = int(time.time())
        summary, log = self.run_report(r, out=out)
        t_end = int(time.time()) + 1
        self.assertEqual(summary, self.summary(7, 7, 7, 0, 0, 0))
        files = self.read_out(out)
        self.assertEqual(sorted(files), sorted(rows))
        docs = {d: self.check_report(fn, gz, d) for d, (fn, gz) in files.items()}

        # --- expectations from what was sent ---
        exp = {}
        enf = []
        for host, rt, why in ENFORCE_MX:
            if rt != "success":
                enf.append(self.detail(rt, 2, self.one_fact(host, 2), host, why))
        enf.append(self.detail("validation-failure", 2, None, "mx0.elsewhere.test", "mx-not-in-policy"))
        self.one_fact("mx-ok.enforce.test", 2)
        exp["enforce.test"] = [{
            "policy": {"policy-type": "sts", "policy-string": POLICY_ENFORCE,
                       "policy-domain": "enforce.test", "mx-host": ["*.enforce.test"]},
            "summary": {"total-successful-session-count": 2, "total-failure-session-count": 12},
            "failure-details": enf}]
        exp["testing.test"] = [{
            "policy": {"policy-type": "sts", "policy-string": POLICY_TESTING,
                       "policy-domain": "testing.test", "mx-host": ["mx1.testing.test"]},
            "summary": {"total-successful-session-count": 0, "total-failure-session-count": 2},
            "failure-details": [
                self.detail("validation-failure", 1, self.one_fact("mx.outside.test", 1),
                            "mx.outside.test", "mx-not-in-policy"),
                self.detail("certificate-host-mismatch", 1, self.one_fact("mx1.testing.test", 1),
                            "mx1.testing.test", "hostname mismatch")]}]
        self.one_fact("mx-exp.nopolicy.test", 1)
        exp["nopolicy.test"] = [{
            "policy": {"policy-type": "no-policy-found", "policy-domain": "nopolicy.test"},
            "summary": {"total-successful-session-count": 1, "total-failure-session-count": 1},
            "failure-details": [self.detail("starttls-not-supported", 1,
                                            self.one_fact("mx-plain.nopolicy.test", 1),
                                            "mx-plain.nopolicy.test")]}]
        self.one_fact("mx.fetch.test", len(FETCH_CASES))
        for dom, ftype, why in FETCH_CASES:
            exp[dom] = [
                {"policy": {"policy-type": "no-policy-found", "policy-domain": dom},
                 "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
                 "failure-details": []},
                # no MX session: only the type, the count and the reason [I]
                {"policy": {"policy-type": "sts", "policy-string": [], "policy-domain": dom,
                            "mx-host": []},
                 "summary": {"total-successful-session-count": 0, "total-failure-session-count": 1},
                 "failure-details": [self.detail(ftype, 1, None, None, why)]}]
        for dom in rows:
            self.expect_report(docs[dom], exp[dom], rows[dom])
        # every result type the relay can produce without DANE was seen
        seen = {d["result-type"] for doc in docs.values() for p in doc["policies"]
                for d in p["failure-details"]}
        self.assertEqual(seen, RESULT_TYPES - {"tlsa-invalid", "dnssec-invalid", "dane-required"})
        ids = [doc["report-id"] for doc in docs.values()]
        self.assertEqual(len(set(ids)), len(ids), "report-ids are unique")

        # --- HTTPS: exactly one POST per report, the file's bytes ---
        for dom, (fn, gz) in files.items():
            posts = self.posts_at("/" + dom)
            self.assertEqual(len(posts), 1, "one POST for %s" % dom)
            self.check_post(posts[0], gz)
            self.assertEqual(json.loads(gzip.decompress(posts[0]["body"])), docs[dom])

        # --- the records ---
        reps = self.reports(r)
        self.assertEqual(sorted(x["policy_domain"] for x in reps), sorted(rows))
        for rep in reps:
            dom = rep["policy_domain"]
            fn, gz = files[dom]
            self.assertEqual((rep["day"], rep["report_id"], rep["filename"], rep["state"]),
                             (self.day0, docs[dom]["report-id"], fn, "sent"), dom)
            self.assertEqual(rep["report"], gz, "the stored report is the file")
            self.assertTrue(t_run <= rep["created"] <= t_end, rep["created"])
            dvs = self.deliveries(r, rep["id"])
            https = [d for d in dvs if d["kind"] == "https"]
            self.assertEqual([(d["rua"], d["state"], d["attempts"], d["last_result"]) for d in https],
                             [("https://%s:8443/%s" % (REPORTS, dom), "sent", 1, "HTTP 200")])
            mails = [d for d in dvs if d["kind"] == "mailto"]
            if dom in MAILTO_01:
                self.assertEqual([(d["rua"], d["state"]) for d in mails],
                                 [(MAILTO_01[dom][0], "queued")])
                self.assertRegex(mails[0]["queue_id"], "^%s$" % QID_RE)
            else:
                self.assertEqual(mails, [])
            self.assertIn("domain=%s report_id=%s rua=https://%s:8443/%s status=sent result=\"HTTP 200\""
                          % (dom, docs[dom]["report-id"], REPORTS, dom), log)

        # --- the two mailto copies went through the queue (details: test 03) ---
        for dom, (rua, rcpt) in MAILTO_01.items():
            mails = self.wait_report_mails(RUA_MX, rcpt, dom, 1)
            self.assertEqual(len(mails), 1, rcpt)
            fn, gz = files[dom]
            msg = self.check_report_mail(mails[0], dom, fn, gz, docs[dom]["report-id"],
                                         "tlsrpt-noreply@relay.test")
            self.assertEqual(msg["To"], rcpt, "RPT-02: the %-decoded address, no query")

        fn, gz = files["enforce.test"]
        type(self).example = (fn, json.dumps(json.loads(gzip.decompress(gz)), indent=2))

    # ===================================================================================
    # 02 HTTPS: 503 -> pending, retry after a restart; window over -> failed; RPT-03
    # ===================================================================================
    def test_02_https_retry_and_rpt03(self):
        lab = self.lab
        r = self.relay()
        doms = ["both.test", "expire.test", "redirect.test", "retry.test"]
        for dom in doms:
            self.send(r, "bob@" + dom, "mx.t2.test", dom)
            self.wait_rows(r, dom, 1)
        out = os.path.join(lab.dir, "out02")
        os.mkdir(out)
        t0 = int(time.time())
        summary, log = self.run_report(r, out=out)
        t1 = int(time.time()) + 1
        self.assertEqual(summary, self.summary(4, 4, 1, 3, 0, 0))
        files = self.read_out(out)
        reps = {x["policy_domain"]: x for x in self.reports(r)}
        self.assertEqual(sorted(reps), doms)
        for dom in reps:
            status = 302 if dom == "redirect.test" else 503
            posts = self.posts_at("/" + dom)
            self.assertEqual(len(posts), 1, "one attempt at %s" % dom)
            self.check_post(posts[0], files[dom][1])
            self.assertEqual(reps[dom]["report"], files[dom][1])
            self.assertIn("domain=%s report_id=%s rua=https://%s:8443/%s status=pending result=\"HTTP %d\""
                          % (dom, reps[dom]["report_id"], REPORTS, dom, status), log)
            https = [d for d in self.deliveries(r, reps[dom]["id"]) if d["kind"] == "https"]
            self.assertEqual(len(https), 1)
            d = https[0]
            self.assertEqual((d["state"], d["attempts"], d["last_result"]), ("pending", 1, "HTTP %d" % status))
            self.assertTrue(t0 + 600 <= d["next_attempt"] <= t1 + 600,
                            "RPT-28: first retry after 10 minutes, not %d s" % (d["next_attempt"] - t0))
        self.assertEqual(self.posts_at("/redirect-target"), [], "RPT-22 [I]: redirects are not followed")
        for dom in ("retry.test", "expire.test", "redirect.test"):
            self.assertEqual(reps[dom]["state"], "pending", dom)
        # RPT-03: delivered once any endpoint took it (the mail was queued)
        self.assertEqual(reps["both.test"]["state"], "sent")
        mdv = [d for d in self.deliveries(r, reps["both.test"]["id"]) if d["kind"] == "mailto"]
        self.assertEqual([(d["rua"], d["state"]) for d in mdv], [("mailto:tlsrpt@rua.test", "queued")])
        mails = self.wait_report_mails(RUA_MX, "tlsrpt@rua.test", "both.test", 1)
        self.assertEqual(len(mails), 1)
        self.check_report_mail(mails[0], "both.test", files["both.test"][0], files["both.test"][1],
                               reps["both.test"]["report_id"], "tlsrpt-noreply@relay.test")

        # The endpoint recovers. Test shortcut: instead of waiting 10 minutes,
        # the retry is made due in SQLite (relay stopped), and the restarted
        # relay's first check (5 s after the start) retries it. expire.test's
        # report is moved 24 h into the past: its retry window is over.
        # both.test's failing https delivery stays not due.
        lab.https.set_file(REPORTS, "/retry.test", {"status": 200, "capture": True})
        self.assertEqual(r.stop(), 0)
        dv = {dom: [d for d in self.deliveries(r, reps[dom]["id"]) if d["kind"] == "https"][0]
              for dom in reps}
        self.assertEqual(self.db_write(r, "UPDATE tlsrpt_deliveries SET next_attempt = 0 WHERE id IN (?, ?)",
                                       (dv["retry.test"]["id"], dv["expire.test"]["id"])), 2)
        self.assertEqual(self.db_write(r, "UPDATE tlsrpt_reports SET created = created - 86400 WHERE id = ?",
                                       (reps["expire.test"]["id"],)), 1)
        mark = r.log_mark()
        r.start()
        second = self.wait_posts_at("/retry.test", 2, timeout=20)[1]
        self.check_post(second, files["retry.test"][1])
        self.wait_posts_at("/expire.test", 2, timeout=20)
        self.check_post(self.posts_at("/expire.test")[1], files["expire.test"][1])
        r.wait_log(r"retry rua=https://%s:8443/retry\.test attempt=2 status=sent result=\"HTTP 200\""
                   % REPORTS, timeout=10, start=mark)
        r.wait_log(r"retry rua=https://%s:8443/expire\.test attempt=2 status=failed result=\"HTTP 503\""
                   % REPORTS, timeout=10, start=mark)

        def states():
            return {x["policy_domain"]: x["state"] for x in self.reports(r)}
        try:
            wait_for(lambda: states() == {"retry.test": "sent", "expire.test": "failed",
                                          "both.test": "sent", "redirect.test": "pending"},
                     10, 0.05, "report states")
        except AssertionError:
            self.fail("report states after the retries: %s" % states())
        d = self.deliveries(r, reps["retry.test"]["id"])[0]
        self.assertEqual((d["state"], d["attempts"], d["last_result"]), ("sent", 2, "HTTP 200"))
        d = self.deliveries(r, reps["expire.test"]["id"])[0]
        self.assertEqual((d["state"], d["attempts"], d["last_result"]), ("failed", 2, "HTTP 503"))
        d = [x for x in self.deliveries(r, reps["both.test"]["id"]) if x["kind"] == "https"][0]
        self.assertEqual((d["state"], d["attempts"]), ("pending", 1), "not due: not retried")
        self.assertEqual(len(self.posts_at("/both.test")), 1)
        self.assertEqual(len(self.posts_at("/redirect.test")), 1)
        self.assertEqual(self.posts_at("/redirect-target"), [])
        self.assertEqual(len(self.posts_at("/retry.test")), 2)
        self.assertEqual(len(self.posts_at("/expire.test")), 2)

    # ===================================================================================
    # 03 mailto through the queue, DKIM (RSA-2048, Ed25519) checked by dkimverify
    # ===================================================================================
    def dkim_record(self, r, selector):
        p = self.cli(r, "tlsrpt", "dkim-record")
        m = re.match(r'^(\S+)\. IN TXT ((?:"[^"]*" ?)+)\n$', p.stdout)
        self.assertIsNotNone(m, "dkim-record output: %r" % p.stdout)
        self.assertEqual(m.group(1), "%s._domainkey.%s" % (selector, SUBMITTER))
        strings = re.findall(r'"([^"]*)"', m.group(2))
        self.assertTrue(all(len(s) <= 255 for s in strings), "DNS character-strings hold 255 octets")
        return m.group(1), strings

    def public_key_b64(self, key, kind):
        der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        # RSA: the SubjectPublicKeyInfo (RFC 6376); Ed25519: the raw 32 octets (RFC 8463)
        return base64.b64encode(der if kind == "rsa" else der[-32:]).decode()

    def dkimverify(self, path):
        """Debian's dkimverify (python3-dkim) in a mount namespace whose
        /etc/resolv.conf names the lab's stub resolver."""
        p = self.lab.dns.run_with_resolv_conf(["sh", "-c", 'exec /usr/bin/dkimverify < "$0"', path])
        return p.returncode, (p.stdout + p.stderr).strip()

    def test_03_mailto_dkim(self):
        lab = self.lab
        self.assertTrue(os.access("/usr/bin/dkimverify", os.X_OK),
                        "dkimverify missing: install python3-dkim (etc/install-deps.sh --test)")
        conf = dict(TLSRPT_CONF, contact_info="mailto:" + CONTACT,
                    report_from="tlsrpt-reports@sender.test", dkim_domain=SUBMITTER,
                    dkim_selector="rsa2026", dkim_key=self.rsa_key)
        r = self.relay(tlsrpt=conf)
        self.send(r, "bob@mailrpt.test", "mx1.mailrpt.test", "mailrpt0")
        self.wait_rows(r, "mailrpt.test", 1)
        name_rsa, txt_rsa = self.dkim_record(r, "rsa2026")

        runs = []        # (key kind, selector, out dir, mail)
        for i, (kind, sel, key) in enumerate((("rsa", "rsa2026", self.rsa_key),
                                              ("ed25519", "ed2026", self.ed_key))):
            if kind == "ed25519":
                r.configure(tlsrpt={"dkim_selector": sel, "dkim_key": key})   # read by the CLI
            out = os.path.join(lab.dir, "out03-%s" % kind)
            os.mkdir(out)
            summary, _ = self.run_report(r, *(["--force"] if i else []), out=out)
            self.assertEqual(summary, self.summary(1, 1, 1, 0, 0, 0))
            mail = self.wait_report_mails("mx1.mailrpt.test", "tlsrpt@mailrpt.test", "mailrpt.test",
                                          i + 1)[i]
            # the report mail's own session, recorded but marked TLS-Required: No
            rows = self.wait_rows(r, "mailrpt.test", i + 2)
            self.assertEqual([x["tls_required_no"] for x in rows], [0] + [1] * (i + 1))
            self.assertEqual({x["mx_host"] for x in rows}, {"mx1.mailrpt.test"})
            runs.append((kind, sel, out, mail))
        name_ed, txt_ed = self.dkim_record(r, "ed2026")

        for kind, sel, out, m in runs:
            files = self.read_out(out)
            self.assertEqual(list(files), ["mailrpt.test"])
            fn, gz = files["mailrpt.test"]
            doc = self.check_report(fn, gz, "mailrpt.test")
            # RPT-27: the report mail sessions are not counted: one success,
            # the first message's, in every report (not 2, not 3)
            self.assertEqual(doc["policies"], [{
                "policy": {"policy-type": "no-policy-found", "policy-domain": "mailrpt.test"},
                "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
                "failure-details": []}])
            rep = [x for x in self.reports(r, "mailrpt.test") if x["filename"] == fn]
            self.assertEqual(len(rep), 1)
            self.assertEqual((rep[0]["state"], rep[0]["report"]), ("sent", gz))
            dvs = self.deliveries(r, rep[0]["id"])
            self.assertEqual([(d["kind"], d["rua"], d["state"]) for d in dvs],
                             [("mailto", "mailto:tlsrpt@mailrpt.test", "queued")])
            msg = self.check_report_mail(m, "mailrpt.test", fn, gz, doc["report-id"],
                                         "tlsrpt-reports@sender.test")
            self.assertEqual(msg["From"], "tlsrpt-reports@sender.test")
            self.assertEqual(msg["To"], "tlsrpt@mailrpt.test")
            sigs = msg.get_all("DKIM-Signature")
            self.assertEqual(len(sigs), 1)
            tags = parse_dkim_tags(str(sigs[0]))
            self.assertEqual((tags["v"], tags["a"], tags["d"], tags["s"]),
                             ("1", "rsa-sha256" if kind == "rsa" else "ed25519-sha256", SUBMITTER, sel))
            self.assertNotIn("l", tags, "RPT-26: no l=")
            signed = [h.lower() for h in tags["h"].split(":")]
            for h in ("from", "subject", "tls-report-domain", "tls-report-submitter"):
                self.assertIn(h, signed, "RPT-26: %s in h=" % h)
        # a third report, built only (--no-send) after two report mail
        # sessions: still the one session of the first message
        out = os.path.join(lab.dir, "out03-nosend")
        os.mkdir(out)
        summary, _ = self.run_report(r, "--no-send", out=out)
        self.assertEqual(summary, self.summary(1, 1, 0, 0, 0, 0))
        fn, gz = self.read_out(out)["mailrpt.test"]
        doc = self.check_report(fn, gz, "mailrpt.test")
        self.assertEqual(doc["policies"][0]["summary"],
                         {"total-successful-session-count": 1, "total-failure-session-count": 0})
        self.assertEqual(len(self.tls_rows(r, "mailrpt.test")), 3)

        # key records: what `dkim-record` prints, for the keys openssl made
        records = {}
        for kind, name, txt, key in (("rsa", name_rsa, txt_rsa, self.rsa_key),
                                     ("ed25519", name_ed, txt_ed, self.ed_key)):
            joined = "".join(txt)
            self.assertEqual(joined, "v=DKIM1; k=%s; s=tlsrpt; p=%s" % (
                kind, self.public_key_b64(key, kind)), "RPT-26 key record")
            records[name] = txt
        paths = {}
        for kind, sel, out, m in runs:
            paths[kind] = os.path.join(lab.dir, "report-mail-%s.eml" % kind)
            with open(paths[kind], "wb") as f:
                f.write(m["data"])
            bad = m["data"].replace(b"This is an aggregate TLS report", b"This is an aggregate TLS rep0rt", 1)
            self.assertNotEqual(bad, m["data"])
            with open(paths[kind] + ".body-tampered", "wb") as f:
                f.write(bad)
            bad = m["data"].replace(b"TLS-Report-Domain: mailrpt.test", b"TLS-Report-Domain: evil.test", 1)
            self.assertNotEqual(bad, m["data"])
            with open(paths[kind] + ".header-tampered", "wb") as f:
                f.write(bad)

        # 1) the records exactly as printed (s=tlsrpt): dkimpy in strict
        #    TLSRPT mode (RFC 8460 3: the service type must be tlsrpt)
        with lab.dns.change():
            for name, txt in records.items():
                lab.dns.txt(name, txt)
        for kind, path in paths.items():
            p = lab.dns.run_with_resolv_conf(["/usr/bin/python3", "-c", VERIFY_STRICT, path])
            self.assertEqual(p.returncode, 0, "%s: strict TLSRPT verification: %s%s" % (kind, p.stdout, p.stderr))
        # 2) Debian's dkimverify is an e-mail verifier and (RFC 6376 3.6.1)
        #    ignores a key restricted to s=tlsrpt: the same keys are published
        #    without the service type for it.
        with lab.dns.change():
            for name, txt in records.items():
                lab.dns.remove(name, "TXT")
                plain = "".join(txt).replace(" s=tlsrpt;", "")
                self.assertNotEqual(plain, "".join(txt))
                lab.dns.txt(name, plain)
        for kind, path in paths.items():
            rc, out = self.dkimverify(path)
            self.assertEqual((rc, out), (0, "signature ok"), "%s-signed report mail" % kind)
            # dkimverify 1.1.4 reports a body hash mismatch as an uncaught
            # dkim.ValidationError (exit status 1, traceback)
            rc, out = self.dkimverify(path + ".body-tampered")
            self.assertEqual(rc, 1, "%s, body tampered: %s" % (kind, out))
            self.assertRegex(out, r"(?m)^dkim\.ValidationError: body hash mismatch ", kind)
            rc, out = self.dkimverify(path + ".header-tampered")
            self.assertEqual((rc, out), (1, "signature verification failed"), "%s, header tampered" % kind)

    # ===================================================================================
    # 04 no usable record; only successes; twice, --force, --no-send
    # ===================================================================================
    def test_04_no_rua_success_only_twice_force_nosend(self):
        lab = self.lab
        r = self.relay()
        norua = ["badscheme.test", "norec.test", "norua.test", "tworec.test"]
        for dom in norua:
            self.send(r, "bob@" + dom, "mx.t4.test", dom)
            self.wait_rows(r, dom, 1)
        for i in range(2):
            self.send(r, "bob@okonly.test", "mx1.okonly.test", "okonly%d" % i)
            self.wait_rows(r, "okonly.test", i + 1)
        # RPT-13 / D11: a TLS-Required: No message's session is not counted
        self.send(r, "bob@okonly.test", "mx1.okonly.test", "okonly-tlsno", headers="TLS-Required: No\r\n")
        rows = self.wait_rows(r, "okonly.test", 3)
        self.assertEqual([x["tls_required_no"] for x in rows], [0, 0, 1])
        posts_before = len(lab.https.posts(REPORTS))

        out1 = os.path.join(lab.dir, "out04-1")
        os.mkdir(out1)
        summary, log = self.run_report(r, out=out1)
        self.assertEqual(summary, self.summary(5, 5, 1, 0, 4, 0))
        self.assertIn("day=%s domain=norec.test no report: no _smtp._tls record" % self.day, log)
        self.assertIn("day=%s domain=tworec.test no report: 2 v=TLSRPTv1 records" % self.day, log)
        self.assertIn("day=%s domain=norua.test no report: missing rua" % self.day, log)
        self.assertIn("day=%s domain=badscheme.test no report: no mailto: or https: uri in rua"
                      % self.day, log)
        reps = self.reports(r)
        self.assertEqual(sorted((x["policy_domain"], x["state"]) for x in reps),
                         sorted([(d, "no-rua") for d in norua] + [("okonly.test", "sent")]))
        for x in reps:
            if x["state"] == "no-rua":
                self.assertEqual(self.deliveries(r, x["id"]), [], x["policy_domain"])
        self.assertEqual(self.posts_at("/tworec.test"), [], "no POST without a usable record")
        self.assertEqual(len(lab.https.posts(REPORTS)), posts_before + 1)
        fn, gz = self.read_out(out1)["okonly.test"]
        doc1 = self.check_report(fn, gz, "okonly.test")
        expected = [{"policy": {"policy-type": "sts", "policy-string": POLICY_OKONLY,
                                "policy-domain": "okonly.test", "mx-host": ["mx1.okonly.test"]},
                     "summary": {"total-successful-session-count": 2, "total-failure-session-count": 0},
                     "failure-details": []}]
        self.expect_report(doc1, expected, self.tls_rows(r, "okonly.test"))
        self.assertEqual(doc1["policies"][0]["failure-details"], [], "only successes: an empty array")
        post1 = self.posts_at("/okonly.test")
        self.assertEqual(len(post1), 1)
        self.check_post(post1[0], gz)

        # the same day again: skipped, nothing sent, nothing recorded
        summary, _ = self.run_report(r)
        self.assertEqual(summary, self.summary(5, 0, 0, 0, 0, 5))
        self.assertEqual(len(lab.https.posts(REPORTS)), posts_before + 1)
        self.assertEqual(len(self.reports(r)), 5)

        # --force: a new report with a new report-id, sent again
        out3 = os.path.join(lab.dir, "out04-force")
        os.mkdir(out3)
        summary, _ = self.run_report(r, "--force", out=out3)
        self.assertEqual(summary, self.summary(5, 5, 1, 0, 4, 0))
        fn3, gz3 = self.read_out(out3)["okonly.test"]
        doc3 = self.check_report(fn3, gz3, "okonly.test")
        self.assertNotEqual(doc3["report-id"], doc1["report-id"])
        self.assertNotEqual(fn3, fn)
        self.assertEqual(dict(doc3, **{"report-id": None}), dict(doc1, **{"report-id": None}),
                         "the same content otherwise")
        posts = self.posts_at("/okonly.test")
        self.assertEqual(len(posts), 2)
        self.check_post(posts[1], gz3)
        ok_reps = self.reports(r, "okonly.test")
        self.assertEqual([(x["report_id"], x["state"]) for x in ok_reps],
                         [(doc1["report-id"], "sent"), (doc3["report-id"], "sent")])
        n_reports = len(self.reports(r))
        n_deliveries = len(self.db_rows(r, "SELECT id FROM tlsrpt_deliveries"))
        self.assertEqual((n_reports, n_deliveries), (10, 2))

        # --no-send: files written, nothing recorded, nothing sent
        out4 = os.path.join(lab.dir, "out04-nosend")
        os.mkdir(out4)
        summary, _ = self.run_report(r, "--no-send", out=out4)
        self.assertEqual(summary, self.summary(5, 5, 0, 0, 0, 0))
        files4 = self.read_out(out4)
        self.assertEqual(sorted(files4), sorted(norua + ["okonly.test"]))
        doc4 = self.check_report(files4["okonly.test"][0], files4["okonly.test"][1], "okonly.test")
        self.assertNotIn(doc4["report-id"], (doc1["report-id"], doc3["report-id"]))
        self.assertEqual(len(self.reports(r)), n_reports)
        self.assertEqual(len(self.db_rows(r, "SELECT id FROM tlsrpt_deliveries")), n_deliveries)
        self.assertEqual(len(lab.https.posts(REPORTS)), posts_before + 2)

    # ===================================================================================
    # 05 the daily timer: catch-up after downtime, no duplicates
    # ===================================================================================
    def insert_session(self, r, t, domain, ptype="sts", mx="mx1.catchup.test", result="success",
                       detail="", tls=1, tls_required_no=0, mx_ip="127.0.0.99", sending_ip="127.0.0.1",
                       policy="", policy_mx=""):
        """Test shortcut: one tls_sessions row written directly (relay stopped)."""
        self.db_write(r, "INSERT INTO tls_sessions (time, policy_domain, policy_type, mx_host, mx_ip,"
                      " mx_helo, sending_ip, starttls_offered, tls, verified, result_type, tls_version,"
                      " cipher, detail, tls_required_no, policy_strings, policy_mx)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, 'TLSv1.3', 'TLS_AES_256_GCM_SHA384',"
                      " ?, ?, ?, ?)",
                      (t, domain, ptype, mx, mx_ip, mx, sending_ip, tls,
                       1 if result == "success" else 0, result, detail, tls_required_no,
                       policy, policy_mx))

    def test_05_daily_timer_catch_up(self):
        day0 = self.day0
        yday, dbefore, old = day0 - 86400, day0 - 2 * 86400, day0 - 8 * 86400
        r = self.relay(start=False, tlsrpt=dict(TLSRPT_CONF, retention="2d"))
        self.cli(r, "queue", "list")                  # creates the state (schema)
        pol = "\n".join(sts_lines("enforce", ["mx1.catchup.test"]))
        kw = {"policy": pol, "policy_mx": "mx1.catchup.test"}
        for i in range(3):
            self.insert_session(r, yday + 3600 * (i + 1), "catchup.test", **kw)
        for i in range(2):      # RPT-14: written as 192.0.2.10 and 2001:db8::1
            self.insert_session(r, yday + 7200 + i, "catchup.test", result="certificate-expired",
                                detail="certificate has expired", sending_ip="::ffff:192.0.2.10",
                                mx_ip="2001:0DB8:0000:0000:0000:0000:0000:0001", **kw)
        self.insert_session(r, yday + 9000, "catchup.test", result="certificate-expired",
                            detail="certificate has expired", tls_required_no=1, **kw)
        self.insert_session(r, dbefore + 86399, "catchup.test", ptype="no-policy-found",
                            mx="mx.catchup.test")
        self.insert_session(r, old + 43200, "catchup.test", **kw)     # beyond the 7-day window
        # older than the catch-up window and than [tlsrpt] retention: purged
        # by the check (retention 2d never purges inside the window)
        self.insert_session(r, old - 86400, "catchup.test", **kw)
        self.insert_session(r, day0 + 1, "catchup.test", **kw)        # today: not over yet
        mark = r.log_mark()
        t_start = time.monotonic()
        r.start()
        posts = self.wait_posts_at("/catchup.test", 2, timeout=15)
        took = time.monotonic() - t_start
        self.assertLess(took, 12, "reported within seconds of the start")
        for d in (dbefore, yday):
            r.wait_log(r"info tlsrpt: day=%s done domains=1 reports=1 delivered=1 pending=0 no_rua=0 "
                       r"skipped=0 errors=0" % day_text(d), timeout=10, start=mark)
        self.assertEqual(len(posts), 2)
        reps = self.reports(r, "catchup.test")
        self.assertEqual(sorted((x["day"], x["state"]) for x in reps), [(dbefore, "sent"), (yday, "sent")])
        blobs = {day_text(x["day"]) + "T00:00:00Z": x["report"] for x in reps}
        docs = {}
        for p in posts:
            doc = json.loads(gzip.decompress(p["body"]), object_pairs_hook=unique_keys)
            start = doc["date-range"]["start-datetime"]
            self.assertIn(start, blobs)
            self.check_post(p, blobs[start])
            docs[start] = doc
        self.assertEqual(sorted(docs), [day_text(dbefore) + "T00:00:00Z", day_text(yday) + "T00:00:00Z"])
        for d in (dbefore, yday):
            doc = docs[day_text(d) + "T00:00:00Z"]
            self.assertEqual(doc["date-range"]["end-datetime"], day_text(d + 86400) + "T00:00:00Z")
            self.assertRegex(doc["report-id"], r"^%s\.catchup\.test\.[0-9a-f]{16}@sender\.test$" % day_text(d))
        self.assertEqual(docs[day_text(dbefore) + "T00:00:00Z"]["policies"], [{
            "policy": {"policy-type": "no-policy-found", "policy-domain": "catchup.test"},
            "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
            "failure-details": []}])
        self.assertEqual(docs[day_text(yday) + "T00:00:00Z"]["policies"], [{
            "policy": {"policy-type": "sts", "policy-string": sts_lines("enforce", ["mx1.catchup.test"]),
                       "policy-domain": "catchup.test", "mx-host": ["mx1.catchup.test"]},
            "summary": {"total-successful-session-count": 3, "total-failure-session-count": 2},
            "failure-details": [{
                "result-type": "certificate-expired", "sending-mta-ip": "192.0.2.10",
                "receiving-mx-hostname": "mx1.catchup.test", "receiving-mx-helo": "mx1.catchup.test",
                "receiving-ip": "2001:db8::1", "failed-session-count": 2,
                "failure-reason-code": "certificate has expired"}]}])
        self.assertNotIn("day=%s " % day_text(old), r.log_text()[mark:], "beyond the catch-up window")
        try:
            wait_for(lambda: [x["time"] for x in self.tls_rows(r, "catchup.test") if x["time"] < yday - 86400]
                     == [old + 43200], 10, 0.05, "purge")
        except AssertionError:
            self.fail("rows before the catch-up window after the purge: %s" % [
                x["time"] - old for x in self.tls_rows(r, "catchup.test") if x["time"] < yday - 86400])
        self.assertNotIn("day=%s " % self.day, r.log_text()[mark:], "today is not over")

        # Restart: nothing is reported twice. A new domain's row for yesterday
        # shows that the check ran (its POST), and the run skips catchup.test.
        self.assertEqual(r.stop(), 0)
        self.insert_session(r, yday + 50000, "catchup2.test", **kw)
        mark = r.log_mark()
        r.start()
        self.wait_posts_at("/catchup2.test", 1, timeout=15)
        r.wait_log(r"info tlsrpt: day=%s done domains=2 reports=1 delivered=1 pending=0 no_rua=0 "
                   r"skipped=1 errors=0" % day_text(yday), timeout=10, start=mark)
        self.assertNotIn("day=%s " % day_text(dbefore), r.log_text()[mark:], "the day before: all done")
        self.assertEqual(len(self.posts_at("/catchup.test")), 2, "no duplicate report")
        self.assertEqual(len(self.reports(r, "catchup.test")), 2)
        self.assertEqual(len(self.posts_at("/catchup2.test")), 1)

    def test_05b_purge_with_reporting_off(self):
        """TLS results are recorded with [tlsrpt] enabled = no too, so the
        hourly purge runs without the report job: rows older than retention
        go (more than one batch of 5,000), newer ones and the events of
        messages still queued stay."""
        now = int(time.time())
        r = self.relay(start=False, tlsrpt={"enabled": "no", "retention": "30d"})
        self.cli(r, "queue", "list")                  # creates the state (schema)
        old, recent = now - 40 * 86400, now - 20 * 86400
        con = sqlite3.connect(os.path.join(r.state_dir, "queue.db"), timeout=10)
        try:
            con.executemany(
                "INSERT INTO tls_sessions (time, policy_domain, policy_type, mx_host, mx_ip, mx_helo,"
                " sending_ip, starttls_offered, tls, verified, result_type)"
                " VALUES (?, 'purge.test', 'sts', 'mx1.purge.test', '127.0.0.99', 'mx1.purge.test',"
                " '127.0.0.1', 1, 1, 1, 'success')",
                [(old + i,) for i in range(7000)] + [(recent,)])
            con.execute("INSERT INTO messages (id, sender, size, arrival) VALUES"
                        " ('QUEUEDPURGE1', 'a@purge.test', 1, ?)", (old,))
            con.executemany("INSERT INTO events (message_id, time, kind) VALUES (?, ?, 'delivered')",
                            [("GONE%08d" % i, old) for i in range(6000)]
                            + [("QUEUEDPURGE1", old), ("RECENTPURGE1", recent)])
            con.commit()
        finally:
            con.close()
        mark = r.log_mark()
        r.start()
        line = r.wait_log(r"info queue: purged history before (\d+): tls_sessions=7000 tlsrpt_reports=0 "
                          r"events=6000 took=", timeout=15, start=mark)
        self.assertIsNotNone(line)
        self.assertEqual([x["time"] for x in self.tls_rows(r, "purge.test")], [recent])
        self.assertEqual(sorted(x["message_id"] for x in self.db_rows(r, "SELECT message_id FROM events")),
                         ["QUEUEDPURGE1", "RECENTPURGE1"])
        self.assertNotRegex(r.log_text()[mark:], r" (debug|info|warn|error) tlsrpt: ",
                            "the report job does not run when reporting is off")

    # ===================================================================================
    # 06 one real report, for the record
    # ===================================================================================
    def test_06_example_report(self):
        self.assertIsNotNone(self.example, "test_01 produced no report")
        fn, text = self.example
        json.loads(text)
        print("\n--- example report %s (from test_01, pretty-printed) ---\n%s\n--- end ---" % (fn, text))
        sys.stdout.flush()


if __name__ == "__main__":
    unittest.main(verbosity=2)
