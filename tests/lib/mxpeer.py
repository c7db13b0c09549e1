#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Receiving MX hosts for the loopback lab: many SMTP endpoints in one process.

Built on aiosmtpd 1.4.3 (Debian 12's python3-aiosmtpd), with MAIL/RCPT/DATA/
EHLO/HELO/STARTTLS handled here so that the endpoint advertises exactly what
its config says, accepts REQUIRETLS only after STARTTLS when it advertises it,
records MAIL/RCPT parameters as sent, and captures the message bytes.

Usage: mxpeer.py CONFIG.json [READY_FD]
CONFIG: {"spool": DIR, "transcript": FILE, "endpoints": [ENDPOINT, ...]}
ENDPOINT keys (see tests/lib/README.md): name, ip, port, cert, key, starttls,
requiretls, pipelining, smtputf8, eightbitmime, dsn, size, ehlo_extra,
tls_min, tls_max, reply, close, delay, refuse.

Every accepted message becomes SPOOL/<id>.json (written atomically); every
session event is one JSON line in the transcript file. SIGHUP re-reads the
config (endpoints are added, removed and updated; behaviour counters reset)
and writes "RELOADED" to READY_FD; startup writes "READY" or "ERROR reason".
"""

import asyncio
import base64
import collections
import itertools
import json
import logging
import os
import re
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP

logging.getLogger("mail.log").setLevel(logging.ERROR)

STAGES = ("greeting", "ehlo", "helo", "starttls", "tls", "mail", "rcpt", "data",
          "eom", "rset", "noop", "quit", "vrfy", "help")


def log(msg):
    sys.stderr.write("%s mxpeer: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def now_iso():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


class App:
    def __init__(self, path, ready_fd):
        self.path = path
        self.ready_fd = ready_fd
        self.endpoints = {}     # (ip, port) -> endpoint dict
        self.servers = {}       # (ip, port) -> asyncio server
        self.contexts = {}      # (ip, port) -> ssl.SSLContext or None
        self.counters = {}
        self.sid = itertools.count(1)
        self.mid = itertools.count(1)
        self.cfg = None
        self.transcript = None

    def tell(self, msg):
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, (msg + "\n").encode())
            except OSError:
                pass

    def load(self):
        with open(self.path) as f:
            cfg = json.load(f)
        self.spool = cfg["spool"]
        os.makedirs(self.spool, exist_ok=True)
        if self.transcript is None:
            self.transcript = open(cfg["transcript"], "a", buffering=1)
        eps = {}
        for ep in cfg["endpoints"]:
            ep = dict(ep)
            ep.setdefault("port", 25)
            for k, v in (("starttls", True), ("requiretls", False), ("pipelining", True),
                         ("smtputf8", True), ("eightbitmime", True), ("dsn", False),
                         ("size", None), ("ehlo_extra", []), ("reply", {}), ("close", {}),
                         ("delay", {}), ("refuse", False)):
                ep.setdefault(k, v)
            for k in ("reply", "close", "delay"):
                unknown = set(ep[k]) - set(STAGES)
                if unknown:
                    raise ValueError("endpoint %s: unknown %s stage(s) %s (known: %s)"
                                     % (ep["name"], k, sorted(unknown), ", ".join(STAGES)))
            eps[(ep["ip"], int(ep["port"]))] = ep
        return eps

    def make_context(self, ep):
        if not ep["starttls"]:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ep["cert"], ep["key"])
        versions = {"1": ssl.TLSVersion.TLSv1, "1.0": ssl.TLSVersion.TLSv1,
                    "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
                    "1.3": ssl.TLSVersion.TLSv1_3}
        if ep.get("tls_min"):
            ctx.minimum_version = versions[str(ep["tls_min"])]
        if ep.get("tls_max"):
            ctx.maximum_version = versions[str(ep["tls_max"])]

        def sni_cb(sslobj, servername, _ctx):
            sslobj.lab_sni = servername
            return None
        ctx.sni_callback = sni_cb
        return ctx

    async def apply(self, first):
        eps = self.load()
        loop = asyncio.get_running_loop()
        # stop endpoints that went away or now refuse
        for key in list(self.servers):
            if key not in eps or eps[key]["refuse"]:
                self.servers.pop(key).close()
                log("endpoint %s:%d closed" % key)
        contexts = {}
        for key, ep in eps.items():
            if not ep["refuse"]:
                contexts[key] = self.make_context(ep)
        self.endpoints = eps
        self.contexts = contexts
        self.counters = {}
        for key, ep in eps.items():
            if ep["refuse"] or key in self.servers:
                continue
            ip, port = key
            try:
                srv = await loop.create_server(lambda key=key: PeerSMTP(self, key), ip, port,
                                               reuse_address=True)
            except OSError as e:
                raise RuntimeError("endpoint %s cannot listen on %s:%d: %s"
                                   % (ep["name"], ip, port, e))
            self.servers[key] = srv
            log("endpoint %s listening on %s:%d%s" % (ep["name"], ip, port,
                                                      " (STARTTLS)" if ep["starttls"] else ""))

    def event(self, sid, ep, direction, line):
        rec = {"t": round(time.time(), 6), "sid": sid, "ep": ep, "dir": direction, "line": line}
        self.transcript.write(json.dumps(rec) + "\n")

    def pick(self, kind, ep, stage, key=None):
        """The behaviour of `kind` (reply/close/delay) for this occurrence of stage."""
        spec = ep[kind].get(stage)
        if spec is None:
            return None
        if stage == "rcpt" and isinstance(spec, dict):
            k = (key or "").lower()
            lowered = {a.lower(): v for a, v in spec.items()}
            if k in lowered:
                spec = lowered[k]
            elif "*" in lowered:
                spec = lowered["*"]
            else:
                return None
            ckey = (ep["name"], kind, stage, k)
        else:
            ckey = (ep["name"], kind, stage)
        if isinstance(spec, list):
            n = self.counters.get(ckey, 0)
            self.counters[ckey] = n + 1
            if not spec:
                return None
            return spec[min(n, len(spec) - 1)]
        return spec

    def store(self, rec):
        mid = "%d-%04d" % (time.time_ns(), next(self.mid))
        rec["id"] = mid
        tmp = os.path.join(self.spool, ".%s.tmp" % mid)
        with open(tmp, "w") as f:
            json.dump(rec, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.spool, mid + ".json"))
        return mid


MAIL_RE = re.compile(r"^FROM:\s*(<[^<>]*>|[^\s<>]+)(.*)$", re.I | re.S)
RCPT_RE = re.compile(r"^TO:\s*(<[^<>]*>|[^\s<>]+)(.*)$", re.I | re.S)
PARAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(=[\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+)?$")


def strip_brackets(a):
    return a[1:-1] if a.startswith("<") and a.endswith(">") else a


class PeerSMTP(SMTP):
    # No aiosmtpd line limits that would hide what the relay sent: DATA lines of
    # any length are captured (and their maximum length recorded).
    line_length_limit = 1 << 20

    def __init__(self, app, key):
        self.app = app
        self.ep = app.endpoints[key]
        self.sid = "%s#%d" % (self.ep["name"], next(app.sid))
        ctx = app.contexts.get(key)
        super().__init__(handler=object(), hostname=self.ep["name"], ident="ESMTP lab-mx",
                         tls_context=ctx, data_size_limit=None,
                         enable_SMTPUTF8=True, decode_data=False,
                         auth_require_tls=True, timeout=300)
        # aiosmtpd's command_size_limits is a class-level dict that its EHLO
        # grows; use our own fixed limits.
        self.command_size_limits = collections.defaultdict(lambda: 4096)
        self.command_size_limit = 4096
        self._greeted = False
        self._in_data = False
        self._mail_given = False
        self._mail_options = []
        self._rcpt_options = []
        self._peer = None
        self._tls_info = None
        self._smtp_methods.pop("AUTH", None)
        self._smtp_methods.pop("EXPN", None)
        for cmd, meth in list(self._smtp_methods.items()):
            self._smtp_methods[cmd] = self._wrap(cmd, meth)

    # ---- transcript -------------------------------------------------------
    def ev(self, direction, line):
        self.app.event(self.sid, self.ep["name"], direction, line)

    def _client_connected_cb(self, reader, writer):
        super()._client_connected_cb(reader, writer)
        raw_readuntil = reader.readuntil
        self._raw_readuntil = raw_readuntil

        async def logged_readuntil(separator=b"\n"):
            line = await raw_readuntil(separator)
            if not self._in_data:
                self.ev("C", line.rstrip(b"\r\n").decode("utf-8", "backslashreplace"))
            return line
        reader.readuntil = logged_readuntil

    def connection_made(self, transport):
        tls_upgrade = self._original_transport is not None and self.transport is not None
        super().connection_made(transport)
        if tls_upgrade:
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is not None:
                self._tls_info = {"version": sslobj.version(), "cipher": sslobj.cipher()[0],
                                  "sni": getattr(sslobj, "lab_sni", None)}
                self.ev("*", "tls %s %s sni=%s" % (self._tls_info["version"],
                                                    self._tls_info["cipher"],
                                                    self._tls_info["sni"]))
            self._reset_envelope()
        else:
            self._peer = transport.get_extra_info("peername")
            sock = transport.get_extra_info("sockname")
            self.ev("*", "connect from %s:%d to %s:%d" % (self._peer[0], self._peer[1],
                                                           sock[0], sock[1]))

    def connection_lost(self, error):
        self.ev("*", "close" + (" (%r)" % error if error is not None and str(error) else ""))
        super().connection_lost(error)

    async def push(self, status):
        if isinstance(status, bytes):
            status = status.decode("utf-8", "backslashreplace")
        if status == "220 Ready to start TLS":
            status = "220 2.0.0 Ready to start TLS"
        if not self._greeted and status.startswith("220 "):
            self._greeted = True
            status = await self._greeting(status)
            if status is None:
                return
        for line in status.split("\n"):
            line = line.rstrip("\r")
            self.ev("S", line)
            self._writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        await self._writer.drain()
        if getattr(self, "_close_after_push", False):
            self.ev("*", "closing after 421")
            self.transport.close()

    async def _greeting(self, default):
        ep = self.ep
        delay = self.app.pick("delay", ep, "greeting")
        if delay:
            await asyncio.sleep(float(delay))
        if self.app.pick("close", ep, "greeting"):
            self.ev("*", "closing at greeting")
            self.transport.close()
            return None
        reply = self.app.pick("reply", ep, "greeting")
        if reply:
            self._bad_greeting = not reply.startswith("2")
            if reply.startswith("421"):
                self._close_after_push = True
            return reply
        return default

    def _reset_envelope(self):
        self._mail_given = False
        self._mail_options = []
        self._rcpt_options = []

    def _set_rset_state(self):
        super()._set_rset_state()
        self._reset_envelope()

    # ---- per-stage behaviours ----------------------------------------------
    async def stage(self, stage, key=None):
        """Applies delay/close/reply for a stage. True if the stage was handled."""
        ep = self.ep
        delay = self.app.pick("delay", ep, stage, key)
        if delay:
            await asyncio.sleep(float(delay))
        if self.app.pick("close", ep, stage, key):
            self.ev("*", "closing at %s" % stage)
            self.transport.close()
            return True
        reply = self.app.pick("reply", ep, stage, key)
        if reply:
            if reply.startswith("421"):
                self._close_after_push = True
            await self.push(reply)
            return True
        return False

    def _wrap(self, cmd, meth):
        stage = cmd.lower()

        async def wrapped(arg):
            if getattr(self, "_bad_greeting", False) and cmd != "QUIT":
                return await self.push("503 5.5.1 Error: bad sequence of commands (greeting was refused)")
            if stage in STAGES:
                key = None
                if stage == "rcpt" and arg:
                    m = RCPT_RE.match(arg)
                    key = strip_brackets(m.group(1)) if m else None
                if await self.stage(stage, key):
                    return
            return await meth(arg)
        return wrapped

    # ---- commands ------------------------------------------------------------
    def _tls_active(self):
        return self._tls_protocol is not None and self.session.ssl is not None

    async def smtp_EHLO(self, hostname):
        if not hostname:
            return await self.push("501 5.5.4 Syntax: EHLO hostname")
        self._set_rset_state()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        ep = self.ep
        lines = [ep["name"]]
        if ep["size"]:
            lines.append("SIZE %d" % int(ep["size"]))
        if ep["pipelining"]:
            lines.append("PIPELINING")
        if ep["eightbitmime"]:
            lines.append("8BITMIME")
        if ep["smtputf8"]:
            lines.append("SMTPUTF8")
        if self.tls_context is not None and not self._tls_active():
            lines.append("STARTTLS")
        if ep["requiretls"] and self._tls_active():
            lines.append("REQUIRETLS")
        if ep["dsn"]:
            lines.append("DSN")
        lines.append("ENHANCEDSTATUSCODES")
        lines.extend(ep["ehlo_extra"])
        out = ["250-" + x for x in lines[:-1]] + ["250 " + lines[-1]]
        await self.push("\n".join(out))

    async def smtp_HELO(self, hostname):
        if not hostname:
            return await self.push("501 5.5.4 Syntax: HELO hostname")
        self._set_rset_state()
        self.session.extended_smtp = False
        self.session.host_name = hostname
        await self.push("250 %s" % self.ep["name"])

    async def smtp_STARTTLS(self, arg):
        if self.tls_context is None or self._tls_active():
            return await self.push("502 5.5.1 Error: command not recognized")
        if self.app.pick("close", self.ep, "tls"):
            await self.push("220 2.0.0 Ready to start TLS")
            self.ev("*", "closing at tls (before the handshake)")
            self.transport.close()
            return
        try:
            await super().smtp_STARTTLS(arg)
        except Exception as e:
            cause = e.__cause__ or e
            self.ev("*", "tls handshake failed: %r" % (cause,))
            raise

    def _params(self, text):
        params = []
        for p in text.split():
            if not PARAM_RE.match(p):
                return None
            params.append(p)
        return params

    async def smtp_MAIL(self, arg):
        if not self.session.host_name:
            return await self.push("503 5.5.1 Error: send HELO/EHLO first")
        if self._mail_given:
            return await self.push("503 5.5.1 Error: nested MAIL command")
        m = MAIL_RE.match(arg or "")
        if not m:
            return await self.push("501 5.5.4 Syntax: MAIL FROM:<address>")
        addr = strip_brackets(m.group(1))
        params = self._params(m.group(2))
        if params is None or (params and not self.session.extended_smtp):
            return await self.push("501 5.5.4 Syntax error in parameters")
        ep = self.ep
        for p in params:
            k, _, v = p.partition("=")
            k = k.upper()
            if k == "SIZE":
                if not v.isdigit():
                    return await self.push("501 5.5.4 Bad SIZE parameter")
                if ep["size"] and int(v) > int(ep["size"]):
                    return await self.push("552 5.3.4 Message size exceeds fixed limit")
            elif k == "BODY":
                if v.upper() == "7BIT" or (v.upper() == "8BITMIME" and ep["eightbitmime"]):
                    continue
                return await self.push("555 5.5.4 Unsupported option: BODY=%s" % v)
            elif k == "SMTPUTF8" and ep["smtputf8"] and not v:
                continue
            elif k == "REQUIRETLS" and ep["requiretls"] and self._tls_active() and not v:
                continue
            elif k in ("RET", "ENVID", "AUTH"):
                continue
            else:
                return await self.push("555 5.5.4 Unsupported option: %s" % p.split("=")[0])
        self._mail_given = True
        self.envelope.mail_from = addr
        self._mail_options = params
        await self.push("250 2.1.0 Ok")

    async def smtp_RCPT(self, arg):
        if not self._mail_given:
            return await self.push("503 5.5.1 Error: need MAIL command")
        m = RCPT_RE.match(arg or "")
        if not m:
            return await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
        addr = strip_brackets(m.group(1))
        params = self._params(m.group(2))
        if params is None or (params and not self.session.extended_smtp):
            return await self.push("501 5.5.4 Syntax error in parameters")
        for p in params:
            k = p.partition("=")[0].upper()
            if k not in ("NOTIFY", "ORCPT"):
                return await self.push("555 5.5.4 Unsupported option: %s" % p.split("=")[0])
        self.envelope.rcpt_tos.append(addr)
        self._rcpt_options.append(params)
        await self.push("250 2.1.5 Ok")

    async def smtp_RSET(self, arg):
        self._set_rset_state()
        await self.push("250 2.0.0 Ok")

    async def smtp_DATA(self, arg):
        if not self.session.host_name:
            return await self.push("503 5.5.1 Error: send HELO/EHLO first")
        if not self._mail_given:
            return await self.push("503 5.5.1 Error: need MAIL command")
        if not self.envelope.rcpt_tos:
            return await self.push("554 5.5.1 Error: no valid recipients")
        if arg:
            return await self.push("501 5.5.4 Syntax: DATA")
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = True
        raw = bytearray()
        data = bytearray()
        max_line = 0
        try:
            while True:
                line = await self._raw_readuntil(b"\r\n")
                if line == b".\r\n":
                    break
                raw += line
                max_line = max(max_line, len(line) - 2)
                data += line[1:] if line.startswith(b".") else line
        except asyncio.IncompleteReadError as e:
            self.ev("*", "connection closed during DATA after %d bytes" % (len(raw) + len(e.partial)))
            raise asyncio.CancelledError()
        finally:
            self._in_data = False
        self.ev("C", "<%d bytes of DATA, longest line %d>" % (len(raw), max_line))
        ep = self.ep
        if await self.stage("eom"):
            self._set_rset_state()
            return
        if ep["size"] and len(data) > int(ep["size"]):
            self._set_rset_state()
            return await self.push("552 5.3.4 Message size exceeds fixed limit")
        peer = self._peer or ("", 0)
        rec = {
            "endpoint": ep["name"],
            "endpoint_addr": "%s:%d" % (ep["ip"], int(ep["port"])),
            "session": self.sid,
            "peer_ip": peer[0],
            "peer_port": peer[1],
            "helo": self.session.host_name,
            "esmtp": bool(self.session.extended_smtp),
            "tls": self._tls_info,
            "mail_from": self.envelope.mail_from,
            "mail_options": self._mail_options,
            "rcpt_tos": list(self.envelope.rcpt_tos),
            "rcpt_options": self._rcpt_options,
            "data": base64.b64encode(bytes(data)).decode(),
            "raw": base64.b64encode(bytes(raw)).decode(),
            "size": len(data),
            "max_line_length": max_line,
            "received_at": now_iso(),
            "received_ts": time.time(),
        }
        mid = self.app.store(rec)
        self._set_rset_state()
        await self.push("250 2.0.0 Ok: queued as %s" % mid)


async def main():
    path = sys.argv[1]
    ready_fd = int(sys.argv[2]) if len(sys.argv) > 2 else None
    app = App(path, ready_fd)
    loop = asyncio.get_running_loop()
    try:
        await app.apply(first=True)
    except Exception as e:
        log("startup failed: %s" % e)
        app.tell("ERROR %s" % e)
        sys.exit(1)
    stop = loop.create_future()

    def reload():
        async def run():
            try:
                await app.apply(first=False)
                log("reloaded %s" % path)
                app.tell("RELOADED")
            except Exception as e:
                log("reload failed: %s" % e)
                app.tell("ERROR reload: %s" % e)
        loop.create_task(run())

    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGINT, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGHUP, reload)
    app.tell("READY")
    await stop
    for srv in app.servers.values():
        srv.close()
    log("exiting")


if __name__ == "__main__":
    asyncio.run(main())
