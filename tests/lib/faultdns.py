#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A tiny DNS server for the answers dnsmasq cannot give (tests/lib/lab.py).

dnsmasq forwards the names listed in the config to this server
(`server=/NAME/127.N.0.1#5354`). For each configured name (and its
subdomains) it answers with a fault or with the records it was given:

  servfail   rcode SERVFAIL
  refused    rcode REFUSED
  nxdomain   rcode NXDOMAIN
  timeout    no answer at all
  truncate   over UDP: TC=1 and an empty answer; over TCP: the full answer
  delay      the full answer after `delay` seconds
  answer     the full answer (records dnsmasq cannot serve, e.g. TLSA)

Usage: faultdns.py CONFIG.json [READY_FD]
CONFIG: {"listen": ["127.N.0.1", 5354], "ttl": 1,
         "zones": {"servfail.test": {"kind": "servfail"}, ...},
         "records": [{"name": "x.test", "type": "A", "value": "127.0.0.1"}, ...]}
SIGHUP re-reads CONFIG (the listen address stays) and writes "RELOADED" to
READY_FD; startup writes "READY" (or "ERROR reason") there.
"""

import asyncio
import json
import os
import signal
import struct
import sys
import time

from dnslib import (AAAA, CNAME, MX, QTYPE, RCODE, RD, RR, TLSA, TXT, A,
                    DNSLabel, DNSRecord)


def log(msg):
    sys.stderr.write("%s faultdns: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class Zones:
    def __init__(self, path):
        with open(path) as f:
            cfg = json.load(f)
        self.listen = tuple(cfg["listen"])
        self.ttl = int(cfg.get("ttl", 1))
        self.zones = {k.lower().rstrip("."): v for k, v in cfg.get("zones", {}).items()}
        self.records = {}
        for r in cfg.get("records", []):
            key = (r["name"].lower().rstrip("."), r["type"].upper())
            self.records.setdefault(key, []).append(r)

    def zone_for(self, qname):
        name = qname.lower().rstrip(".")
        while True:
            if name in self.zones:
                return self.zones[name]
            if "." not in name:
                return None
            name = name.split(".", 1)[1]

    def make_rr(self, name, r):
        t = r["type"].upper()
        v = r.get("value")
        if t == "A":
            rdata = A(v)
        elif t == "AAAA":
            rdata = AAAA(v)
        elif t == "MX":
            rdata = MX(r.get("host", ".") or ".", int(r.get("pref", 0)))
        elif t == "TXT":
            strings = v if isinstance(v, list) else [v[i:i + 255] for i in range(0, len(v), 255)] or [""]
            rdata = TXT([s.encode() if isinstance(s, str) else s for s in strings])
        elif t == "CNAME":
            rdata = CNAME(v)
        elif t == "TLSA":
            rdata = TLSA(int(r["usage"]), int(r["selector"]), int(r["mtype"]), bytes.fromhex(r["data"]))
        else:
            rdata = RD(bytes.fromhex(r["hex"]))
            return RR(name, getattr(QTYPE, t) if hasattr(QTYPE, t) else int(r["typenum"]),
                      rdata=rdata, ttl=self.ttl)
        return RR(name, getattr(QTYPE, t), rdata=rdata, ttl=self.ttl)

    def answer(self, request):
        reply = request.reply()
        reply.header.aa = 1
        reply.header.ad = 0
        q = request.q
        qname = str(q.qname).rstrip(".")
        qtype = QTYPE.get(q.qtype)
        seen = set()
        name = qname
        found_name = False
        for _ in range(8):  # follow a CNAME chain a few steps
            key = name.lower()
            if key in seen:
                break
            seen.add(key)
            recs = self.records.get((key, qtype), [])
            for r in recs:
                reply.add_answer(self.make_rr(DNSLabel(name + "."), r))
            if recs:
                found_name = True
                break
            cn = self.records.get((key, "CNAME"), [])
            if cn and qtype != "CNAME":
                reply.add_answer(self.make_rr(DNSLabel(name + "."), cn[0]))
                found_name = True
                name = cn[0]["value"].rstrip(".")
                continue
            if any(k[0] == key for k in self.records):
                found_name = True
            break
        if not found_name:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class Server:
    def __init__(self, path, ready_fd):
        self.path = path
        self.ready_fd = ready_fd
        self.zones = Zones(path)

    def tell(self, msg):
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, (msg + "\n").encode())
            except OSError:
                pass

    def reload(self):
        try:
            self.zones = Zones(self.path)
            log("reloaded %s" % self.path)
            self.tell("RELOADED")
        except Exception as e:  # keep serving the old data
            log("reload failed: %r" % e)
            self.tell("ERROR reload: %r" % e)

    def handle(self, data, tcp):
        """Returns (reply bytes or None, delay seconds)."""
        try:
            request = DNSRecord.parse(data)
        except Exception as e:
            log("unparsable query: %r" % e)
            return None, 0
        qname = str(request.q.qname)
        qtype = QTYPE.get(request.q.qtype)
        zone = self.zones.zone_for(qname) or {"kind": "answer"}
        kind = zone.get("kind", "answer")
        log("query %s %s %s -> %s" % ("tcp" if tcp else "udp", qname, qtype, kind))
        reply = request.reply()
        reply.header.ad = 0
        if kind == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        elif kind == "refused":
            reply.header.rcode = RCODE.REFUSED
        elif kind == "nxdomain":
            reply.header.rcode = RCODE.NXDOMAIN
            reply.header.aa = 1
        elif kind == "timeout":
            return None, 0
        elif kind == "truncate" and not tcp:
            reply.header.tc = 1
        else:
            reply = self.zones.answer(request)
        delay = float(zone.get("delay", 0)) if kind == "delay" else 0
        return reply.pack(), delay


class UDPProto(asyncio.DatagramProtocol):
    def __init__(self, server):
        self.server = server

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        out, delay = self.server.handle(data, tcp=False)
        if out is None:
            return
        if delay:
            asyncio.get_running_loop().call_later(delay, self.transport.sendto, out, addr)
        else:
            self.transport.sendto(out, addr)


async def tcp_client(server, reader, writer):
    try:
        while True:
            hdr = await reader.readexactly(2)
            (n,) = struct.unpack("!H", hdr)
            data = await reader.readexactly(n)
            out, delay = server.handle(data, tcp=True)
            if out is None:
                continue
            if delay:
                await asyncio.sleep(delay)
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    path = sys.argv[1]
    ready_fd = int(sys.argv[2]) if len(sys.argv) > 2 else None
    server = Server(path, ready_fd)
    loop = asyncio.get_running_loop()
    host, port = server.zones.listen
    try:
        await loop.create_datagram_endpoint(lambda: UDPProto(server), local_addr=(host, port))
        tcp = await asyncio.start_server(lambda r, w: tcp_client(server, r, w), host, port,
                                         reuse_address=True)
    except OSError as e:
        log("cannot listen on %s:%d: %s" % (host, port, e))
        server.tell("ERROR cannot listen on %s:%d: %s" % (host, port, e))
        sys.exit(1)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGINT, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    log("listening on %s:%d (udp+tcp)" % (host, port))
    server.tell("READY")
    await stop
    tcp.close()
    log("exiting")


if __name__ == "__main__":
    asyncio.run(main())
