#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""policy/resolver.c and policy/nexthop.c against real DNS servers.

tests/tools/dnsq (DNSQ_BIN) asks the resolver; tests/lib/lab.py runs dnsmasq on
127.N.0.1:5353 and faultdns (python3-dnslib) on 127.N.0.1:5354 for SERVFAIL,
REFUSED, silence and TC=1-over-UDP. Checks:
  MX ordering, equal-preference shuffle, implicit MX, null MX (alone and next
  to real MX), NXDOMAIN, NODATA, unusable MX hosts, the 10-host cap, IP and
  self-pointing MX hosts, routes and literals, invalid names;
  SERVFAIL / REFUSED / timeout -> TEMPFAIL (never NXDOMAIN or NODATA), the
  timeout within its documented bound; TCP retry of a truncated answer (faultdns
  directly, and a >1232-byte answer through dnsmasq); TXT strings joined per
  record and records kept apart; the cache (answers without the server, TEMPFAIL
  never cached, negative answers cached, flush); no leak and no handle left
  open (valgrind, uv_loop_close == 0).
Every process started here is stopped by PID (the Lab's, dnsq's own).
"""

import os
import re
import select
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ["STRICTRELAY_SRCDIR"], "tests", "lib"))
from lab import Lab  # noqa: E402

DNSQ = os.environ["DNSQ_BIN"]
TTL = 60
FAILURES = []


def check(cond, what):
    if cond:
        print("ok   %s" % what)
    else:
        print("FAIL %s" % what)
        FAILURES.append(what)
    return cond


# -- dnsq output --------------------------------------------------------------

def unescape(s):
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), s)


class Result:
    """One answer: the status line plus mx/addr/txt/host lines."""

    def __init__(self, lines):
        head, _, detail = lines[0].partition(" detail=")
        self.fields = dict(kv.split("=", 1) for kv in head.split())
        self.status = self.fields["status"]
        self.cached = self.fields.get("cached") == "yes"
        self.implicit_mx = self.fields.get("implicit_mx") == "yes"
        self.ttl = int(self.fields["ttl"])
        self.elapsed_ms = int(self.fields["elapsed_ms"])
        self.detail = unescape(detail)
        self.mx, self.addrs, self.txt, self.hosts = [], [], [], []
        for line in lines[1:]:
            kind, _, rest = line.partition(" ")
            if kind == "mx":
                pref, _, host = rest.partition(" ")
                self.mx.append((int(pref), unescape(host)))
            elif kind == "addr":
                self.addrs.append(rest)
            elif kind == "txt":
                self.txt.append(unescape(rest))
            elif kind == "host":
                m = re.match(r"(\d+) (\S*) addr_status=(\S+) addrs=(\S*)(?: detail=(.*))?$", rest)
                self.hosts.append({"pref": int(m.group(1)), "name": unescape(m.group(2)),
                                   "addr_status": m.group(3),
                                   "addrs": m.group(4).split(",") if m.group(4) else [],
                                   "detail": unescape(m.group(5) or "")})

    def host_names(self):
        return [h["name"] for h in self.hosts]

    def __repr__(self):
        return "<%s %s mx=%s addrs=%s txt=%s hosts=%s>" % (
            self.status, self.detail, self.mx, self.addrs, [t[:40] for t in self.txt],
            [(h["name"], h["addr_status"], h["addrs"]) for h in self.hosts])


def parse(out):
    results, cur = [], []
    for line in out.splitlines():
        if line == ".":
            if cur:  # "flush" answers with a bare "."
                results.append(Result(cur))
            cur = []
        else:
            cur.append(line)
    return results


def dnsq(server, qtype, name, *opts, timeout_ms=1000, tries=2, prefix=()):
    argv = list(prefix) + [DNSQ, server, qtype, name, "--timeout-ms", str(timeout_ms),
                           "--tries", str(tries)] + list(opts)
    # run() kills the child (by its PID) if it overstays.
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    # Under ASan, LeakSanitizer makes a leak a non-zero exit; UBSan only prints.
    if p.returncode != 0 or "runtime error:" in p.stderr:
        raise AssertionError("dnsq %s %s exited %d: %s" % (qtype, name, p.returncode, p.stderr))
    res = parse(p.stdout)
    return res if "--repeat" in opts else res[0]


class Session:
    """dnsq --stdin: one process (one cache), one query at a time."""

    def __init__(self, server, timeout_ms=1000, tries=1):
        self.p = subprocess.Popen([DNSQ, server, "--stdin", "--timeout-ms", str(timeout_ms),
                                   "--tries", str(tries)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def ask(self, line, timeout=30):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        deadline = time.monotonic() + timeout
        while b"\n.\n" not in b"\n" + self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("dnsq --stdin: no answer to %r" % line)
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError("dnsq --stdin exited: %s" % self.p.stderr.read().decode())
                self.buf += chunk
        text = (b"\n" + self.buf).split(b"\n.\n", 1)
        self.buf = text[1]
        lines = text[0].decode().lstrip("\n")
        return Result(lines.splitlines()) if lines else None

    def close(self):
        """Ends the session (killing dnsq by PID if it hangs); returns dnsq's
        exit code (3: a handle left open; None: killed) and its stderr."""
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            rc = self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
            rc = None
        err = self.p.stderr.read().decode("utf-8", "replace")
        self.p.stdout.close()
        self.p.stderr.close()
        return rc, err


# -- the zones -------------------------------------------------------------------

def declare(lab):
    d = lab.dns
    d.ttl = TTL
    ip = lab.ip
    d.mx("example.test", "mx1.example.test", 10).mx("example.test", "mx2.example.test", 20)
    d.a("mx1.example.test", ip(1, 1)).aaaa("mx1.example.test", "2001:db8::11")
    d.a("mx2.example.test", ip(1, 2))
    for h in ("a", "b", "c"):
        d.mx("shuffle.test", "%s.shuffle.test" % h, 10).a("%s.shuffle.test" % h, ip(1, 10))
    d.mx("shuffle.test", "d.shuffle.test", 20).a("d.shuffle.test", ip(1, 11))
    d.a("implicit.test", ip(1, 3))
    d.null_mx("nullmx.test")
    d.null_mx("nullmix.test").mx("nullmix.test", "mx.nullmix.test", 10).a("mx.nullmix.test", ip(1, 4))
    d.mx("iplit.test", ip(1, 9), 10)
    d.mx("selfmx.test", "selfmx.test", 10).a("selfmx.test", ip(1, 8))
    d.mx("mxnoaddr.test", "gone.mxnoaddr.test", 10)
    d.mx("mxpartial.test", "mx.servfail.test", 10).mx("mxpartial.test", "ok.mxpartial.test", 20)
    d.a("ok.mxpartial.test", ip(1, 5))
    d.mx("mxtempfail.test", "mx.servfail.test", 10)
    for i in range(12):
        d.mx("many.test", "m%02d.many.test" % i, i).a("m%02d.many.test" % i, ip(1, 20 + i))
    d.a("relay.test", ip(1, 6))
    d.txt("txt.test", ["v=STSv1; ", "id=123"]).txt("txt.test", "second record")
    # 3 records of 500 bytes (255 + 245 each): > 1232 bytes, so dnsmasq
    # truncates the UDP answer and the resolver must come back over TCP.
    for ch in "xyz":
        d.txt("long.test", ch * 500)
    d.fault("servfail.test", "servfail")
    d.fault("refused.test", "refused")
    d.fault("timeout.test", "timeout")
    d.fault("trunc.test", "truncate")
    d.mx("trunc.test", "mx.trunc.test", 5).a("mx.trunc.test", ip(1, 7))
    d.txt("trunc.test", ["one ", "record"])
    # Served by faultdns: the name exists with only a TXT record (dnsmasq
    # calls names with only a dns-rr record NXDOMAIN for other types).
    d.fault("noaddr.test", "answer")
    d.txt("noaddr.test", "hello")


# -- the checks ------------------------------------------------------------------

def test_mx_ordering(lab):
    r = dnsq(lab.dns.server, "nexthop", "example.test")
    check(r.status == "OK" and not r.implicit_mx, "nexthop example.test: OK, explicit MX (%r)" % r)
    check(r.host_names() == ["mx1.example.test", "mx2.example.test"],
          "MX hosts by preference: %s" % r.host_names())
    check([h["pref"] for h in r.hosts] == [10, 20], "preferences 10, 20")
    check(r.hosts and r.hosts[0]["addrs"] == [lab.ip(1, 1), "2001:db8::11"],
          "addresses IPv4 first, then IPv6: %s" % (r.hosts[0]["addrs"] if r.hosts else None))
    check(0 < r.ttl <= TTL, "ttl %d within (0, %d]" % (r.ttl, TTL))
    m = dnsq(lab.dns.server, "mx", "example.test")
    check(m.status == "OK" and sorted(m.mx) == [(10, "mx1.example.test"), (20, "mx2.example.test")],
          "mx example.test: both records (%r)" % m)


def test_shuffle(lab):
    runs = dnsq(lab.dns.server, "nexthop", "shuffle.test", "--repeat", "60")
    check(len(runs) == 60 and all(r.status == "OK" for r in runs), "60 resolutions of shuffle.test")
    orders = [tuple(r.host_names()) for r in runs]
    check(all(o[3] == "d.shuffle.test" for o in orders), "the preference-20 host always last")
    check(all(sorted(o[:3]) == ["a.shuffle.test", "b.shuffle.test", "c.shuffle.test"] for o in orders),
          "the three preference-10 hosts always first")
    firsts = {o[0] for o in orders}
    check(firsts == {"a.shuffle.test", "b.shuffle.test", "c.shuffle.test"},
          "each equal-preference host comes first sometimes: %s" % sorted(firsts))
    check(len(set(orders)) >= 3, "%d distinct orders in 60 runs" % len(set(orders)))
    check(any(r.hosts and r.hosts[0]["addrs"] == [lab.ip(1, 10)] for r in runs), "addresses kept")


def test_implicit_and_null(lab):
    s = lab.dns.server
    r = dnsq(s, "nexthop", "implicit.test")
    check(r.status == "OK" and r.implicit_mx and r.host_names() == ["implicit.test"]
          and r.hosts[0]["pref"] == 0 and r.hosts[0]["addrs"] == [lab.ip(1, 3)],
          "implicit MX: the domain's own A, pref 0 (%r)" % r)
    r = dnsq(s, "nexthop", "nullmx.test")
    check(r.status == "NULL_MX" and not r.hosts, "null MX -> NULL_MX, no hosts (%r)" % r)
    r = dnsq(s, "mx", "nullmx.test")
    check(r.status == "OK" and r.mx == [(0, "")], "mx of a null MX: pref 0, host \"\" (%r)" % r)
    r = dnsq(s, "nexthop", "nullmix.test")
    check(r.status == "OK" and r.host_names() == ["mx.nullmix.test"],
          "a root MX next to a real one is skipped, not a null MX (%r)" % r)
    r = dnsq(s, "nexthop", "iplit.test")
    check(r.status == "OK" and r.hosts and r.hosts[0]["addrs"] == [lab.ip(1, 9)],
          "MX pointing at an IP address is used as that address (%r)" % r)
    r = dnsq(s, "nexthop", "selfmx.test")
    check(r.status == "OK" and r.host_names() == ["selfmx.test"] and not r.implicit_mx,
          "MX pointing at the domain itself (%r)" % r)
    r = dnsq(s, "nexthop", "many.test")
    check(r.status == "OK" and r.host_names() == ["m%02d.many.test" % i for i in range(10)],
          "12 MX records: the 10 best kept (%s)" % r.host_names())


def test_negative(lab):
    s = lab.dns.server
    for qtype in ("mx", "addrs", "txt"):
        r = dnsq(s, qtype, "nx.test")
        check(r.status == "NXDOMAIN" and r.ttl > 0, "%s nx.test -> NXDOMAIN (%r)" % (qtype, r))
    r = dnsq(s, "nexthop", "nx.test")
    check(r.status == "NXDOMAIN", "nexthop nx.test -> NXDOMAIN (%r)" % r)
    r = dnsq(s, "mx", "implicit.test")
    check(r.status == "NODATA", "mx of a name with only an A -> NODATA (%r)" % r)
    r = dnsq(s, "txt", "implicit.test")
    check(r.status == "NODATA", "txt of a name with only an A -> NODATA (%r)" % r)
    r = dnsq(s, "addrs", "noaddr.test")
    check(r.status == "NODATA", "addrs of a name with only a TXT -> NODATA (%r)" % r)
    r = dnsq(s, "nexthop", "noaddr.test")
    check(r.status == "NODATA" and r.implicit_mx,
          "no MX, no A/AAAA -> NODATA (the domain cannot take mail) (%r)" % r)
    r = dnsq(s, "nexthop", "mxnoaddr.test")
    check(r.status == "NO_ADDRESS" and r.hosts and r.hosts[0]["addr_status"] == "NXDOMAIN",
          "MX host without address -> NO_ADDRESS (%r)" % r)


def test_mx_host_failures(lab):
    s = lab.dns.server
    r = dnsq(s, "nexthop", "mxpartial.test")
    check(r.status == "OK", "one MX host SERVFAILs, the other resolves -> OK (%r)" % r)
    check(r.host_names() == ["mx.servfail.test", "ok.mxpartial.test"],
          "the failing host keeps its place (%s)" % r.host_names())
    check(r.hosts and r.hosts[0]["addr_status"] == "TEMPFAIL" and r.hosts[0]["addrs"] == [],
          "... with no addresses and addr_status TEMPFAIL")
    r = dnsq(s, "nexthop", "mxtempfail.test")
    check(r.status == "TEMPFAIL", "the only MX host SERVFAILs -> TEMPFAIL (%r)" % r)


def test_routes_and_names(lab):
    s = lab.dns.server
    r = dnsq(s, "route", "relay.test")
    check(r.status == "OK" and not r.implicit_mx and r.host_names() == ["relay.test"]
          and r.hosts[0]["addrs"] == [lab.ip(1, 6)], "route host: its own A (%r)" % r)
    r = dnsq(s, "route", "example.test")
    check(r.status == "NO_ADDRESS", "route host with MX but no A: no MX lookup -> NO_ADDRESS (%r)" % r)
    r = dnsq(s, "route", "nx-relay.test")
    check(r.status == "NXDOMAIN", "route host that does not exist -> NXDOMAIN (%r)" % r)
    r = dnsq(s, "route", lab.ip(1, 6))
    check(r.status == "OK" and r.hosts[0]["addrs"] == [lab.ip(1, 6)], "bare IP route: no DNS (%r)" % r)
    r = dnsq(s, "nexthop", "[IPv6:::1]")
    check(r.status == "OK" and r.hosts[0]["addrs"] == ["::1"], "IPv6 address literal (%r)" % r)
    r = dnsq(s, "nexthop", "[%s]" % lab.ip(1, 6))
    check(r.status == "OK" and r.hosts[0]["addrs"] == [lab.ip(1, 6)], "IPv4 address literal (%r)" % r)
    for name in ("bad..name", "b\u00fccher.test", "a" * 64 + ".test", "under_score ok.test"):
        r = dnsq(s, "mx", name)
        check(r.status == "BADNAME", "mx %r -> BADNAME (%r)" % (name[:20], r))
    r = dnsq(s, "nexthop", "b\u00fccher.test")
    check(r.status == "BADNAME", "nexthop of a U-label -> BADNAME (A-labels only) (%r)" % r)
    r = dnsq(s, "txt", "_underscore.TXT.test.")
    check(r.status == "NXDOMAIN", "underscore, upper case and trailing dot are fine (%r)" % r)


def test_tempfail(lab):
    s, f = lab.dns.server, lab.dns.fault_server
    for server, via in ((s, "via dnsmasq"), (f, "faultdns directly")):
        for zone, kind in (("servfail.test", "SERVFAIL"), ("refused.test", "REFUSED")):
            for qtype in ("mx", "addrs", "txt", "nexthop"):
                r = dnsq(server, qtype, zone)
                check(r.status == "TEMPFAIL" and "SERVFAIL or REFUSED" in r.detail,
                      "%s %s %s -> TEMPFAIL (%r)" % (kind, qtype, via, r))
    # timeout_ms per try, doubled each round: 300 + 600 ms for 2 tries
    for server, via in ((s, "via dnsmasq"), (f, "faultdns directly")):
        r = dnsq(server, "mx", "timeout.test", timeout_ms=300, tries=2)
        check(r.status == "TEMPFAIL" and "timeout after 2 tries" in r.detail,
              "silent server %s -> TEMPFAIL (%r)" % (via, r))
        check(850 <= r.elapsed_ms <= 1400, "... after %d ms (bound: 3 x 300 ms)" % r.elapsed_ms)
    r = dnsq(s, "mx", "timeout.test", timeout_ms=300, tries=1)
    check(r.status == "TEMPFAIL" and 250 <= r.elapsed_ms <= 700,
          "1 try of 300 ms: %d ms (%r)" % (r.elapsed_ms, r))
    r = dnsq(s, "nexthop", "timeout.test", timeout_ms=300, tries=1)
    check(r.status == "TEMPFAIL", "nexthop of a silent domain -> TEMPFAIL (%r)" % r)
    r = dnsq("%s:9" % lab.ip(0, 99), "mx", "example.test")
    check(r.status == "TEMPFAIL", "no server listening -> TEMPFAIL (%r)" % r)


def faultdns_log(lab):
    with open(os.path.join(lab.dns.dir, "faultdns.log")) as fh:
        return fh.read()


def test_tcp_fallback(lab):
    f = lab.dns.fault_server
    before = faultdns_log(lab)
    r = dnsq(f, "mx", "trunc.test")
    check(r.status == "OK" and r.mx == [(5, "mx.trunc.test")], "TC=1 over UDP -> answer over TCP (%r)" % r)
    log = faultdns_log(lab)[len(before):]
    check("query udp trunc.test. MX -> truncate" in log and "query tcp trunc.test. MX" in log,
          "faultdns saw the UDP query and then the TCP one")
    r = dnsq(f, "txt", "trunc.test")
    check(r.status == "OK" and r.txt == ["one record"], "TXT over TCP (%r)" % r)
    r = dnsq(f, "nexthop", "trunc.test")
    check(r.status == "OK" and r.hosts and r.hosts[0]["addrs"] == [lab.ip(1, 7)],
          "nexthop with every answer over TCP (%r)" % r)
    r = dnsq(lab.dns.server, "txt", "long.test")
    check(r.status == "OK" and sorted(r.txt) == [c * 500 for c in "xyz"],
          "a 1.5 KB answer through dnsmasq (TCP), 255+245-byte strings joined (%s)"
          % [len(t) for t in r.txt])


def test_txt(lab):
    r = dnsq(lab.dns.server, "txt", "txt.test")
    check(r.status == "OK" and sorted(r.txt) == ["second record", "v=STSv1; id=123"],
          "two TXT records kept apart, the strings of each joined with nothing between (%r)" % r)


def sanitized():
    """An ASan build: valgrind cannot run it, and LeakSanitizer already checks
    every dnsq run above."""
    p = subprocess.run(["ldd", DNSQ], capture_output=True, text=True)
    return "libasan" in p.stdout


def test_no_leaks(lab):
    vg = shutil.which("valgrind")
    if vg is None or sanitized():
        print("skip valgrind: %s" % ("not installed" if vg is None else "ASan build (LSan checks instead)"))
        return
    s, f = lab.dns.server, lab.dns.fault_server
    for server, lines in ((s, ["nexthop example.test", "txt long.test", "nexthop mxpartial.test",
                               "mx servfail.test", "nexthop nx.test", "mx timeout.test", "flush",
                               "nexthop [IPv6:::1]", "mx bad..name"]),
                          (f, ["nexthop trunc.test", "txt trunc.test"])):
        p = subprocess.run([vg, "-q", "--error-exitcode=99", "--leak-check=full",
                            "--show-leak-kinds=all", "--errors-for-leak-kinds=all",
                            DNSQ, server, "--stdin", "--timeout-ms", "300", "--tries", "1"],
                           input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
        n = len(parse(p.stdout))
        want = len([x for x in lines if x != "flush"])
        check(p.returncode == 0 and n == want,
              "valgrind: no error, no leak, uv_loop_close == 0 (rc %d, %d answers) %s"
              % (p.returncode, n, p.stderr[-2000:]))


def test_cache(lab):
    sess = Session(lab.dns.server, timeout_ms=300, tries=1)
    try:
        r1 = sess.ask("mx example.test")
        r2 = sess.ask("mx example.test")
        check(r1.status == "OK" and not r1.cached, "first MX answer from the server")
        check(r2.status == "OK" and r2.cached and r2.mx == r1.mx and 0 < r2.ttl <= TTL,
              "second from the cache, ttl %d <= %d (%r)" % (r2.ttl, TTL, r2))
        n1 = sess.ask("mx nx.test")
        n2 = sess.ask("mx nx.test")
        check(n1.status == n2.status == "NXDOMAIN" and n2.cached and n2.ttl <= 60,
              "NXDOMAIN cached, at most 60 s (%r)" % n2)
        count = lambda: faultdns_log(lab).count("servfail.test. MX -> servfail")  # noqa: E731
        c0 = count()
        t1 = sess.ask("mx servfail.test")
        c1 = count()
        t2 = sess.ask("mx servfail.test")
        c2 = count()
        check(t1.status == t2.status == "TEMPFAIL" and not t2.cached and c0 < c1 < c2,
              "TEMPFAIL never cached: the second query reached faultdns (%d, %d, %d)" % (c0, c1, c2))
        h1 = sess.ask("nexthop example.test")
        x1 = sess.ask("txt txt.test")
        check(h1.status == "OK" and x1.status == "OK", "nexthop and TXT answered by the server")

        lab.dns.stop()  # dnsmasq and faultdns, by PID
        r3 = sess.ask("mx example.test")
        check(r3.status == "OK" and r3.cached and r3.mx == r1.mx,
              "with the DNS server stopped, MX from the cache (%r)" % r3)
        h2 = sess.ask("nexthop example.test")
        check(h2.status == "OK" and h2.host_names() == ["mx1.example.test", "mx2.example.test"]
              and h2.hosts[0]["addrs"] == h1.hosts[0]["addrs"],
              "... and the whole next hop, addresses too (%r)" % h2)
        x2 = sess.ask("txt txt.test")
        check(x2.cached and sorted(x2.txt) == sorted(x1.txt), "... and TXT (%r)" % x2)
        u = sess.ask("mx uncached.test")
        check(u.status == "TEMPFAIL", "an uncached name now fails: the server is really gone (%r)" % u)
        sess.ask("flush")
        r4 = sess.ask("mx example.test")
        check(r4.status == "TEMPFAIL" and not r4.cached, "after flush the cache is empty (%r)" % r4)
    finally:
        rc, err = sess.close()
    check(rc == 0 and "runtime error:" not in err,
          "dnsq --stdin exited 0 (uv_loop_close == 0, no leak under ASan): %s %s" % (rc, err[-2000:]))


def main():
    with Lab("resolver") as lab:
        declare(lab)
        lab.start()
        tests = [test_mx_ordering, test_shuffle, test_implicit_and_null, test_negative,
                 test_mx_host_failures, test_routes_and_names, test_tempfail, test_tcp_fallback,
                 test_txt, test_no_leaks,
                 test_cache]  # last: stops the DNS servers
        for t in tests:
            print("== %s" % t.__name__)
            try:
                t(lab)
            except Exception as e:  # report and go on with the next check
                check(False, "%s raised %r" % (t.__name__, e))
        if FAILURES:
            # raising inside the Lab makes it print the servers' logs
            raise SystemExit("%d check(s) failed:\n  %s" % (len(FAILURES), "\n  ".join(FAILURES)))
    print("all checks passed")


if __name__ == "__main__":
    main()
