#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A stand-in for the strictrelay binary, used only by the harness self-test
(tests/integration/test_harness.py) to check lab.relay()'s plumbing without
the real relay: STRICTRELAY_BIN=tests/lib/fakerelay.py.

`fakerelay.py serve -c FILE` reads [server] listen from the INI file and
answers SMTP trivially (220/250/354/221), logging one line per event to
stderr; SIGTERM exits 0, SIGHUP logs "reloaded". Any other command prints
its arguments and exits 0.
"""

import asyncio
import configparser
import signal
import sys


def log(msg):
    sys.stderr.write("fakerelay: %s\n" % msg)
    sys.stderr.flush()


async def session(reader, writer, hostname):
    peer = writer.get_extra_info("peername")
    log("connect peer=%s" % peer[0])
    writer.write(b"220 %s fake relay\r\n" % hostname.encode())
    in_data = False
    while True:
        line = await reader.readline()
        if not line:
            break
        if in_data:
            if line == b".\r\n":
                in_data = False
                log("message accepted peer=%s" % peer[0])
                writer.write(b"250 2.0.0 queued\r\n")
            continue
        cmd = line[:4].upper()
        if cmd == b"QUIT":
            writer.write(b"221 2.0.0 bye\r\n")
            break
        if cmd == b"DATA":
            in_data = True
            writer.write(b"354 go ahead\r\n")
        elif cmd == b"EHLO":
            writer.write(b"250-%s\r\n250 PIPELINING\r\n" % hostname.encode())
        else:
            writer.write(b"250 2.0.0 ok\r\n")
        await writer.drain()
    await writer.drain()
    writer.close()


async def serve(cfg):
    hostname = cfg.get("server", "hostname", fallback="fake.test")
    servers = []
    for item in cfg.get("server", "listen").split(","):
        host, port = item.strip().rsplit(":", 1)
        host = host.strip("[]")
        servers.append(await asyncio.start_server(lambda r, w: session(r, w, hostname),
                                                  host, int(port)))
        log("listening on %s:%s" % (host, port))
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGHUP, lambda: log("reloaded"))
    await stop
    log("stopping on SIGTERM")


def main():
    args = sys.argv[1:]
    if "-c" not in args:
        print("usage: fakerelay.py COMMAND ... -c FILE", file=sys.stderr)
        return 2
    i = args.index("-c")
    path = args[i + 1]
    rest = args[:i] + args[i + 2:]
    if rest[:1] == ["serve"]:
        cfg = configparser.ConfigParser(inline_comment_prefixes=("#",))
        cfg.read(path)
        asyncio.run(serve(cfg))
        return 0
    print("fakerelay %s config=%s" % (" ".join(rest), path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
