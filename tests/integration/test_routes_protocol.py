#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Outbound delivery against real peers on loopback: [routes] (bracketed
next hops, the default route, suffix routes, MX routes, TLS levels,
verify_name), a second relay as the receiving MX in front of an internal
server (accept_domains), and the SMTP client's protocol details: several
recipients in one transaction, PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
dot-stuffing and CR LF on the wire, connection reuse with RSET,
per-recipient replies, max_per_domain, HELO fallback, and the STARTTLS
response injection (TLS-04, client side).

Checklist items: SMTP-01/03/04/14/16, PIPE-02, SIZE-03, 8BIT-02, UTF8-03,
SMUG-02, TLS-02/03/04/05, STS-08 (routes), RTLS-15/16 (smarthost hop).

Peers: aiosmtpd endpoints from tests/lib (transcripts, exact bytes) and, for what
they cannot do, ScriptedMX below (plain sockets in this process, on 127.N.4.x):
which client bytes were waiting before any reply (PIPELINING), a STARTTLS
reply with injected bytes, different EHLO lists before/after TLS, a handshake
that ends in an alert, a 354 with no accepted recipient.

Each test starts its own relay(s) in one shared Lab and checks at the end that
they are alive, exit 0 on SIGTERM and logged no sanitizer report.

Run: meson test -C build routes_protocol --print-errorlogs
"""

import os
import re
import socket
import ssl
import sys
import threading
import time
import unittest
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relaycase import QID_RE, SANITIZER_RE, log_tail, parse_queue_list, parse_queue_show  # noqa: E402
import lab as labmod  # noqa: E402
from lab import Lab, LabCase, LabError  # noqa: E402

SENDER = "sender@bounce.test"          # bounces go to bounce.hop.test (MX of bounce.test)


def body(subject, text="hello\r\n", extra_headers=b""):
    if isinstance(text, str):
        text = text.encode("utf-8")
    return (b"From: " + SENDER.encode() + b"\r\nSubject: " + subject.encode("utf-8") + b"\r\n" +
            extra_headers + b"\r\n" + text)


def wait_for(pred, timeout=15.0, interval=0.05, what="condition"):
    return labmod.wait_for(pred, timeout, interval, what)


def split_message(data):
    """(header lines unfolded, body) of a message (bytes, CR LF)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = []
    for ln in head.split(b"\r\n"):
        if ln[:1] in (b" ", b"\t") and lines:
            lines[-1] += b" " + ln.strip()
        else:
            lines.append(ln)
    return lines, rest


def bare_newlines(raw):
    """Offsets of a CR not followed by LF or an LF not preceded by CR."""
    out = []
    for i, ch in enumerate(raw):
        if ch == 0x0A and (i == 0 or raw[i - 1] != 0x0D):
            out.append(i)
        elif ch == 0x0D and (i + 1 >= len(raw) or raw[i + 1] != 0x0A):
            out.append(i)
    return out


def log_quote(text):
    """A value as strictrelay's logs write it (mta/util.c str_quote)."""
    raw = text.encode("utf-8")
    if raw and not any(c <= 0x20 or c >= 0x7f or c in b'"\\=' for c in raw):
        return text
    out = []
    for c in raw:
        if c in b'"\\':
            out.append("\\" + chr(c))
        elif c < 0x20 or c >= 0x7f:
            out.append("\\x%02x" % c)
        else:
            out.append(chr(c))
    return '"' + "".join(out) + '"'


def verbs(commands):
    """The command verbs (upper case) of a session's client lines, DATA content skipped."""
    return [c.split()[0].upper() if c.strip() else "" for c in commands if not c.startswith("<")]


# ---------------------------------------------------------------------------
# A scripted SMTP server on plain sockets for what the aiosmtpd peers cannot
# show: which client bytes were already waiting before any reply came (is
# PIPELINING used?), and a STARTTLS reply with extra bytes behind it.
# ---------------------------------------------------------------------------

class ScriptedMX:
    def __init__(self, ip, port, name, pipelining=True, window=0.0, starttls_reply=None,
                 tls=None, caps_plain=None, caps_tls=None, tls_max=None, rcpt_reply=None):
        self.ip, self.port, self.name = ip, port, name
        self.pipelining = pipelining
        self.window = window                  # seconds to gather client bytes after the last EHLO reply
        self.starttls_reply = starttls_reply  # bytes sent (in one write) as the reply to STARTTLS
        self.tls = None                       # (cert, key): a real STARTTLS
        if tls is not None:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*tls)
            if tls_max is not None:         # a handshake that fails with an alert
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.tls.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                    self.tls.maximum_version = tls_max
        self.caps_plain = caps_plain          # EHLO keywords before / after TLS (default: derived)
        self.caps_tls = caps_tls
        self.rcpt_reply = rcpt_reply          # reply line to every RCPT (default 250); DATA is always 354
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def close(self):
        self.stopping.set()
        self.acceptor.join(5)
        self.sock.close()
        for t in self.threads:
            t.join(5)

    def connections(self):
        with self.lock:
            return [dict(c) for c in self.conns]

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = {"start": time.time(), "end": None, "peer": addr, "received": b"",
                   "commands": [], "after_ehlo": None, "after_starttls": None,
                   "tls_attempt": False, "tls": None, "messages": []}
            with self.lock:
                self.conns.append(rec)
            t = threading.Thread(target=self._serve, args=(conn, rec), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn, rec):
        buf = bytearray()
        conn.settimeout(15)
        box = [conn]          # the socket, replaced by the TLS one after STARTTLS

        def recv():
            data = box[0].recv(65536)
            if not data:
                raise EOFError
            with self.lock:
                rec["received"] += data
                if rec["after_starttls"] is not None:
                    rec["after_starttls"] += data
            buf.extend(data)

        def line():
            while b"\r\n" not in buf:
                if rec["after_starttls"] is not None and buf[:1] == b"\x16":
                    rec["tls_attempt"] = True        # a TLS ClientHello: the client went on
                    raise EOFError
                recv()
            i = buf.index(b"\r\n")
            ln = bytes(buf[:i])
            del buf[:i + 2]
            with self.lock:
                rec["commands"].append(ln.decode("utf-8", "replace"))
            return ln

        try:
            conn.sendall(b"220 %s ESMTP scripted\r\n" % self.name.encode())
            while True:
                ln = line()
                verb = ln.split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    in_tls = box[0] is not conn
                    if in_tls and self.caps_tls is not None:
                        caps = [self.name] + list(self.caps_tls)
                    elif not in_tls and self.caps_plain is not None:
                        caps = [self.name] + list(self.caps_plain)
                    else:
                        caps = [self.name]
                        if self.pipelining:
                            caps.append("PIPELINING")
                        if ((self.starttls_reply is not None and rec["after_starttls"] is None)
                                or (self.tls is not None and not in_tls)):
                            caps.append("STARTTLS")
                        caps += ["8BITMIME", "ENHANCEDSTATUSCODES"]
                    out = "".join("250%s%s\r\n" % ("-" if i < len(caps) - 1 else " ", c)
                                  for i, c in enumerate(caps))
                    box[0].sendall(out.encode())
                    last_ehlo = in_tls or "STARTTLS" not in caps
                    if self.window and last_ehlo and rec["after_ehlo"] is None:
                        # Gather what the client sends before it sees any reply.
                        deadline = time.monotonic() + self.window
                        while b"DATA\r\n" not in buf:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                break
                            box[0].settimeout(left)
                            try:
                                recv()
                            except socket.timeout:
                                break
                        box[0].settimeout(15)
                        rec["after_ehlo"] = bytes(buf)
                elif verb == b"HELO":
                    box[0].sendall(b"250 %s\r\n" % self.name.encode())
                elif verb == b"STARTTLS" and self.starttls_reply is not None:
                    with self.lock:
                        rec["after_starttls"] = b""
                    conn.sendall(self.starttls_reply)
                elif verb == b"STARTTLS" and self.tls is not None and box[0] is conn and not buf:
                    conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                    box[0] = self.tls.wrap_socket(conn, server_side=True)
                    with self.lock:
                        rec["tls"] = box[0].version()
                elif verb == b"MAIL":
                    box[0].sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    box[0].sendall((self.rcpt_reply or b"250 2.1.5 Ok") + b"\r\n")
                elif verb == b"DATA":
                    box[0].sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    while not (buf.startswith(b".\r\n") or b"\r\n.\r\n" in buf):
                        recv()
                    if buf.startswith(b".\r\n"):
                        data, end = b"", 3
                    else:
                        i = buf.index(b"\r\n.\r\n")
                        data, end = bytes(buf[:i + 2]), i + 5
                    del buf[:end]
                    with self.lock:
                        rec["messages"].append(data)
                    box[0].sendall(b"250 2.0.0 Ok: queued\r\n")
                elif verb in (b"RSET", b"NOOP"):
                    box[0].sendall(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    box[0].sendall(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    box[0].sendall(b"500 5.5.2 Error: command not recognized\r\n")
        except (EOFError, OSError, ValueError):
            pass
        finally:
            rec["end"] = time.time()
            try:
                box[0].close()
            except OSError:
                pass


class RoutesProtocol(LabCase):
    scripted = {}

    # ------------------------------------------------------------------ the lab
    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        cls.lab = lab = Lab("routes_protocol")
        try:
            cls._declare(lab)
            lab.start()
            cls.scripted = {
                "pipe": ScriptedMX(lab.ip(4, 1), 2525, "pipe.raw.test", pipelining=True, window=1.0),
                "nopipe": ScriptedMX(lab.ip(4, 2), 2525, "nopipe.raw.test", pipelining=False,
                                     window=0.7),
                "inject": ScriptedMX(lab.ip(4, 3), 2525, "inject.raw.test",
                                     starttls_reply=b"220 2.0.0 ready\r\n250 2.0.0 fake\r\n"),
                "inject2": ScriptedMX(lab.ip(4, 4), 2525, "inject2.raw.test",
                                      starttls_reply=b"220 2.0.0 ready\r\n250 2.0.0 fake\r\n"),
                # TLS-02: a different capability list before and after STARTTLS
                "tls02a": ScriptedMX(lab.ip(4, 5), 2525, "tls02a.raw.test", window=1.0,
                                     tls=lab.ca.issue("tls02a.raw.test"),
                                     caps_plain=["SIZE 100", "STARTTLS", "ENHANCEDSTATUSCODES"],
                                     caps_tls=["PIPELINING", "8BITMIME", "SMTPUTF8", "STARTTLS",
                                               "ENHANCEDSTATUSCODES"]),
                "tls02b": ScriptedMX(lab.ip(4, 6), 2525, "tls02b.raw.test",
                                     tls=lab.ca.issue("tls02b.raw.test"),
                                     caps_plain=["SIZE 100000", "PIPELINING", "8BITMIME", "STARTTLS",
                                                 "ENHANCEDSTATUSCODES"],
                                     caps_tls=["SIZE 50", "ENHANCEDSTATUSCODES"]),
                # PIPE-02: 354 to DATA although no recipient was accepted
                "broken354": ScriptedMX(lab.ip(4, 8), 2525, "broken354.raw.test",
                                        rcpt_reply=b"550 5.1.1 no such user"),
                # a TLS handshake that ends in an alert (TLS 1.1 at most)
                "alert": ScriptedMX(lab.ip(4, 7), 2525, "alert.raw.test",
                                    tls=lab.ca.issue("alert.raw.test"), tls_max=ssl.TLSVersion.TLSv1_1),
            }
        except BaseException:
            cls._close_scripted()
            lab.close(failed=True)
            raise
        sys.stderr.write("routes_protocol: lab up in %.2f s\n" % (time.monotonic() - t0))

    @classmethod
    def _declare(cls, lab):
        d, m = lab.dns, lab.mx
        # bounces (DSNs to SENDER) land here
        m.add("bounce.hop.test")
        d.mx("bounce.test", "bounce.hop.test")
        # --- routes
        m.add("direct.hop.test", ip=lab.ip(1, 60), port=2600, dns=False)
        m.add("smart.hop.test")
        m.add("sub.hop.test")
        m.add("sub2.hop.test")
        d.a("x.empty.hop.test", lab.ip(9, 9))        # empty.hop.test exists, without MX or address
        m.add("mx1.relayhost.test")
        m.add("decoy-a.hop.test")           # A record of relayhost.test itself
        m.add("decoy-mx.hop.test")          # MX of mxvia.test itself
        d.mx("relayhost.test", "mx1.relayhost.test", 10)
        d.a("relayhost.test", m.addr("decoy-a.hop.test")[0])
        d.mx("mxvia.test", "decoy-mx.hop.test", 10)
        m.add("offer.hop.test")                                   # offers STARTTLS
        m.add("selfsigned.hop.test", cert={"self_signed": True})
        m.add("nostarttls.hop.test", starttls=False)
        m.add("wrongname.hop.test", cert=lab.ca.issue("somebody-else.test"))
        m.add("named.hop.test", dns=False)
        m.add("tls454.hop.test", reply={"starttls": "454 4.7.0 TLS not available due to temporary reason"})
        # aiosmtpd (asyncio) ends a failed handshake by closing the connection, no alert
        m.add("oldtls.hop.test", tls_max="1.1")
        # --- REQUIRETLS through routes (RTLS-15/16)
        m.add("rtls.hop.test", requiretls=True)
        m.add("rtls-ss.hop.test", requiretls=True, cert={"self_signed": True})
        m.add("noadv.hop.test")
        # --- second relay as a receiving MX
        m.add("internal.corp-hop.test")
        # --- protocol details
        m.add("multi.hop.test")
        d.mx("multi.test", "multi.hop.test")
        m.add("many.hop.test", reply={"rcpt": {"r%03d@many.test" % i: ["452 4.5.3 Too many recipients", None]
                                               for i in range(100, 120)}})
        d.mx("many.test", "many.hop.test")
        m.add("nopipe.hop.test", pipelining=False)
        d.mx("nopipe.test", "nopipe.hop.test")
        m.add("size.hop.test", size=4000)
        d.mx("sized.test", "size.hop.test")
        m.add("nosize.hop.test")
        d.mx("unsized.test", "nosize.hop.test")
        m.add("no8bit.hop.test", eightbitmime=False)
        d.mx("no8bit.test", "no8bit.hop.test")
        m.add("8bit.hop.test")
        d.mx("yes8bit.test", "8bit.hop.test")
        m.add("noutf8.hop.test", smtputf8=False)
        d.mx("noutf8.test", "noutf8.hop.test")
        m.add("utf8.hop.test")
        d.mx("yesutf8.test", "utf8.hop.test")
        m.add("pairing.hop.test", refuse=True,
              reply={"mail": ["550 5.7.1 sender refused here", None],
                     "rcpt": {"multi@pairing.test": "550-5.1.1 first line\n550 5.1.1 second line"}})
        d.mx("pairing.test", "pairing.hop.test")
        m.add("big.hop.test")
        d.mx("big.test", "big.hop.test")
        m.add("dots.hop.test")
        d.mx("dots.test", "dots.hop.test")
        m.add("lf.hop.test")
        d.mx("lf.test", "lf.hop.test")
        d.a("alert.raw.test", lab.ip(4, 7))
        d.a("broken354.raw.test", lab.ip(4, 8))
        d.mx("broken354.test", "broken354.raw.test")
        for i, n in ((5, "tls02a"), (6, "tls02b")):
            d.a("%s.raw.test" % n, lab.ip(4, i))
            d.mx("%s.test" % n, "%s.raw.test" % n)
        d.a("pipe.raw.test", lab.ip(4, 1))
        d.mx("piperaw.test", "pipe.raw.test")
        d.a("nopipe.raw.test", lab.ip(4, 2))
        d.mx("nopiperaw.test", "nopipe.raw.test")
        # --- connection reuse, max_per_domain
        m.add("reuse.hop.test", refuse=True,
              reply={"rcpt": {"bad@reuse.test": "550 5.1.1 no such user",
                              "later@reuse.test": "451 4.2.0 mailbox busy, try later"}})
        d.mx("reuse.test", "reuse.hop.test")
        m.add("slow.hop.test", refuse=True, delay={"data": 1.0})
        d.mx("slow.test", "slow.hop.test")
        m.add("closer.hop.test", refuse=True, close={"rset": True})
        d.mx("closer.test", "closer.hop.test")
        m.add("down.hop.test", refuse=True)                     # never listens
        d.mx("down.test", "down.hop.test")
        for n in ("slowa", "slowb"):
            m.add("%s.hop.test" % n, refuse=True, delay={"data": 0.5})
            d.mx("%s.test" % n, "%s.hop.test" % n)
        # --- HELO fallback
        m.add("oldie.hop.test", reply={"ehlo": "502 5.5.1 Error: command not recognized"})
        d.mx("oldie.test", "oldie.hop.test")
        m.add("oldie2.hop.test", reply={"ehlo": "502 5.5.1 Error: command not recognized"})
        d.mx("oldie2.test", "oldie2.hop.test")
        # --- STARTTLS injection
        d.a("inject.raw.test", lab.ip(4, 3))
        d.mx("inject.test", "inject.raw.test", 10)
        d.a("inject2.raw.test", lab.ip(4, 4))
        m.add("backup.hop.test")
        d.mx("inject2.test", "inject2.raw.test", 10)
        d.mx("inject2.test", "backup.hop.test", 20)

    @classmethod
    def _close_scripted(cls):
        for s in cls.scripted.values():
            try:
                s.close()
            except Exception:
                pass
        cls.scripted = {}

    @classmethod
    def tearDownClass(cls):
        cls._close_scripted()
        super().tearDownClass()

    # ------------------------------------------------------------------ relays
    def relay(self, **config):
        r = self.lab.relay(**config)
        self.addCleanup(self.check_relay_end, r)
        return r

    def check_relay_end(self, r):
        """Cleanup: the relay is alive, exits 0 on SIGTERM and logged no sanitizer report."""
        self.assertTrue(r.running(), "relay %d died; log:\n%s" % (r.index, log_tail(r)))
        rc = r.stop()
        self.assertEqual(rc, 0, "relay %d exit status; log:\n%s" % (r.index, log_tail(r)))
        bad = [ln for ln in r.log_text().splitlines() if SANITIZER_RE.search(ln)]
        self.assertEqual(bad, [], "sanitizer report in relay %d log:\n%s" % (r.index, log_tail(r, 80)))

    # ------------------------------------------------------------------ clients
    def submit(self, r, rcpts, data, sender=SENDER, mail_options=(), source=None, tls=False):
        """One message through relay r with smtplib; returns its queue id."""
        s = self.lab.smtp(r.ip, r.port, source_address=source, server_hostname="relay.test")
        try:
            code, _ = s.ehlo()
            self.assertEqual(code, 250)
            if tls:
                s.starttls(context=self.lab.ca.context())
                self.assertEqual(s.ehlo()[0], 250)
            code, msg = s.mail(sender, list(mail_options))
            self.assertEqual(code, 250, msg)
            for rc in rcpts:
                code, msg = s.rcpt(rc)
                self.assertEqual(code, 250, "RCPT %s: %r" % (rc, msg))
            code, msg = s.data(data)
            self.assertEqual(code, 250, msg)
            m = re.search(r"queued as (%s)" % QID_RE, msg.decode())
            self.assertIsNotNone(m, msg)
            s.quit()
            return m.group(1)
        finally:
            s.close()

    # ------------------------------------------------------------------ log helpers
    def outcome(self, r, rcpt, status, timeout=15):
        """Waits for the final log line of rcpt with status=sent|deferred|bounced; returns it."""
        rx = r"^.*delivery: id=\S+ to=<%s> .*status=%s .*$" % (re.escape(log_quote(rcpt)), status)
        try:
            return r.wait_log(rx, timeout=timeout).group(0)
        except LabError as e:
            self.fail("no %s outcome for %s: %s\nMX transcript:\n%s" % (status, rcpt, e,
                                                                       self.lab.mx.transcript()[-3000:]))

    def log_lines(self, r, regex):
        return [ln for ln in r.log_text().splitlines() if re.search(regex, ln)]

    def msgs_to(self, peer, rcpt):
        return [m for m in self.lab.mx.messages(peer) if rcpt in m["rcpt_tos"]]

    def wait_msg(self, peer, rcpt, timeout=15):
        wait_for(lambda: self.msgs_to(peer, rcpt), timeout,
                 what="a message for %s at %s" % (rcpt, peer))
        got = self.msgs_to(peer, rcpt)
        self.assertEqual(len(got), 1, "expected one copy for %s at %s" % (rcpt, peer))
        return got[0]

    def session_of(self, msg):
        return [s for s in self.lab.mx.sessions(msg["endpoint"]) if s["sid"] == msg["session"]][0]

    def dsn_for(self, rcpt, timeout=15):
        """The bounce (DSN) that mentions rcpt, delivered to SENDER at bounce.hop.test."""
        def find():
            return [m for m in self.lab.mx.messages("bounce.hop.test")
                    if m["mail_from"] == "" and SENDER in m["rcpt_tos"]
                    and ("; " + rcpt).encode("utf-8") in m["data"]]
        wait_for(find, timeout, what="a bounce about %s" % rcpt)
        return find()[0]

    def dns_log(self):
        with open(os.path.join(self.lab.dns.dir, "dnsmasq.log"), encoding="utf-8",
                  errors="replace") as f:
            return f.read()

    def wait_tried_once(self, r, domain_rx, n, timeout=15):
        """Waits until n recipients matching domain_rx are queued with attempts=1 in the
        queue itself (committed, not just logged), so that a flush finds them all."""
        rx = re.compile(r"^\s+queued\s+\S+@%s\s+attempts=1 " % domain_rx, re.M)

        def done():
            p = r.cli("queue", "list")
            return len(rx.findall(p.stdout)) == n
        wait_for(done, timeout, interval=0.1, what="%d recipients @%s tried once" % (n, domain_rx))

    def flush_all(self, r, n):
        p = r.cli("queue", "flush")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "%d recipient%s due now (the relay picks it up within a second)"
                         % (n, "" if n == 1 else "s"))

    def queue_show(self, r, qid):
        p = r.cli("queue", "show", qid)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    # =================================================================== 1. routes
    def test_routes_and_tls_levels(self):
        lab = self.lab
        direct_ip = lab.ip(1, 60)
        named_ip = lab.mx.addr("named.hop.test")[0]
        routes = {
            "bounce.test": "[bounce.hop.test]",
            "direct.test": "[%s]:2600" % direct_ip,
            "*": "[smart.hop.test]:2525",
            ".example.test": "[sub.hop.test]",
            ".c.example.test": "[sub2.hop.test]",
            "exact.example.test": "[sub2.hop.test]",
            "mxvia.test": "relayhost.test:2525",
            "tlsnone.test": "[offer.hop.test] tls=none",
            "tlsmay.test": "[selfsigned.hop.test] tls=may",
            "tlsenc-plain.test": "[nostarttls.hop.test] tls=encrypt",
            "tlsenc-ss.test": "[selfsigned.hop.test] tls=encrypt",
            "tlsver-wrong.test": "[wrongname.hop.test] tls=verify",
            "tlsver-ip.test": "[%s] tls=verify verify_name=named.hop.test" % named_ip,
            "tlsver-ipnoname.test": "[%s] tls=verify" % named_ip,
            "tlsenc-454.test": "[tls454.hop.test] tls=encrypt",
            "tlsmay-454.test": "[tls454.hop.test] tls=may",
        }
        r = self.relay(queue={"retry_schedule": "1h"}, routes=routes)

        # check-config prints every route with its effective TLS level
        p = r.cli("check-config")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        routes_part = p.stdout.split("[routes]\n", 1)[1].split("\n[", 1)[0]
        for want in ("direct.test = [%s]:2600 tls=may" % direct_ip,
                     "* = [smart.hop.test]:2525 tls=may",
                     ".example.test = [sub.hop.test] tls=may",
                     "mxvia.test = relayhost.test:2525 tls=may",
                     "tlsnone.test = [offer.hop.test] tls=none",
                     "tlsenc-plain.test = [nostarttls.hop.test] tls=encrypt",
                     "tlsver-wrong.test = [wrongname.hop.test] tls=verify",
                     "tlsver-ip.test = [%s] tls=verify verify_name=named.hop.test" % named_ip):
            self.assertRegex(routes_part, r"(?m)^%s\s+# from %s:\d+$" % (re.escape(want),
                                                                         re.escape(r.config_path)))
        self.assertEqual(len([ln for ln in routes_part.splitlines() if " = " in ln]), len(routes),
                         routes_part)

        ids = {}
        for rcpt in ("x@direct.test", "x@anything.test", "x@example.test", "x@a.example.test",
                     "x@b.c.example.test", "x@c.example.test", "x@exact.example.test", "x@mxvia.test", "x@tlsnone.test", "x@tlsmay.test",
                     "x@tlsenc-plain.test", "x@tlsenc-ss.test", "x@tlsver-wrong.test",
                     "x@tlsver-ip.test", "x@tlsver-ipnoname.test", "x@tlsenc-454.test",
                     "x@tlsmay-454.test", "Y@Direct.TEST"):
            ids[rcpt] = self.submit(r, [rcpt], body("route test " + rcpt))

        # -- a bracketed IP:port route: delivered there, no DNS query at all
        m = self.wait_msg("direct.hop.test", "x@direct.test")
        self.assertEqual(m["endpoint_addr"], "%s:2600" % direct_ip)
        line = self.outcome(r, "x@direct.test", "sent")
        self.assertIn("dest=route(direct.test)[%s]:2600 mx=%s ip=%s " % (direct_ip, direct_ip,
                                                                          direct_ip), line)
        self.assertIn(" dsn=2.0.0 ", line)
        # domains are case-insensitive: Y@Direct.TEST takes the same route
        m = self.wait_msg("direct.hop.test", "Y@Direct.TEST")
        self.assertIn("dest=route(direct.test)", self.outcome(r, "Y@Direct.TEST", "sent"))
        # -- the default route catches other domains (and the parent of a suffix route)
        for rcpt in ("x@anything.test", "x@example.test"):
            self.wait_msg("smart.hop.test", rcpt)
            line = self.outcome(r, rcpt, "sent")
            self.assertIn("dest=route(*)[smart.hop.test]:2525 mx=smart.hop.test ", line)
        # -- a suffix route takes every subdomain, but not the domain itself; the longest
        # suffix wins, an exact route wins over any suffix
        for rcpt in ("x@a.example.test", "x@c.example.test"):
            self.wait_msg("sub.hop.test", rcpt)
            self.assertIn("dest=route(.example.test)[sub.hop.test]:2525 ", self.outcome(r, rcpt, "sent"))
        for rcpt in ("x@b.c.example.test", "x@exact.example.test"):
            self.wait_msg("sub2.hop.test", rcpt)
            self.assertRegex(self.outcome(r, rcpt, "sent"),
                             r"dest=route\(\S+\)\[sub2\.hop\.test\]:2525 mx=sub2\.hop\.test ")
        self.assertEqual(self.msgs_to("sub.hop.test", "x@example.test"), [])
        self.assertEqual(len(self.lab.mx.messages("sub.hop.test")), 2)
        self.assertEqual(len(self.lab.mx.messages("sub2.hop.test")), 2)
        # -- a non-bracketed route: the MX of the next hop, not its A, not the domain's MX
        self.wait_msg("mx1.relayhost.test", "x@mxvia.test")
        line = self.outcome(r, "x@mxvia.test", "sent")
        self.assertIn("dest=route(mxvia.test)relayhost.test:2525 mx=mx1.relayhost.test ", line)
        self.assertEqual(self.msgs_to("decoy-a.hop.test", "x@mxvia.test"), [])
        self.assertEqual(self.msgs_to("decoy-mx.hop.test", "x@mxvia.test"), [])

        # -- TLS levels
        # tls=none: no STARTTLS although offered
        m = self.wait_msg("offer.hop.test", "x@tlsnone.test")
        self.assertIsNone(m["tls"])
        self.assertNotIn("STARTTLS", verbs(self.lab.mx.commands(self.session_of(m))))
        self.assertIn(" tls=none ", self.outcome(r, "x@tlsnone.test", "sent"))
        # tls=may, self-signed: delivered encrypted, not verified
        m = self.wait_msg("selfsigned.hop.test", "x@tlsmay.test")
        self.assertIsNotNone(m["tls"])
        self.assertRegex(self.outcome(r, "x@tlsmay.test", "sent"), r" tls=TLSv1\.[23]/\S+ verified=no ")
        # tls=encrypt, self-signed: delivered encrypted, not verified
        m = self.wait_msg("selfsigned.hop.test", "x@tlsenc-ss.test")
        self.assertIsNotNone(m["tls"])
        self.assertEqual(m["tls"]["sni"], "selfsigned.hop.test")
        self.assertRegex(self.outcome(r, "x@tlsenc-ss.test", "sent"), r" tls=TLSv1\.[23]/\S+ verified=no ")
        # tls=verify with verify_name while connecting by IP: verified, delivered
        m = self.wait_msg("named.hop.test", "x@tlsver-ip.test")
        self.assertIsNotNone(m["tls"])
        self.assertIsNone(m["tls"]["sni"])              # SNI never carries an address
        self.assertRegex(self.outcome(r, "x@tlsver-ip.test", "sent"), r" tls=TLSv1\.[23]/\S+ verified=yes ")
        # the session's line comes when the connection ends (after connection_cache_time)
        wait_for(lambda: self.log_lines(r, r"delivery: dest=route\(tlsver-ip\.test\)\S* .* tls=yes verified=yes "
                                           r"verify_name=named\.hop\.test result=success"),
                 10, 0.1, "the session line of tlsver-ip.test")
        # tls=encrypt without STARTTLS at the peer: deferred 4.7.10, nothing sent in plaintext
        line = self.outcome(r, "x@tlsenc-plain.test", "deferred")
        self.assertIn(" dsn=4.7.10 ", line)
        sess = self.lab.mx.sessions("nostarttls.hop.test")
        self.assertEqual(len(sess), 1, self.lab.mx.transcript("nostarttls.hop.test"))
        self.assertNotIn("MAIL", verbs(self.lab.mx.commands(sess[0])))
        self.assertEqual(self.lab.mx.messages("nostarttls.hop.test"), [])
        # tls=verify against a certificate for another name: deferred 4.7.5, no MAIL
        line = self.outcome(r, "x@tlsver-wrong.test", "deferred")
        self.assertIn(" dsn=4.7.5 ", line)
        sess = self.lab.mx.sessions("wrongname.hop.test")
        self.assertEqual(len(sess), 1, self.lab.mx.transcript("wrongname.hop.test"))
        self.assertIn("STARTTLS", verbs(self.lab.mx.commands(sess[0])))
        self.assertNotIn("MAIL", verbs(self.lab.mx.commands(sess[0])))
        self.assertEqual(self.lab.mx.messages("wrongname.hop.test"), [])
        # tls=verify by IP without verify_name: the IP is not in the certificate
        line = self.outcome(r, "x@tlsver-ipnoname.test", "deferred")
        self.assertIn(" dsn=4.7.5 ", line)
        self.assertEqual(self.msgs_to("named.hop.test", "x@tlsver-ipnoname.test"), [])

        # TLS-05: STARTTLS answered 454 under tls=encrypt: deferred, never plaintext;
        # under tls=may a 454 means plaintext (opportunistic)
        line = self.outcome(r, "x@tlsenc-454.test", "deferred")
        self.assertIn(" dsn=4.7.10 ", line)
        m = self.wait_msg("tls454.hop.test", "x@tlsmay-454.test")
        self.assertIsNone(m["tls"])
        self.assertIn(" tls=none ", self.outcome(r, "x@tlsmay-454.test", "sent"))
        sess = self.lab.mx.sessions("tls454.hop.test")
        self.assertEqual(len(sess), 2, self.lab.mx.transcript("tls454.hop.test"))
        self.assertEqual(len([s for s in sess if "MAIL" in verbs(self.lab.mx.commands(s))]), 1)

        # -- no MX lookup for bracketed routes; the MX of the route host otherwise
        dns = self.dns_log()
        self.assertNotIn("direct.test", dns)
        for name in ("anything.test", "example.test", "a.example.test", "mxvia.test",
                     "smart.hop.test", "tlsnone.test"):
            self.assertNotRegex(dns, r"query\[MX\] %s " % re.escape(name))
        self.assertRegex(dns, r"query\[MX\] relayhost\.test ")
        self.assertNotRegex(dns, r"query\[A\] relayhost\.test ")
        self.assertRegex(dns, r"query\[A\] smart\.hop\.test ")

        # -- queue list / show name the route (deferred) or the MX (delivered)
        self.wait_tried_once(r, r"tls(?:enc-plain|ver-wrong|ver-ipnoname|enc-454)\.test", 4)
        show = self.queue_show(r, ids["x@tlsenc-plain.test"])
        info = parse_queue_show(show)
        self.assertEqual([x[0] for x in info["recipients"]], ["queued"], show)
        self.assertIn(" via route(tlsenc-plain.test)[nostarttls.hop.test]:2525", show)
        self.assertRegex(show, r"attempts=1 next in \S+ via route\(tlsenc-plain\.test\)"
                               r"\[nostarttls\.hop\.test\]:2525  last: .*4\.7\.10")
        show = self.queue_show(r, ids["x@tlsver-wrong.test"])
        self.assertIn(" via route(tlsver-wrong.test)[wrongname.hop.test]:2525", show)
        p = r.cli("queue", "list")
        self.assertEqual(p.returncode, 0, p.stderr)
        listed = parse_queue_list(p.stdout, self)
        self.assertEqual(sorted(x["id"] for x in listed),
                         sorted(ids[k] for k in ("x@tlsenc-plain.test", "x@tlsver-wrong.test",
                                                 "x@tlsver-ipnoname.test", "x@tlsenc-454.test")),
                         p.stdout)
        self.assertIn("via route(tlsver-ipnoname.test)[%s]:2525" % named_ip, p.stdout)
        show = self.queue_show(r, ids["x@direct.test"])
        self.assertRegex(show, r"sent x@direct\.test via=%s\[%s\]:2600 status=2\.0\.0" % (
            re.escape(direct_ip), re.escape(direct_ip)))
        show = self.queue_show(r, ids["x@mxvia.test"])
        self.assertRegex(show, r"sent x@mxvia\.test via=mx1\.relayhost\.test\[%s\]:2525 status=2\.0\.0"
                         % re.escape(self.lab.mx.addr("mx1.relayhost.test")[0]))

        # -- two routes with the same next hop, one message: each recipient's log line
        # (and queue show) names its own route
        qid2 = self.submit(r, ["y@b.c.example.test", "y@exact.example.test"], body("two routes, one hop"))
        for rcpt in ("y@b.c.example.test", "y@exact.example.test"):
            self.wait_msg("sub2.hop.test", rcpt)
        with self.subTest("route label per recipient"):
            self.assertIn("id=%s " % qid2, self.outcome(r, "y@b.c.example.test", "sent"))
            self.assertIn("dest=route(.c.example.test)[sub2.hop.test]:2525 ",
                          self.outcome(r, "y@b.c.example.test", "sent"))
            self.assertIn("dest=route(exact.example.test)[sub2.hop.test]:2525 ",
                          self.outcome(r, "y@exact.example.test", "sent"))

        # -- the per-connection line says why the certificate failed (not the peer's name)
        with self.subTest("connection log detail"):
            conn = self.log_lines(r, r"delivery: dest=route\(tlsver-wrong\.test\)\S* .* helo=")
            self.assertEqual(len(conn), 1, conn)
            self.assertIn(" helo=wrongname.hop.test ", conn[0])
            self.assertRegex(conn[0], r' result=certificate-host-mismatch detail="hostname mismatch"$')

    def test_route_to_a_missing_next_hop(self):
        """A route whose host does not resolve is a configuration error: the mail waits
        (4.4.3) for the operator, it is not bounced as if the recipient domain did not
        exist - bracketed or not (nexthop.h: 'For a route it is a configuration error:
        the caller defers')."""
        r = self.relay(queue={"retry_schedule": "1h"}, routes={
            "ghost-lit.test": "[ghost.hop.test]",              # no MX step, NXDOMAIN
            "ghost-mx.test": "ghost.hop.test",                 # MX of a host that does not exist
            "noaddr-mx.test": "empty.hop.test",               # exists, no MX, no address
        })
        for rc in ("x@ghost-lit.test", "x@ghost-mx.test", "x@noaddr-mx.test"):
            self.submit(r, [rc], body("missing next hop " + rc))
        line = self.outcome(r, "x@ghost-lit.test", "(?:deferred|bounced)")
        self.assertRegex(line, r"status=deferred dsn=4\.4\.3 ")
        self.wait_tried_once(r, r"ghost-lit\.test", 1)
        for rc in ("x@ghost-mx.test", "x@noaddr-mx.test"):
            with self.subTest(rc):
                line = self.outcome(r, rc, "(?:deferred|bounced)")
                self.assertRegex(line, r"status=deferred dsn=4\.4\.3 ")
                self.wait_tried_once(r, re.escape(rc.split("@")[1]), 1)

    # =================================================================== 2. relay B as an MX
    def test_second_relay_as_receiving_mx(self):
        lab = self.lab
        internal = lab.mx.addr("internal.corp-hop.test")
        b = self.relay(server={"hostname": "mx-b.test", "accept_domains": "corp.test",
                               "relay_networks": lab.ip(0, 250) + "/32"},
                       routes={"corp.test": "[internal.corp-hop.test]"})
        outsider = lab.ip(0, 100)
        # an untrusted client may send to the accepted domain ...
        qid = self.submit(b, ["x@corp.test"], body("to corp"), source=outsider)
        m = self.wait_msg("internal.corp-hop.test", "x@corp.test")
        self.assertEqual(m["endpoint_addr"], "%s:%d" % internal)
        line = self.outcome(b, "x@corp.test", "sent")
        self.assertIn("id=%s " % qid, line)
        self.assertIn("dest=route(corp.test)[internal.corp-hop.test]:2525 mx=internal.corp-hop.test ",
                      line)
        hdrs, _ = split_message(m["data"])
        rec = [h for h in hdrs if h.lower().startswith(b"received:")]
        self.assertEqual(len(rec), 1, hdrs)
        self.assertRegex(rec[0].decode(), r"^Received: from client\.test \(\[%s\]\) by mx-b\.test "
                                          % re.escape(outsider))
        # ... but not anywhere else (554 5.7.1), in the same transaction too
        s = lab.smtp(b.ip, b.port, source_address=outsider)
        try:
            s.ehlo()
            self.assertEqual(s.mail(SENDER)[0], 250)
            code, msg = s.rcpt("x@elsewhere.test")
            self.assertEqual(code, 554, msg)
            self.assertTrue(msg.startswith(b"5.7.1 "), msg)
            self.assertEqual(s.rcpt("y@corp.test")[0], 250)
            code, msg = s.data(body("mixed"))
            self.assertEqual(code, 250, msg)
            s.quit()
        finally:
            s.close()
        m = self.wait_msg("internal.corp-hop.test", "y@corp.test")
        self.assertEqual(m["rcpt_tos"], ["y@corp.test"])
        self.assertEqual(self.log_lines(b, r"to=<x@elsewhere\.test> .*status="), [])

        # two hops: relay A (trusted client) -> relay B -> internal server
        a = self.relay(server={"hostname": "relay-a.test"},
                       routes={"*": "[%s]:%d tls=verify verify_name=relay.test" % (b.ip, b.port)})
        qid_a = self.submit(a, ["z@corp.test"], body("two hops"))
        m = self.wait_msg("internal.corp-hop.test", "z@corp.test")
        line = self.outcome(a, "z@corp.test", "sent")
        self.assertIn("id=%s " % qid_a, line)
        self.assertRegex(line, r"dest=route\(\*\)\[%s\]:%d mx=%s .* verified=yes " % (
            re.escape(b.ip), b.port, re.escape(b.ip)))
        self.outcome(b, "z@corp.test", "sent")
        hdrs, text = split_message(m["data"])
        rec = [h.decode() for h in hdrs if h.lower().startswith(b"received:")]
        self.assertEqual(len(rec), 2, hdrs)
        self.assertRegex(rec[0], r"^Received: from relay-a\.test \(\[[0-9.]+\]\) by mx-b\.test "
                                 r"\(strictrelay\) with ESMTPS ")
        self.assertRegex(rec[1], r"^Received: from client\.test \(\[[0-9.]+\]\) by relay-a\.test "
                                 r"\(strictrelay\) with ESMTP ")
        self.assertEqual(text, b"hello\r\n")
        self.assertEqual(m["mail_from"], SENDER)

    # =================================================================== 3. protocol details
    def test_multiple_recipients_one_transaction(self):
        r = self.relay()
        rcpts = ["a@multi.test", "b@multi.test", "c@multi.test"]
        self.submit(r, rcpts, body("three recipients"))
        rcpts2 = ["a@nopipe.test", "b@nopipe.test", "c@nopipe.test"]
        self.submit(r, rcpts2, body("three recipients, no pipelining"))
        for peer, rc in (("multi.hop.test", rcpts), ("nopipe.hop.test", rcpts2)):
            m = self.wait_msg(peer, rc[0])
            self.assertEqual(m["rcpt_tos"], rc)
            self.assertEqual(len(self.lab.mx.messages(peer)), 1)
            v = verbs(self.lab.mx.commands(self.session_of(m)))
            self.assertEqual(v.count("MAIL"), 1, v)
            self.assertEqual(v.count("RCPT"), 3, v)
            self.assertEqual(v.count("DATA"), 1, v)
            i = v.index("MAIL")
            self.assertEqual(v[i:i + 5], ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"], v)
            for x in rc:
                self.outcome(r, x, "sent")
        # SMTP-14: exact command syntax
        sess = self.session_of(self.lab.mx.messages("multi.hop.test")[0])
        cmds = [c for c in self.lab.mx.commands(sess) if c[:4] in ("MAIL", "RCPT")]
        self.assertRegex(cmds[0], r"^MAIL FROM:<%s>( [A-Z0-9]+=\S+)*$" % re.escape(SENDER))
        self.assertEqual(cmds[1:], ["RCPT TO:<%s>" % x for x in rcpts])

    def test_pipelining_only_when_offered(self):
        r = self.relay()
        rc1 = ["a@piperaw.test", "b@piperaw.test", "c@piperaw.test"]
        rc2 = ["a@nopiperaw.test", "b@nopiperaw.test", "c@nopiperaw.test"]
        self.submit(r, rc1, body("pipelined"))
        self.submit(r, rc2, body("not pipelined"))
        for x in rc1 + rc2:
            self.outcome(r, x, "sent")
        pipe, nopipe = self.scripted["pipe"], self.scripted["nopipe"]
        c1 = [c for c in pipe.connections() if c["messages"]]
        c2 = [c for c in nopipe.connections() if c["messages"]]
        self.assertEqual(len(c1), 1, pipe.connections())
        self.assertEqual(len(c2), 1, nopipe.connections())
        mail = "MAIL FROM:<%s>" % SENDER
        # PIPELINING offered: MAIL, every RCPT and DATA came before any reply to them
        self.assertEqual(c1[0]["after_ehlo"],
                         ("%s\r\n%sDATA\r\n" % (mail, "".join("RCPT TO:<%s>\r\n" % x for x in rc1))).encode(),
                         c1[0]["commands"])
        # not offered: the client waited for the MAIL reply before the first RCPT
        self.assertEqual(c2[0]["after_ehlo"], ("%s\r\n" % mail).encode(), c2[0]["commands"])
        for c, rc in ((c1[0], rc1), (c2[0], rc2)):
            cmds = [x for x in c["commands"] if x[:4] in ("MAIL", "RCPT", "DATA")]
            self.assertEqual(cmds, [mail] + ["RCPT TO:<%s>" % x for x in rc] + ["DATA"])
            self.assertEqual(len(c["messages"]), 1)
            self.assertTrue(c["messages"][0].endswith(b"\r\n\r\nhello\r\n"), c["messages"][0])

    def test_354_without_accepted_recipient(self):
        """PIPE-02: a server that answers 354 although every RCPT failed gets a lone '.'
        (never the body), then RSET."""
        r = self.relay()
        self.submit(r, ["nobody@broken354.test"], body("never sent", "secret body\r\n"))
        line = self.outcome(r, "nobody@broken354.test", "bounced")
        self.assertIn(" dsn=5.1.1 ", line)
        srv = self.scripted["broken354"]
        wait_for(lambda: srv.connections() and all(c["end"] for c in srv.connections()), 5,
                 what="session closed")
        conns = srv.connections()
        self.assertEqual(len(conns), 1)
        got = conns[0]["received"]
        self.assertNotIn(b"secret body", got)
        self.assertNotIn(b"Subject:", got)
        self.assertTrue(got.endswith(b"\r\nDATA\r\n.\r\nRSET\r\nQUIT\r\n"), got)
        self.assertEqual(conns[0]["messages"], [b""])

    def test_reply_pairing_in_a_reused_pipelined_session(self):
        """PIPE-02: each reply paired with its command, also after a refused MAIL (the
        RCPT and DATA replies that follow are consumed) and a multi-line RCPT reply."""
        r = self.relay(queue={"retry_schedule": "1h"}, delivery={"max_per_domain": 1})
        q1 = self.submit(r, ["a@pairing.test"], body("pairing 1"))
        q2 = self.submit(r, ["b@pairing.test", "multi@pairing.test", "c@pairing.test"], body("pairing 2"))
        q3 = self.submit(r, ["d@pairing.test"], body("pairing 3"))
        self.wait_tried_once(r, r"pairing\.test", 5)
        self.lab.mx.update("pairing.hop.test", refuse=False)
        self.flush_all(r, 5)
        line = self.outcome(r, "a@pairing.test", "bounced")
        self.assertIn("id=%s " % q1, line)
        self.assertIn(" dsn=5.7.1 ", line)
        self.assertIn("sender refused here", line)
        line = self.outcome(r, "multi@pairing.test", "bounced")
        self.assertIn("id=%s " % q2, line)
        self.assertIn(" dsn=5.1.1 ", line)
        for x, q in (("b@pairing.test", q2), ("c@pairing.test", q2), ("d@pairing.test", q3)):
            self.assertIn("id=%s " % q, self.outcome(r, x, "sent"))
        msgs = self.lab.mx.messages("pairing.hop.test")
        self.assertEqual([m["rcpt_tos"] for m in msgs], [["b@pairing.test", "c@pairing.test"],
                                                         ["d@pairing.test"]])
        sess = self.lab.mx.sessions("pairing.hop.test")
        self.assertEqual(len(sess), 1, self.lab.mx.transcript("pairing.hop.test"))
        v = verbs(self.lab.mx.commands(sess[0]))
        self.assertEqual(v.count("MAIL"), 3, v)
        self.assertEqual(v.count("DATA"), 3, v)          # pipelined, also after the refused MAIL
        self.assertEqual(v.count("RSET"), 3, v)

    def test_large_message_over_tls(self):
        """A 3 MB message crosses many TLS records and partial writes unchanged."""
        r = self.relay()
        lines = []
        for i in range(60000):
            ln = "%06d " % i + "abcdefghijklmnopqrstuvwxyz0123456789"[i % 36:] * 2
            lines.append(("." + ln) if i % 97 == 0 else ln)
        text = ("\r\n".join(lines) + "\r\n").encode()
        data = body("large", text)
        self.assertGreater(len(data), 2_500_000)
        self.submit(r, ["l@big.test"], data)
        m = self.wait_msg("big.hop.test", "l@big.test", timeout=30)
        self.assertIsNotNone(m["tls"])
        self.assertTrue(m["data"].endswith(data), "message changed on the way (%d vs %d bytes)"
                        % (len(m["data"]), len(data)))
        self.assertEqual(bare_newlines(m["raw"]), [])
        self.outcome(r, "l@big.test", "sent")

    def test_size(self):
        r = self.relay()
        small = body("small", "x" * 100 + "\r\n")
        self.submit(r, ["s@sized.test"], small)
        self.submit(r, ["s@unsized.test"], small)
        m = m_small = self.wait_msg("size.hop.test", "s@sized.test")
        self.assertEqual(m["mail_options"], ["SIZE=%d" % m["size"]], m["mail_options"])
        m = self.wait_msg("nosize.hop.test", "s@unsized.test")
        self.assertEqual([o for o in m["mail_options"] if o.upper().startswith("SIZE")], [])
        # bigger than the peer's SIZE 4000: bounced 5.3.4 without MAIL or DATA
        big = body("big", ("y" * 76 + "\r\n") * 60)
        qid = self.submit(r, ["big@sized.test"], big)
        line = self.outcome(r, "big@sized.test", "bounced")
        self.assertIn("id=%s " % qid, line)
        self.assertIn(" dsn=5.3.4 ", line)
        self.assertRegex(line, r"reply=\"?message size \d+ exceeds the limit of size\.hop\.test \(4000\)")
        self.assertEqual(self.msgs_to("size.hop.test", "big@sized.test"), [])
        # the only MAIL/DATA this peer ever saw are those of the small message
        cmds = [c for ss in self.lab.mx.sessions("size.hop.test") for c in self.lab.mx.commands(ss)]
        self.assertEqual([c for c in cmds if c[:4] in ("MAIL", "RCPT", "DATA")],
                         ["MAIL FROM:<%s> SIZE=%d" % (SENDER, m_small["size"]), "RCPT TO:<s@sized.test>",
                          "DATA"], self.lab.mx.transcript("size.hop.test"))
        dsn = self.dsn_for("big@sized.test")
        self.assertIn(b"Status: 5.3.4", dsn["data"])

    def test_8bitmime(self):
        r = self.relay()
        text = "caf\u00e9 cr\u00e8me\r\n"
        # to a peer without 8BITMIME: bounced 5.6.3, nothing sent
        qid = self.submit(r, ["e@no8bit.test"], body("8bit", text), mail_options=["BODY=8BITMIME"])
        line = self.outcome(r, "e@no8bit.test", "bounced")
        self.assertIn("id=%s " % qid, line)
        self.assertIn(" dsn=5.6.3 ", line)
        self.assertIn("8-bit content and no8bit.hop.test does not support 8BITMIME", line)
        self.assertEqual(self.lab.mx.messages("no8bit.hop.test"), [])
        for sess in self.lab.mx.sessions("no8bit.hop.test"):
            self.assertNotIn("MAIL", verbs(self.lab.mx.commands(sess)))
        dsn = self.dsn_for("e@no8bit.test")
        self.assertIn(b"Status: 5.6.3", dsn["data"])
        unfolded = re.sub(rb"\r\n[ \t]+", b" ", dsn["data"])
        self.assertIn(b"8-bit content and no8bit.hop.test does not support 8BITMIME", unfolded)
        # to a peer with it: BODY=8BITMIME passed on, the bytes unchanged
        data = body("8bit ok", text)
        self.submit(r, ["e@yes8bit.test"], data, mail_options=["BODY=8BITMIME"])
        m = self.wait_msg("8bit.hop.test", "e@yes8bit.test")
        self.assertIn("BODY=8BITMIME", m["mail_options"])
        self.assertTrue(m["data"].endswith(data), m["data"])
        # 8-bit content sent without BODY=: still detected and declared (8BIT-02)
        data = body("8bit undeclared", text)
        self.submit(r, ["f@yes8bit.test"], data)
        m = self.wait_msg("8bit.hop.test", "f@yes8bit.test")
        self.assertIn("BODY=8BITMIME", m["mail_options"])
        qid = self.submit(r, ["f@no8bit.test"], body("8bit undeclared", text))
        self.assertIn(" dsn=5.6.3 ", self.outcome(r, "f@no8bit.test", "bounced"))
        # plain ASCII goes to the peer without 8BITMIME, with no BODY parameter
        self.submit(r, ["g@no8bit.test"], body("ascii", "plain\r\n"))
        m = self.wait_msg("no8bit.hop.test", "g@no8bit.test")
        self.assertEqual([o for o in m["mail_options"] if o.upper().startswith("BODY")], [])
        # declared 8BITMIME but 7-bit content: nothing to refuse, sent without BODY=
        self.submit(r, ["h@no8bit.test"], body("declared 8bit, ascii", "plain\r\n"),
                    mail_options=["BODY=8BITMIME"])
        m = self.wait_msg("no8bit.hop.test", "h@no8bit.test")
        self.assertEqual([o for o in m["mail_options"] if o.upper().startswith("BODY")], [])
        self.assertEqual(bytes(b for b in m["raw"] if b >= 0x80), b"")

    def test_smtputf8(self):
        r = self.relay()
        rcpt = "jos\u00e9@noutf8.test"
        qid = self.submit(r, [rcpt], body("utf8"), mail_options=["SMTPUTF8"])
        line = self.outcome(r, rcpt, "bounced")
        self.assertIn("id=%s " % qid, line)
        self.assertIn(" dsn=5.6.7 ", line)
        self.assertIn("needs SMTPUTF8 and noutf8.hop.test does not support it", line)
        self.assertEqual(self.lab.mx.messages("noutf8.hop.test"), [])
        for sess in self.lab.mx.sessions("noutf8.hop.test"):
            self.assertNotIn("MAIL", verbs(self.lab.mx.commands(sess)))
        dsn = self.dsn_for(rcpt)
        self.assertIn(b"Status: 5.6.7", dsn["data"])
        # a peer with SMTPUTF8 gets the parameter and the address as sent
        rcpt = "jos\u00e9@yesutf8.test"
        self.submit(r, [rcpt], body("utf8 ok"), mail_options=["SMTPUTF8"])
        m = self.wait_msg("utf8.hop.test", rcpt)
        self.assertIn("SMTPUTF8", m["mail_options"])
        self.assertEqual(m["rcpt_tos"], [rcpt])

    def test_dot_stuffing_round_trip(self):
        r = self.relay()
        text = b".\r\n..x\r\n.leading\r\nmiddle\r\n.\r\n...\r\n. \r\nlast\r\n.\r\n"
        data = body("dots", text)
        self.submit(r, ["d@dots.test"], data)
        m = self.wait_msg("dots.hop.test", "d@dots.test")
        self.assertTrue(m["data"].endswith(data), m["data"])
        prefix = m["data"][:-len(data)]
        self.assertRegex(prefix, rb"^Received: [^\r\n]*(\r\n\t[^\r\n]*)*\r\n$")
        self.assertTrue(m["raw"].endswith(b"\r\n..\r\n...x\r\n..leading\r\nmiddle\r\n..\r\n....\r\n"
                                          b".. \r\nlast\r\n..\r\n"), m["raw"])
        self.assertEqual(m["raw"], re.sub(rb"(?m)^\.", b"..", m["data"]))
        self.assertEqual(bare_newlines(m["raw"]), [])

    def test_bare_newlines_normalized_on_the_wire(self):
        r = self.relay(server={"bare_newline": "normalize"})
        c = self.lab.raw(r.ip, r.port)
        self.addCleanup(c.close)
        self.assertEqual(c.read_reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<%s>" % SENDER)[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<n@lf.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: bare\r\n\r\nline1\nline2\n.\nafter-dot\r\n..lead\nx\ry\r\nend\r\n.\r\n")
        code, lines = c.read_reply()
        self.assertEqual(code, 250, lines)
        c.cmd("QUIT")
        m = self.wait_msg("lf.hop.test", "n@lf.test")
        self.assertEqual(bare_newlines(m["raw"]), [], m["raw"])
        self.assertTrue(m["data"].endswith(b"\r\n\r\nline1\r\nline2\r\n.\r\nafter-dot\r\n.lead\r\nx\r\n"
                                           b"y\r\nend\r\n"), m["data"])
        # SMUG-02: the stored line "." goes out dot-stuffed
        self.assertIn(b"\r\nline2\r\n..\r\nafter-dot\r\n..lead\r\n", m["raw"])

    def test_hundred_recipients_and_452(self):
        """SMTP-04: 100 recipients in one transaction; 452 4.5.3 for the rest -> a new one."""
        r = self.relay(queue={"retry_schedule": "1s, 1s"})
        rcpts = ["r%03d@many.test" % i for i in range(120)]
        self.submit(r, rcpts, body("120 recipients"))
        msgs = self.lab.mx.wait_messages(2, "many.hop.test", timeout=20)
        self.assertEqual(len(msgs), 2)
        self.assertEqual(msgs[0]["rcpt_tos"], rcpts[:100])
        self.assertEqual(msgs[1]["rcpt_tos"], rcpts[100:])
        deferred = self.log_lines(r, r"to=<r1[01]\d@many\.test> .*status=deferred dsn=4\.5\.3 ")
        self.assertEqual(len(deferred), 20, deferred)
        for x in rcpts:
            self.outcome(r, x, "sent")
        first = self.session_of(msgs[0])
        v = verbs(self.lab.mx.commands(first))
        # the first transaction (the retry may follow on the same, cached, connection)
        v = v[:v.index("DATA") + 1]
        self.assertEqual(v.count("RCPT"), 120, v)
        self.assertEqual(v.count("MAIL"), 1, v)

    def test_capabilities_forgotten_after_starttls(self):
        """TLS-02: only the EHLO reply inside TLS counts."""
        r = self.relay()
        # before TLS: SIZE 100, no PIPELINING, no 8BITMIME; inside: no SIZE, both
        data = body("tls-02 a", "caf\u00e9 " + "z" * 200 + "\r\n")
        self.submit(r, ["t@tls02a.test"], data, mail_options=["BODY=8BITMIME"])
        line = self.outcome(r, "t@tls02a.test", "sent")
        self.assertIn("verified=yes", line)
        c = [x for x in self.scripted["tls02a"].connections() if x["messages"]]
        self.assertEqual(len(c), 1)
        self.assertEqual(c[0]["tls"], "TLSv1.3")
        # TLS-03: STARTTLS listed again inside TLS is never sent twice
        self.assertEqual(c[0]["commands"].count("STARTTLS"), 1, c[0]["commands"])
        mail = "MAIL FROM:<%s> BODY=8BITMIME" % SENDER
        self.assertEqual([x for x in c[0]["commands"] if x.startswith("MAIL")], [mail])
        self.assertEqual(c[0]["after_ehlo"], ("%s\r\nRCPT TO:<t@tls02a.test>\r\nDATA\r\n" % mail).encode())
        self.assertTrue(c[0]["messages"][0].endswith(data))
        # before TLS: SIZE 100000; inside: SIZE 50 -> the message is too big for this peer
        qid = self.submit(r, ["t@tls02b.test"], body("tls-02 b", "short enough for 100000\r\n"))
        line = self.outcome(r, "t@tls02b.test", "bounced")
        self.assertIn("id=%s " % qid, line)
        self.assertIn(" dsn=5.3.4 ", line)
        self.assertIn("exceeds the limit of tls02b.raw.test (50)", line)
        conns = self.scripted["tls02b"].connections()
        self.assertEqual(len(conns), 1)
        self.assertEqual(conns[0]["tls"], "TLSv1.3")
        self.assertEqual([x for x in conns[0]["commands"] if x[:4] in ("MAIL", "RCPT", "DATA")], [])

    def test_tls_handshake_failures(self):
        """TLS-05: a failed handshake under tls=encrypt -> deferred 4.7.5, never plaintext;
        under tls=may -> a new connection without STARTTLS (opportunistic). The same
        whether the server ends the handshake with an alert or just closes."""
        r = self.relay(queue={"retry_schedule": "1h"}, routes={
            "hs-alert-enc.test": "[alert.raw.test] tls=encrypt",
            "hs-alert-may.test": "[alert.raw.test] tls=may",
            "hs-eof-enc.test": "[oldtls.hop.test] tls=encrypt",
            "hs-eof-may.test": "[oldtls.hop.test] tls=may",
        })
        alert = self.scripted["alert"]
        # -- the server sends an alert
        self.submit(r, ["x@hs-alert-enc.test"], body("handshake alert, encrypt"))
        line = self.outcome(r, "x@hs-alert-enc.test", "deferred")
        wait_for(lambda: all(c["end"] for c in alert.connections()), 5, what="sessions closed")
        conns = alert.connections()
        self.assertEqual(len(conns), 1, conns)
        self.assertEqual(conns[0]["commands"][-1], "STARTTLS")
        self.assertIsNone(conns[0]["tls"])
        self.assertNotIn(b"MAIL", conns[0]["received"])
        self.assertIn(" dsn=4.7.5 ", line)
        self.submit(r, ["x@hs-alert-may.test"], body("handshake alert, may"))
        line = self.outcome(r, "x@hs-alert-may.test", "sent")
        self.assertIn(" tls=none ", line)
        conns = alert.connections()[1:]
        self.assertEqual(len(conns), 2, conns)
        self.assertEqual(conns[0]["commands"][-1], "STARTTLS")
        self.assertNotIn("STARTTLS", conns[1]["commands"])
        self.assertEqual(len(conns[1]["messages"]), 1)
        r.wait_log(r"mx=alert\.raw\.test ip=\S+ TLS handshake failed .*retrying without TLS")
        with self.subTest("connection log detail of a failed handshake"):
            conn = self.log_lines(r, r"delivery: dest=route\(hs-alert-enc\.test\)\S* .* helo=")
            self.assertEqual(len(conn), 1, conn)
            self.assertIn(" helo=alert.raw.test ", conn[0])
            self.assertRegex(conn[0], r' result=validation-failure detail="[^"]*alert protocol version"$')
        # -- the server just closes the connection during the handshake
        self.submit(r, ["x@hs-eof-enc.test"], body("handshake eof, encrypt"))
        line = self.outcome(r, "x@hs-eof-enc.test", "deferred")
        sess = self.lab.mx.sessions("oldtls.hop.test")
        self.assertEqual(len(sess), 1, self.lab.mx.transcript("oldtls.hop.test"))
        self.assertIn("STARTTLS", verbs(self.lab.mx.commands(sess[0])))
        self.assertNotIn("MAIL", verbs(self.lab.mx.commands(sess[0])))
        with self.subTest("EOF in the handshake, tls=encrypt: a TLS failure (4.7.5)"):
            self.assertIn(" dsn=4.7.5 ", line)
        with self.subTest("EOF in the handshake, tls=may: retried without TLS"):
            self.submit(r, ["x@hs-eof-may.test"], body("handshake eof, may"))
            m = self.outcome(r, "x@hs-eof-may.test", "(?:sent|deferred)")
            self.assertIn("status=sent", m)
            msg = self.wait_msg("oldtls.hop.test", "x@hs-eof-may.test", timeout=5)
            self.assertIsNone(msg["tls"])

    def test_requiretls_through_routes(self):
        """RTLS-15/16: a smarthost hop still needs verified TLS (against the route host)
        and the REQUIRETLS advertisement; a route's tls=none or tls=may never relaxes it."""
        r = self.relay(queue={"retry_schedule": "1h"}, routes={
            "rtls-ok.test": "[rtls.hop.test] tls=may",
            "rtls-none.test": "[rtls.hop.test] tls=none",
            "rtls-ss.test": "[rtls-ss.hop.test] tls=may",
            "rtls-noadv.test": "[noadv.hop.test] tls=may",
        })
        for rc in ("x@rtls-ok.test", "x@rtls-none.test", "x@rtls-ss.test", "x@rtls-noadv.test"):
            self.submit(r, [rc], body("requiretls " + rc), mail_options=["REQUIRETLS"], tls=True)
        for rc in ("x@rtls-ok.test", "x@rtls-none.test"):
            m = self.wait_msg("rtls.hop.test", rc)
            self.assertIn("REQUIRETLS", m["mail_options"])
            self.assertIsNotNone(m["tls"])
            self.assertEqual(m["tls"]["sni"], "rtls.hop.test")
            line = self.outcome(r, rc, "sent")
            self.assertRegex(line, r" verified=yes .*requiretls=yes ")
        line = self.outcome(r, "x@rtls-ss.test", "bounced")
        self.assertIn(" dsn=5.7.10 ", line)
        line = self.outcome(r, "x@rtls-noadv.test", "bounced")
        self.assertIn(" dsn=5.7.30 ", line)
        for peer in ("rtls-ss.hop.test", "noadv.hop.test"):
            self.assertEqual(self.lab.mx.messages(peer), [])
            sess = self.lab.mx.sessions(peer)
            self.assertGreaterEqual(len(sess), 1)
            for ss in sess:
                self.assertIn("STARTTLS", verbs(self.lab.mx.commands(ss)))
                self.assertNotIn("MAIL", verbs(self.lab.mx.commands(ss)))

    # =================================================================== 4. connection reuse
    def test_connection_reuse_and_per_recipient_replies(self):
        r = self.relay(queue={"retry_schedule": "1h"}, delivery={"max_per_domain": 1})
        plan = []
        for i in range(10):
            rc = ["m%d@reuse.test" % i]
            if i == 4:
                rc = ["ok1@reuse.test", "bad@reuse.test", "later@reuse.test", "ok2@reuse.test"]
            plan.append((rc, self.submit(r, rc, body("reuse %d" % i))))
        total = sum(len(rc) for rc, _ in plan)
        # every recipient was tried once while nothing listened, and deferred
        self.wait_tried_once(r, r"reuse\.test", total)
        self.assertEqual(self.lab.mx.sessions("reuse.hop.test"), [])
        self.lab.mx.update("reuse.hop.test", refuse=False)
        self.flush_all(r, total)
        msgs = self.lab.mx.wait_messages(10, "reuse.hop.test", timeout=20)
        for rc, qid in plan:
            for x in rc:
                if x not in ("bad@reuse.test", "later@reuse.test"):
                    self.assertIn("id=%s " % qid, self.outcome(r, x, "sent"))
        self.assertEqual(len(msgs), 10)
        # the 10th message arrives before the relay's RSET and QUIT: read the
        # transcript once the session has ended
        def ended():
            ss = self.lab.mx.sessions("reuse.hop.test")
            return ss if ss and all(s["events"][-1]["line"].startswith("close") for s in ss) else None
        sess = wait_for(ended, 10, what="the reused session to end")
        self.assertEqual(len(sess), 1, self.lab.mx.transcript("reuse.hop.test"))
        v = verbs(self.lab.mx.commands(sess[0]))
        self.assertEqual(v.count("MAIL"), 10, v)
        self.assertEqual(v.count("DATA"), 10, v)
        mails = [i for i, x in enumerate(v) if x == "MAIL"]
        for i in mails[1:]:
            self.assertEqual(v[i - 1], "RSET", v)
        self.assertEqual(v[-2:], ["RSET", "QUIT"], v)
        # the message with mixed replies: accepted ones delivered, 5xx bounced, 4xx deferred
        m = [x for x in msgs if "ok1@reuse.test" in x["rcpt_tos"]]
        self.assertEqual(len(m), 1)
        self.assertEqual(m[0]["rcpt_tos"], ["ok1@reuse.test", "ok2@reuse.test"])
        self.assertIn(" dsn=5.1.1 ", self.outcome(r, "bad@reuse.test", "bounced"))
        later = wait_for(lambda: self.log_lines(r, r"to=<later@reuse\.test> .*status=deferred "), 5)
        self.assertEqual(len(later), 2, later)          # the refused connection, then the 451
        self.assertIn(" dsn=4.2.0 ", later[-1])
        self.assertIn("mailbox busy", later[-1])
        dsn = self.dsn_for("bad@reuse.test")
        self.assertIn(b"Status: 5.1.1", dsn["data"])
        self.assertNotIn(b"later@reuse.test", dsn["data"].split(b"\r\n\r\n", 2)[1]
                         if dsn["data"].count(b"\r\n\r\n") >= 2 else b"")
        qid4 = plan[4][1]
        want = [("sent", "ok1@reuse.test"), ("bounced", "bad@reuse.test"),
                ("queued", "later@reuse.test"), ("sent", "ok2@reuse.test")]
        try:
            wait_for(lambda: parse_queue_show(self.queue_show(r, qid4))["recipients"] == want, 5)
        except AssertionError:
            pass
        info = parse_queue_show(self.queue_show(r, qid4))
        self.assertEqual(info["recipients"], want, info["text"])

    def test_peer_closes_instead_of_answering_rset(self):
        """A peer that drops the connection when reused (no reply to RSET): every
        message is still delivered exactly once, on new connections."""
        r = self.relay(queue={"retry_schedule": "1h"}, delivery={"max_per_domain": 1})
        rcpts = ["m%d@closer.test" % i for i in range(3)]
        for x in rcpts:
            self.submit(r, [x], body("closer " + x))
        self.wait_tried_once(r, r"closer\.test", 3)
        self.lab.mx.update("closer.hop.test", refuse=False)
        self.flush_all(r, 3)
        for x in rcpts:
            self.outcome(r, x, "sent")
        msgs = self.lab.mx.wait_messages(3, "closer.hop.test")
        self.assertEqual(sorted(m["rcpt_tos"][0] for m in msgs), rcpts)
        self.assertEqual(len(msgs), 3)
        self.assertEqual(len({m["session"] for m in msgs}), 3)
        self.assertEqual(len(self.log_lines(r, r"to=<[^>]*@closer\.test> .*status=deferred ")), 3)
        p = r.cli("queue", "list")
        self.assertIn("Queue is empty.", p.stdout)

    # =================================================================== 5. max_per_domain
    def test_max_per_domain(self):
        r = self.relay(queue={"retry_schedule": "1h"}, delivery={"max_per_domain": 2})
        rcpts = ["m%d@slow.test" % i for i in range(10)]
        for x in rcpts:
            self.submit(r, [x], body("slow " + x))
        self.wait_tried_once(r, r"slow\.test", 10)
        self.lab.mx.update("slow.hop.test", refuse=False)
        self.flush_all(r, 10)
        self.lab.mx.wait_messages(10, "slow.hop.test", timeout=30)
        for x in rcpts:
            self.outcome(r, x, "sent")

        def closed():
            ss = self.lab.mx.sessions("slow.hop.test")
            return ss if all(s["events"][-1]["line"].startswith("close") for s in ss) else None
        sess = wait_for(closed, 10, what="sessions closed")
        spans = [(s["events"][0]["t"], s["events"][-1]["t"]) for s in sess]
        points = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans],
                        key=lambda x: (x[0], x[1]))
        cur = peak = 0
        for _, dlt in points:
            cur += dlt
            peak = max(peak, cur)
        self.assertEqual(peak, 2, "concurrent sessions at the peer: %s" % spans)
        self.assertLess(len(sess), 10, "no connection reuse: %d sessions" % len(sess))

    def test_max_connections_total(self):
        """[delivery] max_connections bounds the sessions over all destinations."""
        r = self.relay(queue={"retry_schedule": "1h"},
                       delivery={"max_per_domain": 5, "max_connections": 1})
        rcpts = ["m%d@slowa.test" % i for i in range(3)] + ["m%d@slowb.test" % i for i in range(3)]
        for x in rcpts:
            self.submit(r, [x], body("total " + x))
        self.wait_tried_once(r, r"slow[ab]\.test", 6)
        self.lab.mx.update("slowa.hop.test", refuse=False)
        self.lab.mx.update("slowb.hop.test", refuse=False)
        self.flush_all(r, 6)
        for x in rcpts:
            self.outcome(r, x, "sent", timeout=20)

        def closed():
            ss = self.lab.mx.sessions("slowa.hop.test") + self.lab.mx.sessions("slowb.hop.test")
            return ss if ss and all(s["events"][-1]["line"].startswith("close") for s in ss) else None
        sess = wait_for(closed, 10, what="sessions closed")
        spans = sorted((s["events"][0]["t"], s["events"][-1]["t"]) for s in sess)
        self.assertEqual(len(spans), 2, spans)                 # one per destination, reused
        self.assertLessEqual(spans[0][1], spans[1][0], "sessions overlapped: %s" % spans)

    def test_unreachable_mx_with_several_jobs_due(self):
        """Several jobs due at once for a destination whose MX refuses connections, with
        the default max_per_domain (10): each recipient is deferred after one round of
        attempts, not retried in a loop."""
        r = self.relay(queue={"retry_schedule": "1h"})
        rcpts = ["m%d@down.test" % i for i in range(10)]
        for x in rcpts:
            self.submit(r, [x], body("down " + x))
        self.wait_tried_once(r, r"down\.test", 10)
        mark = r.log_mark()
        self.flush_all(r, 10)

        def since(rx):
            with open(r.log_path, "rb") as f:
                f.seek(mark)
                return len(re.findall(rx.encode(), f.read(), re.M))
        try:
            wait_for(lambda: since(r"to=<[^>]*@down\.test> .*status=deferred ") >= 10, 5, interval=0.2)
        except AssertionError:
            pass
        deferred = since(r"to=<[^>]*@down\.test> .*status=deferred ")
        connects = since(r"dest=down\.test mx=down\.hop\.test ip=\S+ not used: connect")
        self.assertLessEqual(connects, 20, "%d connection attempts to a refusing MX within ~5 s "
                                           "after one flush of 10 messages" % connects)
        self.assertEqual(deferred, 10)
        info = parse_queue_list(r.cli("queue", "list").stdout, self)
        self.assertEqual(len(info), 10)

    # =================================================================== 6. HELO fallback
    def test_helo_fallback(self):
        r = self.relay()
        self.submit(r, ["h@oldie.test"], body("helo"))
        m = self.wait_msg("oldie.hop.test", "h@oldie.test")
        self.assertFalse(m["esmtp"])
        self.assertIsNone(m["tls"])
        self.assertEqual(m["helo"], "relay.test")
        self.assertEqual(m["mail_options"], [])
        v = verbs(self.lab.mx.commands(self.session_of(m)))
        self.assertEqual(v[:3], ["EHLO", "HELO", "MAIL"], v)
        self.assertNotIn("STARTTLS", v)
        line = self.outcome(r, "h@oldie.test", "sent")
        self.assertIn(" tls=none ", line)
        # HELO means no extensions: 8-bit content cannot go there (8BIT-02)
        self.submit(r, ["h8@oldie.test"], body("helo 8bit", "na\u00efve\r\n"), mail_options=["BODY=8BITMIME"])
        self.assertIn(" dsn=5.6.3 ", self.outcome(r, "h8@oldie.test", "bounced"))
        self.assertEqual(self.msgs_to("oldie.hop.test", "h8@oldie.test"), [])
        # with require_tls = yes: no plaintext HELO delivery
        r2 = self.relay(delivery={"require_tls": True}, queue={"retry_schedule": "1h"})
        self.submit(r2, ["h@oldie2.test"], body("helo, tls required"))
        line = self.outcome(r2, "h@oldie2.test", "deferred")
        self.assertIn(" dsn=4.7.10 ", line)
        self.assertEqual(self.lab.mx.messages("oldie2.hop.test"), [])
        for sess in self.lab.mx.sessions("oldie2.hop.test"):
            self.assertNotIn("MAIL", verbs(self.lab.mx.commands(sess)))

    # =================================================================== 7. STARTTLS injection
    def test_starttls_response_injection(self):
        r = self.relay(queue={"retry_schedule": "1h"})
        qid = self.submit(r, ["i@inject.test"], body("injection"))
        line = self.outcome(r, "i@inject.test", "deferred")
        self.assertIn("id=%s " % qid, line)
        self.assertIn(" dsn=4.7.0 ", line)
        r.wait_log(r"mx=inject\.raw\.test ip=%s not used: .*unexpected bytes after its STARTTLS reply"
                   % re.escape(self.lab.ip(4, 3)))
        inj = self.scripted["inject"]
        wait_for(lambda: all(c["end"] for c in inj.connections()), 5, what="injection sessions closed")
        conns = inj.connections()
        self.assertGreaterEqual(len(conns), 1)
        for c in conns:
            self.assertEqual(c["messages"], [])
            self.assertFalse(c["tls_attempt"], "the client started TLS after the injected bytes")
            after = c["after_starttls"]
            self.assertIsNotNone(after, c["commands"])
            # nothing but a polite QUIT in plaintext after the reply, nothing pipelined
            # behind STARTTLS (TLS-04)
            self.assertIn(after, (b"", b"QUIT\r\n"), c["commands"])
            self.assertTrue(c["received"].endswith(b"\r\nSTARTTLS\r\n" + after), c["received"])
            self.assertNotIn(b"MAIL", c["received"])
        # with a second MX the message goes there (over TLS), never through the injector
        self.submit(r, ["i@inject2.test"], body("injection, backup MX"))
        m = self.wait_msg("backup.hop.test", "i@inject2.test")
        self.assertIsNotNone(m["tls"])
        line = self.outcome(r, "i@inject2.test", "sent")
        self.assertIn("mx=backup.hop.test ", line)
        r.wait_log(r"mx=inject2\.raw\.test ip=%s not used: .*unexpected bytes after its STARTTLS reply"
                   % re.escape(self.lab.ip(4, 4)))
        for c in self.scripted["inject2"].connections():
            self.assertEqual(c["messages"], [])
            self.assertNotIn(b"MAIL", c["received"])


if __name__ == "__main__":
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2)
    sys.stderr.write("routes_protocol: %.1f s\n" % (time.monotonic() - t0))
    sys.exit(0 if prog.result.wasSuccessful() else 1)
