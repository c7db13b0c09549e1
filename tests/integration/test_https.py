#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""mta/https.c (the HTTPS client for MTA-STS fetches and TLSRPT POSTs)
against the lab's nginx HTTPS hosts, DNS and CA.

tests/tools/httpsget (HTTPSGET_BIN) drives the client; tests/lib/lab.py runs
dnsmasq/faultdns, nginx (+ httpback.py for slow responses and POST capture)
and the test CA. A few peers nginx cannot play (a chunked body, a reply that
is not HTTP, a silent server, TLS 1.1 only) are small TLS servers in this
process (threads, stopped before the lab closes). Checks:
  200 body and Content-Type (also with a charset); 301 returned, never
  followed; 404; body cap (exact, one over, 70,000 announced and chunked);
  the whole-request timeout (slow body, silent DNS); certificates: wrong
  name, CN-only (accepted by curl's own check, so the rejection is ours),
  expired, self-signed, other CA, partial and too-deep wildcards (and a good
  wildcard); DNS NXDOMAIN/SERVFAIL, connection refused, plain HTTP, TLS 1.1
  only, non-HTTP and empty replies, an IP literal host; POST captured byte
  for byte with its Content-Type, 200 and 503 returned; what a GET sends (no
  conditional or caching header, no cookies, no Accept-Encoding); proxies in
  the environment ignored; 20 requests in parallel in one process (a slow
  one does not hold the others back); cancel and free with requests in
  flight; valgrind (no definite leak, no error, uv_loop_close == 0) or, on an
  ASan build, no sanitizer report in any run.
Every process started here is stopped by PID (the Lab's; httpsget exits).
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ["STRICTRELAY_SRCDIR"], "tests", "lib"))
from lab import Lab  # noqa: E402

HTTPSGET = os.environ["HTTPSGET_BIN"]
FAILURES = []
PORT = 8443

# OpenSSL X509_V_ERR_* (x509_vfy.h)
V_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
V_CERT_HAS_EXPIRED = 10
V_DEPTH_ZERO_SELF_SIGNED_CERT = 18
V_HOSTNAME_MISMATCH = 62

POLICY = "version: STSv1\nmode: enforce\nmx: mx1.good.test\nmax_age: 86400\n"


def check(cond, what):
    if cond:
        print("ok   %s" % what)
    else:
        print("FAIL %s" % what)
        FAILURES.append(what)
    return cond


def unescape(s):
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), s)


class Result:
    def __init__(self, lines):
        self.fields = dict(kv.split("=", 1) for kv in lines[0].split()[1:])
        self.url = unescape(self.fields["url"])
        self.status = int(self.fields["status"])
        self.error = self.fields["error"]
        self.ip = self.fields["ip"]
        self.body_len = int(self.fields["body_len"])
        self.verify = int(self.fields["verify"])
        self.elapsed_ms = int(self.fields["elapsed_ms"])
        rest = {}
        for line in lines[1:]:
            k, _, v = line.partition(" ")
            rest[k] = unescape(v)
        self.content_type = rest.get("content_type", "")
        self.detail = rest.get("detail", "")
        self.body = rest.get("body", "")

    def __repr__(self):
        return "<%s %d %s ct=%r len=%d verify=%d %dms %r>" % (
            self.url, self.status, self.error, self.content_type, self.body_len, self.verify,
            self.elapsed_ms, self.detail)


def parse(out):
    results, block = [], []
    for line in out.splitlines():
        if line == ".":
            results.append(Result(block))
            block = []
        elif line.startswith("result ") or block:
            block.append(line)
    return results


def sanitizer_trouble(err):
    return "runtime error:" in err or "Sanitizer" in err or "LeakSanitizer" in err


class Run:
    def __init__(self, rc, results, out, err, wall):
        self.rc, self.results, self.out, self.err, self.wall = rc, results, out, err, wall

    @property
    def r(self):
        return self.results[0] if self.results else None


def httpsget(lab, urls, *opts, env=None, wrap=(), timeout=120):
    argv = list(wrap) + [HTTPSGET, "--dns", lab.dns.server, "--ca", lab.ca.file]
    argv += [str(o) for o in opts] + list(urls)
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.monotonic() - t0
    run = Run(p.returncode, parse(p.stdout), p.stdout, p.stderr, wall)
    if p.returncode == 3 or sanitizer_trouble(p.stderr):
        check(False, "httpsget %s: rc %d, loop closed cleanly, no sanitizer report: %s"
              % (" ".join(urls), p.returncode, p.stderr[-3000:]))
    return run


def url(host, path, port=PORT):
    return "https://%s:%d%s" % (host, port, path)


# -- TLS peers nginx cannot play ------------------------------------------------

class RawTLS:
    """One listener, one behaviour: chunked (70,000 bytes, no Content-Length),
    garbage (a reply that is not HTTP), nothing (close after the request),
    tls11 (a server that speaks TLS 1.0/1.1 only)."""

    def __init__(self, lab, name, ip, mode):
        self.name, self.ip, self.mode = name, ip, mode
        cert, key = lab.ca.issue(name)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if mode == "tls11":
            self.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            self.ctx.minimum_version = ssl.TLSVersion.TLSv1
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, PORT))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            conn.settimeout(10)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            if self.mode == "chunked":
                out = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                       b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                for _ in range(70):
                    out += b"3e8\r\n" + b"c" * 1000 + b"\r\n"
                out += b"0\r\n\r\n"
                tls.sendall(out)
            elif self.mode == "garbage":
                tls.sendall(b"220 this is not HTTP\r\n\r\n")
            tls.close()
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping.set()
        self.sock.close()
        self.thread.join(5)


# -- the lab ----------------------------------------------------------------------

def declare(lab):
    h = lab.https
    h.add_host("mta-sts.good.test", files={
        "/.well-known/mta-sts.txt": POLICY,
        # via the backend: nginx's config cannot carry the ';'
        "/utf8": {"content_type": "text/plain; charset=utf-8", "body": POLICY,
                  "headers": {"X-Lab": "utf8"}},
        "/html": {"content_type": "text/html", "body": "<p>no</p>"},
        "/redirect": {"status": 301, "location": url("mta-sts.target.test", "/redirect-target")},
        "/exact": "e" * 65536,
        "/over": "o" * 65537,
        "/big": "b" * 70000,
        "/slow": {"body": "s" * 40, "dribble": {"interval": 0.25, "chunk": 1}},
        "/slow2": {"body": "t" * 10, "dribble": {"interval": 0.2, "chunk": 1}},
    }, posts={
        "/report": {"status": 200},
        "/report503": {"status": 503},
        "/get-capture": {"status": 200, "body": "captured"},
    })
    h.add_host("mta-sts.target.test", files={"/redirect-target": POLICY})
    h.add_host("mta-sts.wrongname.test", cert={"sans": ["mta-sts.other.test"]},
               files={"/p": POLICY})
    h.add_host("mta-sts.cnonly.test", cert={"cn_only": True}, files={"/p": POLICY})
    h.add_host("mta-sts.expired.test", cert={"expired": True}, files={"/p": POLICY})
    h.add_host("mta-sts.selfsigned.test", cert={"self_signed": True}, files={"/p": POLICY})
    h.add_host("mta-sts.otherca.test", cert={"other_ca": True}, files={"/p": POLICY})
    h.add_host("mta-sts.wild.test", cert={"sans": ["*.wild.test"]}, files={"/p": POLICY})
    h.add_host("mta-sts.sub.wild.test", cert={"sans": ["*.wild.test"]}, files={"/p": POLICY})
    h.add_host("mta-sts.pw.test", cert={"sans": ["mta-st*.pw.test"]}, files={"/p": POLICY})
    h.add_host("mta-sts.chain.test", cert={"intermediate": True}, files={"/p": POLICY})
    d = lab.dns
    d.a("mta-sts.refused.test", lab.ip(2, 250))            # nothing listens there
    d.a("mta-sts.plain.test", lab.ip(0, 254))              # httpback: plain HTTP on 8080
    for i, name in enumerate(("chunked", "garbage", "nothing", "tls11")):
        d.a("mta-sts.%s.test" % name, lab.ip(2, 201 + i))
    d.fault("mta-sts.servfail.test", "servfail")
    d.fault("mta-sts.dnstimeout.test", "timeout")


def access_log(lab):
    with open(os.path.join(lab.https.dir, "access.log")) as f:
        return f.read()


# -- tests -----------------------------------------------------------------------

def test_responses(lab):
    g = lab.https.hosts["mta-sts.good.test"]
    r = httpsget(lab, [url("mta-sts.good.test", "/.well-known/mta-sts.txt")])
    check(r.rc == 0 and r.r and r.r.status == 200 and r.r.error == "OK"
          and r.r.content_type == "text/plain" and r.r.body == POLICY
          and r.r.body_len == len(POLICY) and r.r.ip == g["ip"] and r.r.detail == "",
          "200: body, text/plain, the address used (%r %s)" % (r.r, r.err[-500:]))
    r = httpsget(lab, [url("mta-sts.good.test", "/utf8")])
    check(r.r and r.r.status == 200 and r.r.content_type == "text/plain; charset=utf-8",
          "Content-Type with parameters reported as sent (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.good.test", "/html")])
    check(r.r and r.r.status == 200 and r.r.content_type == "text/html",
          "text/html reported (the caller rejects it) (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.good.test", "/redirect")])
    log = access_log(lab)
    check(r.rc == 0 and r.r and r.r.status == 301 and r.r.error == "OK"
          and POLICY not in r.r.body and "/redirect-target" not in log,
          "301 returned as 301, the target never fetched (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.good.test", "/nonexistent")])
    check(r.rc == 0 and r.r and r.r.status == 404 and r.r.error == "OK",
          "404 returned as a response (%r)" % r.r)


def test_body_cap(lab):
    r = httpsget(lab, [url("mta-sts.good.test", "/exact")], "--max", 65536, "--print", 0)
    check(r.r and r.r.error == "OK" and r.r.body_len == 65536,
          "a body of exactly max_body (65,536) is kept (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.good.test", "/over")], "--max", 65536)
    check(r.rc == 1 and r.r and r.r.error == "TOO_BIG" and r.r.body_len == 0,
          "65,537 bytes with max 65,536 -> TOO_BIG (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.good.test", "/big")], "--max", 65536)
    check(r.r and r.r.error == "TOO_BIG" and r.r.body_len == 0,
          "70,000 bytes (Content-Length) -> TOO_BIG (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.good.test", "/big")])
    check(r.r and r.r.error == "TOO_BIG", "the default cap is 64 KiB (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.chunked.test", "/p")], "--max", 65536)
    check(r.r and r.r.error == "TOO_BIG" and r.r.status == 200,
          "70,000 bytes chunked (no Content-Length) -> TOO_BIG from the write callback (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.chunked.test", "/p")], "--max", 80000, "--print", 0)
    check(r.r and r.r.error == "OK" and r.r.body_len == 70000,
          "... and kept whole under a bigger cap (%r)" % r.r)


def test_timeouts(lab):
    r = httpsget(lab, [url("mta-sts.good.test", "/slow")], "--timeout-ms", 1000)
    check(r.rc == 1 and r.r and r.r.error == "TIMEOUT" and 900 <= r.r.elapsed_ms <= 1500
          and r.wall < 2.5,
          "slow body, timeout 1 s -> TIMEOUT after %s ms (process %.2f s) (%r)"
          % (r.r.elapsed_ms if r.r else "?", r.wall, r.r))
    r = httpsget(lab, [url("mta-sts.dnstimeout.test", "/p")], "--timeout-ms", 1000)
    check(r.r and r.r.error == "TIMEOUT" and 900 <= r.r.elapsed_ms <= 1500 and r.r.ip == "-",
          "silent DNS, timeout 1 s -> TIMEOUT: the timeout covers DNS (%r)" % r.r)


def test_certificates(lab):
    cases = [
        ("mta-sts.wrongname.test", "a certificate for another name", V_HOSTNAME_MISMATCH),
        ("mta-sts.cnonly.test", "CN-only (no subjectAltName)", V_HOSTNAME_MISMATCH),
        ("mta-sts.expired.test", "expired", V_CERT_HAS_EXPIRED),
        ("mta-sts.selfsigned.test", "self-signed", V_DEPTH_ZERO_SELF_SIGNED_CERT),
        ("mta-sts.otherca.test", "another CA", V_UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
        ("mta-sts.sub.wild.test", "*.wild.test for a name two labels down", V_HOSTNAME_MISMATCH),
        ("mta-sts.pw.test", "a partial wildcard mta-st*.pw.test", V_HOSTNAME_MISMATCH),
    ]
    for host, what, verify in cases:
        r = httpsget(lab, [url(host, "/p")])
        check(r.rc == 1 and r.r and r.r.error == "CERT" and r.r.status == 0
              and r.r.verify == verify and r.r.body_len == 0 and POLICY not in r.out,
              "%s -> CERT, verify result %d (%r)" % (what, verify, r.r))
    for host, what in (("mta-sts.wild.test", "*.wild.test for mta-sts.wild.test"),
                       ("mta-sts.chain.test", "a leaf under an intermediate")):
        r = httpsget(lab, [url(host, "/p")])
        check(r.rc == 0 and r.r and r.r.error == "OK" and r.r.body == POLICY,
              "%s -> OK (%r)" % (what, r.r))
    # The control: curl's own check (and OpenSSL's default) accepts the
    # CN-only certificate, so the rejection above is the client's doing.
    h = lab.https.hosts["mta-sts.cnonly.test"]
    p = subprocess.run(["curl", "-sS", "--noproxy", "*", "--cacert", lab.ca.file, "--resolve",
                        "mta-sts.cnonly.test:%d:%s" % (PORT, h["ip"]),
                        url("mta-sts.cnonly.test", "/p")],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and p.stdout == POLICY,
          "control: curl %s accepts the CN-only certificate (rc %d %s)"
          % ("7.88", p.returncode, p.stderr.strip()))


def test_failures(lab):
    r = httpsget(lab, [url("mta-sts.nx.test", "/p")])
    check(r.rc == 1 and r.r and r.r.error == "DNS" and "NXDOMAIN" in r.r.detail
          and r.r.status == 0, "a name without DNS records -> DNS (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.servfail.test", "/p")])
    check(r.r and r.r.error == "DNS" and "TEMPFAIL" in r.r.detail, "SERVFAIL -> DNS (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.refused.test", "/p")])
    check(r.rc == 1 and r.r and r.r.error == "CONNECT" and r.r.ip == lab.ip(2, 250),
          "connection refused -> CONNECT (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.plain.test", "/p", port=8080)])
    check(r.r and r.r.error == "TLS", "plain HTTP where TLS was expected -> TLS (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.tls11.test", "/p")])
    check(r.r and r.r.error == "TLS" and r.r.status == 0,
          "a TLS 1.1-only server -> TLS: 1.2 is the minimum (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.garbage.test", "/p")])
    check(r.r and r.r.error == "PROTOCOL", "a reply that is not HTTP -> PROTOCOL (%r)" % r.r)
    r = httpsget(lab, [url("mta-sts.nothing.test", "/p")])
    check(r.r and r.r.error == "PROTOCOL", "no reply at all -> PROTOCOL (%r)" % r.r)
    g = lab.https.hosts["mta-sts.good.test"]
    r = httpsget(lab, [url(g["ip"], "/p")])
    check(r.r and r.r.error == "INVALID" and "IP address" in r.r.detail,
          "an IP literal host is refused before any connection -> INVALID (%r)" % r.r)
    for urls, opts, what in (
            ([url("mta-sts.good.test", "/a b")], (), "a path with a space"),
            ([url("bad..name.test", "/p")], (), "an empty label"),
            ([url("mta-sts.good.test", "/p")], ("--max", 17 << 20), "max_body over 16 MiB"),
            ([url("mta-sts.good.test", "/p")], ("--timeout-ms", 600001), "timeout over 600 s")):
        r = httpsget(lab, urls, *opts)
        check(r.rc == 1 and r.r and r.r.error == "INVALID" and r.r.elapsed_ms < 100,
              "%s -> INVALID, delivered from the loop (%r)" % (what, r.r))


def test_post(lab):
    body = bytes(range(256)) * 40 + b"\x1f\x8b\x08\x00\r\n\x00end"
    path = os.path.join(lab.dir, "report.json.gz")
    with open(path, "wb") as f:
        f.write(body)
    n0 = len(lab.https.posts("mta-sts.good.test"))
    r = httpsget(lab, [url("mta-sts.good.test", "/report")], "--post", path,
                 "--type", "application/tlsrpt+gzip")
    check(r.rc == 0 and r.r and r.r.status == 200 and r.r.error == "OK",
          "POST -> the endpoint's 200 (%r)" % r.r)
    r503 = httpsget(lab, [url("mta-sts.good.test", "/report503")], "--post", path,
                    "--type", "application/tlsrpt+gzip")
    check(r503.rc == 0 and r503.r and r503.r.status == 503 and r503.r.error == "OK",
          "POST -> the endpoint's 503, returned as a response (%r)" % r503.r)
    posts = lab.https.wait_posts(n0 + 2, "mta-sts.good.test")[n0:]
    for p, want_path in zip(posts, ("/report", "/report503")):
        hd = {k.lower(): v for k, v in p["headers"].items()}
        check(p["method"] == "POST" and p["path"] == want_path and p["body"] == body
              and hd.get("content-type") == "application/tlsrpt+gzip"
              and "expect" not in hd and hd.get("user-agent", "").startswith("strictrelay/"),
              "%s captured byte for byte (%d bytes) with Content-Type "
              "application/tlsrpt+gzip, no Expect (%r)" % (want_path, len(body), hd))


def test_get_headers(lab):
    n0 = len(lab.https.posts("mta-sts.good.test"))
    r = httpsget(lab, [url("mta-sts.good.test", "/get-capture")])
    check(r.r and r.r.status == 200 and r.r.body == "captured", "GET through the backend (%r)" % r.r)
    p = lab.https.wait_posts(n0 + 1, "mta-sts.good.test")[-1]
    hd = {k.lower(): v for k, v in p["headers"].items()}
    bad = [k for k in hd if k in ("if-modified-since", "if-none-match", "cache-control",
                                  "pragma", "cookie", "accept-encoding", "authorization")]
    check(p["method"] == "GET" and not bad and hd.get("host") == "mta-sts.good.test",
          "a GET carries no conditional, caching, cookie or encoding header (%r)" % hd)


def test_no_proxy(lab):
    env = dict(os.environ)
    for k in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "http_proxy"):
        env[k] = "http://%s:3128" % lab.ip(0, 99)   # nothing listens there
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    r = httpsget(lab, [url("mta-sts.good.test", "/.well-known/mta-sts.txt")], env=env)
    check(r.rc == 0 and r.r and r.r.status == 200 and r.r.ip == lab.https.hosts["mta-sts.good.test"]["ip"],
          "proxy variables in the environment are ignored (%r)" % r.r)


def test_parallel(lab):
    good = url("mta-sts.good.test", "/.well-known/mta-sts.txt")
    r = httpsget(lab, [good], "--repeat", 20)
    check(r.rc == 0 and len(r.results) == 20
          and all(x.status == 200 and x.body == POLICY for x in r.results),
          "20 requests in parallel in one process all complete (%d results, %.2f s)"
          % (len(r.results), r.wall))
    urls = [url("mta-sts.good.test", "/slow2")] + [good] * 9 + [
        url("mta-sts.good.test", "/nonexistent"), url("mta-sts.cnonly.test", "/p"),
        url("mta-sts.nx.test", "/p"), url("mta-sts.refused.test", "/p"),
        url("mta-sts.redirect.test", "/p"), url("mta-sts.good.test", "/redirect"),
        url("mta-sts.expired.test", "/p"), url("mta-sts.wild.test", "/p"),
        url("mta-sts.chunked.test", "/p"), url("mta-sts.good.test", "/utf8")]
    r = httpsget(lab, urls, "--timeout-ms", 10000)
    by = {}
    for x in r.results:
        by.setdefault(x.url, []).append(x)
    slow = by.get(urls[0], [None])[0]
    check(len(r.results) == 20 and slow is not None and r.results[-1] is slow
          and slow.error == "OK" and slow.body == "t" * 10 and slow.elapsed_ms >= 1800,
          "20 mixed requests at once: the slow one (%s ms) finishes last, the others "
          "are not held back" % (slow.elapsed_ms if slow else "?"))
    errors = sorted(x.error for x in r.results)
    check(errors.count("OK") == 14 and errors.count("CERT") == 2 and errors.count("DNS") == 2
          and errors.count("CONNECT") == 1 and errors.count("TOO_BIG") == 1,
          "... each with its own result (%s)" % errors)


def test_cancel_and_free(lab):
    slow = url("mta-sts.good.test", "/slow")
    r = httpsget(lab, [slow, slow, url("mta-sts.dnstimeout.test", "/p")],
                 "--cancel-after-ms", 400)
    check(r.rc == 0 and "cancelled 3" in r.out and not r.results and r.wall < 3,
          "cancel with transfers and a DNS query in flight: no callback, loop closes "
          "(rc %d, %.2f s) %s" % (r.rc, r.wall, r.err[-500:]))
    r = httpsget(lab, [slow, slow, url("mta-sts.dnstimeout.test", "/p")],
                 "--free-after-ms", 400)
    check(r.rc == 1 and len(r.results) == 3 and all(x.error == "SHUTDOWN" for x in r.results)
          and r.wall < 3,
          "free with requests in flight: each completes with SHUTDOWN, loop closes "
          "(rc %d, %r)" % (r.rc, r.results))


def sanitized():
    """An ASan build: valgrind cannot run it, and LeakSanitizer already
    checks every httpsget run above."""
    p = subprocess.run(["ldd", HTTPSGET], capture_output=True, text=True)
    return "libasan" in p.stdout


def test_valgrind(lab):
    vg = shutil.which("valgrind")
    if vg is None or sanitized():
        print("skip valgrind: %s" % ("not installed" if vg is None else
                                     "ASan build (LSan checks every run instead)"))
        return
    wrap = [vg, "-q", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite"]
    urls = [url("mta-sts.good.test", "/.well-known/mta-sts.txt"),
            url("mta-sts.cnonly.test", "/p"), url("mta-sts.good.test", "/big"),
            url("mta-sts.chunked.test", "/p"), url("mta-sts.good.test", "/redirect"),
            url("mta-sts.nx.test", "/p"), url("mta-sts.refused.test", "/p"),
            url("mta-sts.tls11.test", "/p"), url("127.0.0.1", "/p")]
    r = httpsget(lab, urls, "--timeout-ms", 20000, wrap=wrap, timeout=300)
    check(r.rc == 1 and len(r.results) == len(urls) and "definitely lost" not in r.err,
          "valgrind, 9 mixed requests: no error, no definite leak, loop closed (rc %d, %d results) %s"
          % (r.rc, len(r.results), r.err[-3000:]))
    path = os.path.join(lab.dir, "vg-report.gz")
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b" + b"x" * 5000)
    r = httpsget(lab, [url("mta-sts.good.test", "/report")], "--post", path, "--type",
                 "application/tlsrpt+gzip", "--timeout-ms", 20000, wrap=wrap, timeout=300)
    check(r.rc == 0 and r.r and r.r.status == 200,
          "valgrind, POST: clean (rc %d) %s" % (r.rc, r.err[-3000:]))
    r = httpsget(lab, [url("mta-sts.good.test", "/slow")] * 2 + [url("mta-sts.dnstimeout.test", "/p")],
                 "--free-after-ms", 1500, wrap=wrap, timeout=300)
    check(r.rc == 1 and len(r.results) == 3 and all(x.error == "SHUTDOWN" for x in r.results),
          "valgrind, free with requests in flight: clean (rc %d) %s" % (r.rc, r.err[-3000:]))
    r = httpsget(lab, [url("mta-sts.good.test", "/slow")] * 2 + [url("mta-sts.dnstimeout.test", "/p")],
                 "--cancel-after-ms", 1500, wrap=wrap, timeout=300)
    check(r.rc == 0 and "cancelled 3" in r.out,
          "valgrind, cancel with requests in flight: clean (rc %d) %s" % (r.rc, r.err[-3000:]))


def main():
    with Lab("https") as lab:
        declare(lab)
        lab.start()
        raws = [RawTLS(lab, "mta-sts.%s.test" % n, lab.ip(2, 201 + i), n)
                for i, n in enumerate(("chunked", "garbage", "nothing", "tls11"))]
        try:
            tests = [test_responses, test_body_cap, test_timeouts, test_certificates,
                     test_failures, test_post, test_get_headers, test_no_proxy, test_parallel,
                     test_cancel_and_free, test_valgrind]
            only = os.environ.get("HTTPS_TEST_ONLY")
            for t in tests:
                if only and t.__name__ not in only.split(","):
                    continue
                print("== %s" % t.__name__)
                try:
                    t(lab)
                except Exception as e:  # report and go on with the next check
                    check(False, "%s raised %r" % (t.__name__, e))
        finally:
            for s in raws:
                s.stop()
        if FAILURES:
            raise SystemExit("%d check(s) failed:\n  %s" % (len(FAILURES), "\n  ".join(FAILURES)))
    print("all checks passed")


if __name__ == "__main__":
    main()
