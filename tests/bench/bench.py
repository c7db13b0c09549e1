#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""strictrelay benchmarks (tests/bench/README.md). Not part of CI.

    tests/bench/bench.py [--build DIR] [--messages N] [--sessions 20,100]
                         [--only direct,relay,postfix,accept,conns,policy]

Everything runs on 127.0.0.1 in one temp dir under /var/tmp (same disk as a
real queue), started and stopped by this script:

  direct   smtp-source -> smtp-sink: the ceiling of the harness
  relay    smtp-source -> strictrelay -> smtp-sink (TLS off, MTA-STS and
           TLSRPT off, one route to the sink): end to end, time from
           smtp-source's start until the sink has counted every message
  postfix  the same through a private Postfix 3.7 instance configured as a
           plain relay to the same sink (relayhost, TLS off, defaults else)
  accept   accept-only: delivery held (the route points at a socket that
           never accepts), time until smtp-source has every 250; next to the
           disk's raw 4 KiB append+fdatasync rate measured in the same run
  conns    10,000 idle inbound connections (RSS per connection), then 1,000
           concurrent STARTTLS handshakes (handshakes/s)
  policy   bench_policy: the cached MTA-STS decision in ns per call

The build defaults to build-bench (created as --buildtype=release when
missing). Needs root (smtp-sink -u, the Postfix master, the fd limit).
"""

import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = "/usr/sbin/smtp-source"
SINK = "/usr/sbin/smtp-sink"
MASTER = "/usr/lib/postfix/sbin/master"
IP = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from postfix import MASTER_CF_SERVICES  # noqa: E402 (the lab's Postfix service table)


def log(*a):
    print(*a, flush=True)


def free_port():
    """A free TCP port below the ephemeral range, so smtp-source's many
    short connections never collide with a listener."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind((IP, port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((IP, port)) == 0


def wait_until(cond, what, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.02)


def load():
    return "load %.2f %.2f %.2f" % os.getloadavg()


# -- /proc ---------------------------------------------------------------------

def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def proc_pss(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def proc_cpu(pid):
    """utime + stime of pid in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def tree(root):
    """root and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class Sampler(threading.Thread):
    """Samples the RSS and PSS sums of a process tree every 0.5 s."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root = root
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            pids = tree(self.root)
            self.peak_rss = max(self.peak_rss, sum(proc_status(p, "VmRSS") for p in pids))
            self.peak_pss = max(self.peak_pss, sum(proc_pss(p) for p in pids))
            self.peak_procs = max(self.peak_procs, len(pids))
            self._halt.wait(0.5)

    def stop(self):
        self._halt.set()
        self.join()


# -- peers ---------------------------------------------------------------------

class Sink:
    """smtp-sink with its running counter (-c: "sess=N quit=N mesg=N\\r")."""

    def __init__(self, workdir):
        self.port = free_port()
        cmd = [SINK, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "postfix"]
        cmd += ["%s:%d" % (IP, self.port), "1024"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=workdir)
        self.count = 0
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(lambda: listening(self.port), "smtp-sink", 10)

    def _read(self):
        rx = re.compile(rb"mesg=(\d+)")
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            buf = (buf + chunk)[-200:]
            m = rx.findall(buf)
            if m:
                self.count = int(m[-1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Relay:
    """strictrelay serve with a generated config; log in workdir."""

    def __init__(self, binary, workdir, name, extra):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "serve.log")
        conf = os.path.join(self.dir, "relay.conf")
        with open(conf, "w") as f:
            f.write(extra.format(port=self.port, dir=self.dir))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "-c", conf, "serve"], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_until(lambda: "info main: ready" in self.log_text() or self.proc.poll() is not None,
                   "strictrelay ready", 20)
        if self.proc.poll() is not None:
            raise RuntimeError("strictrelay exited:\n" + self.log_text())
        self.pid = self.proc.pid

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        """SIGTERM; returns the 'stopped: store ...' statistics."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        m = re.search(r"stopped: store (.*)", self.log_text())
        return m.group(1) if m else ""


RELAY_CONF = """\
[server]
hostname = bench.test
listen = 127.0.0.1:{{port}}
relay_networks = 127.0.0.0/8
max_connections = {max_conn}
# every benchmark client is 127.0.0.1: the per-client limit must not bite
max_connections_per_client = {max_conn}
# the benchmark runs as root, in a temp dir
run_as_root = yes
{tls}
[queue]
state_dir = {{dir}}/state
[delivery]
max_per_domain = {per_domain}
connect_timeout = 5m
[routes]
* = [127.0.0.1]:{next_port} tls=none
[mta_sts]
enabled = no
[tlsrpt]
enabled = no
"""


def relay_conf(next_port, per_domain=20, max_conn=2000, tls=""):
    return RELAY_CONF.format(next_port=next_port, per_domain=per_domain, max_conn=max_conn, tls=tls)


class Postfix:
    """A private Postfix instance relaying everything to [127.0.0.1]:sink_port,
    TLS off, Postfix defaults for everything else (destination concurrency
    20, process limit 100); master -d so the PID is the master's own."""

    def __init__(self, workdir, sink_port):
        import grp
        import pwd
        self.dir = os.path.join(workdir, "postfix")
        self.port = free_port()
        etc, queue = os.path.join(self.dir, "etc"), os.path.join(self.dir, "queue")
        data, logdir = os.path.join(self.dir, "data"), os.path.join(self.dir, "log")
        pw = pwd.getpwnam("postfix")
        postdrop = grp.getgrnam("postdrop").gr_gid
        for d in (etc, queue):
            os.makedirs(d)
        os.chmod(self.dir, 0o755)
        for d in (data, logdir):
            os.makedirs(d)
            os.chown(d, pw.pw_uid, 0)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": queue,
            "data_directory": data,
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.test",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "relayhost": "[127.0.0.1]:%d" % sink_port,
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "maillog_file": os.path.join(logdir, "maillog"),
            "maillog_file_prefixes": logdir,
            "biff": "no",
        }
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write("".join("%s = %s\n" % kv for kv in main.items()))
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.write("%s:%d inet n - n - - smtpd\n" % (IP, self.port) + MASTER_CF_SERVICES)
        past = time.time() - 60  # a fresh main.cf makes Postfix wait for it to age
        for fn in ("main.cf", "master.cf"):
            os.utime(os.path.join(etc, fn), (past, past))
        os.chmod(queue, 0o755)
        for d in ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                  "incoming", "private", "saved", "trace"):
            os.makedirs(os.path.join(queue, d), 0o700)
            os.chown(os.path.join(queue, d), pw.pw_uid, 0)
        for d, mode in (("maildrop", 0o730), ("public", 0o710)):
            os.makedirs(os.path.join(queue, d))
            os.chown(os.path.join(queue, d), pw.pw_uid, postdrop)
            os.chmod(os.path.join(queue, d), mode)
        os.makedirs(os.path.join(queue, "pid"))
        self._out = open(os.path.join(self.dir, "master.out"), "wb")
        self.proc = subprocess.Popen([MASTER, "-d", "-c", etc], stdout=self._out,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, MAIL_CONFIG=etc))
        self.pid = self.proc.pid
        wait_until(lambda: listening(self.port) or self.proc.poll() is not None, "postfix", 30)
        if self.proc.poll() is not None:
            raise RuntimeError("postfix master exited, see %s" % self.dir)

    def stop(self):
        pids = tree(self.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        for p in pids[1:]:  # the master does not wait for its children
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self._out.close()

        def gone():  # zombies count as gone (PID 1 reaps them late)
            for p in pids[1:]:
                try:
                    with open("/proc/%d/stat" % p) as f:
                        if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                            return False
                except FileNotFoundError:
                    pass
            return True
        wait_until(gone, "postfix processes to exit", 30)
        time.sleep(2)  # let the load settle before the next measurement


def run_source(port, n, sessions, size, sink=None, timeout=600):
    """smtp-source n messages of size bytes over `sessions` parallel sessions.
    Returns (seconds until smtp-source is done, seconds until the sink has
    counted n more messages, or None without a sink)."""
    base = sink.count if sink else 0
    t0 = time.monotonic()
    src = subprocess.Popen([SOURCE, "-s", str(sessions), "-m", str(n), "-l", str(size),
                            "-f", "bench@example.org", "-t", "sink@example.net",
                            "%s:%d" % (IP, port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_src = t_sink = None
    while t_src is None or (sink and t_sink is None):
        now = time.monotonic()
        if t_src is None and src.poll() is not None:
            t_src = now - t0
            if src.returncode != 0:
                raise RuntimeError("smtp-source failed: %s" % src.stderr.read().decode()[-500:])
        if sink and t_sink is None and sink.count - base >= n:
            t_sink = now - t0
        if now - t0 > timeout:
            src.kill()
            raise RuntimeError("timed out: sink at %d of %d" % ((sink.count - base) if sink else -1, n))
        time.sleep(0.005)
    return t_src, t_sink


def fsync_rate(workdir, n=1000):
    """4 KiB appends, each followed by fdatasync: what one commit costs."""
    path = os.path.join(workdir, "fsync.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"x" * 4096
    t = time.monotonic()
    for _ in range(n):
        os.write(fd, block)
        os.fdatasync(fd)
    rate = n / (time.monotonic() - t)
    os.close(fd)
    os.unlink(path)
    return rate


# -- benchmarks ----------------------------------------------------------------

def bench_end_to_end(args, work, sink, results):
    for s in args.sessions:
        if "direct" in args.only:
            log("direct   %d sessions ... (%s)" % (s, load()))
            _, t = run_source(sink.port, args.messages, s, args.size, sink)
            results[("direct", s)] = {"rate": args.messages / t, "secs": t}
            log("  %7.0f msg/s  (%.1f s)" % (args.messages / t, t))
        if "relay" in args.only:
            log("relay    %d sessions ... (%s)" % (s, load()))
            relay = Relay(args.bin, work, "relay-%d" % s, relay_conf(sink.port))
            samp = Sampler(relay.pid)
            samp.start()
            t_acc, t = run_source(relay.port, args.messages, s, args.size, sink)
            samp.stop()
            hwm, cpu = proc_status(relay.pid, "VmHWM"), proc_cpu(relay.pid)
            stats = relay.stop()
            r = {"rate": args.messages / t, "secs": t, "accept_rate": args.messages / t_acc,
                 "peak_rss_kb": hwm, "cpu": cpu, "stats": stats}
            results[("relay", s)] = r
            log("  %7.0f msg/s  (%.1f s; accepted at %.0f msg/s; peak RSS %.1f MB; relay CPU %.1f s"
                " = %.0f us/msg; %s)" % (r["rate"], t, r["accept_rate"], hwm / 1024, cpu,
                                         cpu * 1e6 / args.messages, stats))
        if "postfix" in args.only:
            log("postfix  %d sessions ... (%s)" % (s, load()))
            pf = Postfix(work, sink.port)
            samp = Sampler(pf.pid)
            samp.start()
            t_acc, t = run_source(pf.port, args.messages, s, args.size, sink)
            samp.stop()
            pf.stop()
            r = {"rate": args.messages / t, "secs": t, "accept_rate": args.messages / t_acc,
                 "peak_rss_kb": samp.peak_rss, "peak_pss_kb": samp.peak_pss, "procs": samp.peak_procs}
            results[("postfix", s)] = r
            log("  %7.0f msg/s  (%.1f s; accepted at %.0f msg/s; peak RSS sum %.0f MB, PSS sum %.0f MB,"
                " %d processes)" % (r["rate"], t, r["accept_rate"], samp.peak_rss / 1024,
                                    samp.peak_pss / 1024, samp.peak_procs))
            shutil.rmtree(pf.dir, ignore_errors=True)


def bench_accept(args, work, results):
    # Deliveries are held: the route leads to a socket that never accepts, so
    # outbound sessions hang in connect and nothing is delivered or retried.
    hole = socket.socket()
    hole.bind((IP, 0))
    hole.listen(1)
    try:
        for s in args.sessions:
            rate_fs = fsync_rate(work)
            log("accept   %d sessions ... (%s)" % (s, load()))
            relay = Relay(args.bin, work, "accept-%d" % s, relay_conf(hole.getsockname()[1]))
            t, _ = run_source(relay.port, args.messages, s, args.size)
            hwm, cpu = proc_status(relay.pid, "VmHWM"), proc_cpu(relay.pid)
            stats = relay.stop()
            queued = relay.log_text().count("status=queued")
            m = re.search(r"commits=(\d+)", stats)
            per_commit = queued / int(m.group(1)) if m and int(m.group(1)) else 0
            r = {"rate": queued / t, "fsync": rate_fs, "queued": queued, "per_commit": per_commit,
                 "peak_rss_kb": hwm, "cpu": cpu, "stats": stats}
            results[("accept", s)] = r
            log("  %7.0f msg/s  (%d of %d queued in %.1f s); disk %.0f fdatasync/s -> %.1f x;"
                " %.1f messages per commit; peak RSS %.1f MB; relay CPU %.1f s = %.0f us/msg; %s"
                % (r["rate"], queued, args.messages, t, rate_fs, r["rate"] / rate_fs, per_commit,
                   hwm / 1024, cpu, cpu * 1e6 / max(queued, 1), stats))
            shutil.rmtree(relay.dir, ignore_errors=True)
    finally:
        hole.close()


async def _open_idle(port, n, parallel=256):
    sem = asyncio.Semaphore(parallel)
    conns = []

    async def one(i):
        async with sem:
            r, w = await asyncio.open_connection(IP, port)
            line = await r.readline()
            if not line.startswith(b"220"):
                raise RuntimeError("connection %d: %r" % (i, line))
            conns.append(w)

    await asyncio.gather(*(one(i) for i in range(n)))
    return conns


async def _reply(r):
    while True:
        line = await r.readline()
        if not line or line[3:4] != b"-":
            return line


async def _starttls(port, n, parallel=256):
    """Connects n clients up to the 220 after STARTTLS, then runs all n TLS
    handshakes at once; returns (handshakes done, seconds for them)."""
    sem = asyncio.Semaphore(parallel)
    ready = asyncio.Event()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    at_tls = []
    done = []

    async def one():
        async with sem:
            r, w = await asyncio.open_connection(IP, port)
            await _reply(r)
            w.write(b"EHLO bench.test\r\n")
            await _reply(r)
            w.write(b"STARTTLS\r\n")
            line = await _reply(r)
            if not line.startswith(b"220"):
                raise RuntimeError("STARTTLS: %r" % line)
        at_tls.append(1)
        if len(at_tls) == n:
            ready.set()
        await ready.wait()
        await w.start_tls(ctx, server_hostname="bench.test")
        done.append(time.monotonic())
        w.write(b"QUIT\r\n")
        await _reply(r)
        w.close()

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    await ready.wait()
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    return len(done), max(done) - t0


def bench_conns(args, work, results):
    limit = args.idle + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(limit, soft), max(limit, hard)))
    key, cert = os.path.join(work, "key.pem"), os.path.join(work, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=bench.test",
                    "-addext", "subjectAltName=DNS:bench.test"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tls = "tls_cert = %s\ntls_key = %s" % (cert, key)
    relay = Relay(args.bin, work, "conns", relay_conf(9, max_conn=args.idle + 100, tls=tls))
    try:
        log("idle     %d connections ... (%s)" % (args.idle, load()))
        before = proc_status(relay.pid, "VmRSS")
        loop = asyncio.new_event_loop()
        conns = loop.run_until_complete(_open_idle(relay.port, args.idle))
        time.sleep(1)
        after = proc_status(relay.pid, "VmRSS")
        per = (after - before) * 1024 / args.idle
        results["idle"] = {"n": len(conns), "before_kb": before, "after_kb": after, "per_conn": per}
        log("  RSS %.1f MB -> %.1f MB with %d open: %.1f KB per connection"
            % (before / 1024, after / 1024, len(conns), per / 1024))
        for w in conns:
            w.close()
        loop.run_until_complete(asyncio.sleep(2))  # the relay sees them go

        log("starttls %d concurrent handshakes ... (%s)" % (args.tls, load()))
        cpu0, self0 = proc_cpu(relay.pid), resource.getrusage(resource.RUSAGE_SELF)
        ok, secs = loop.run_until_complete(_starttls(relay.port, args.tls))
        cpu1, self1 = proc_cpu(relay.pid), resource.getrusage(resource.RUSAGE_SELF)
        loop.close()
        client = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        results["tls"] = {"n": ok, "secs": secs, "rate": ok / secs, "relay_cpu": cpu1 - cpu0,
                          "client_cpu": client}
        log("  %d handshakes in %.2f s: %.0f handshakes/s (RSA-2048, TLS 1.3; relay CPU %.2f s,"
            " client CPU %.2f s for the whole phase)" % (ok, secs, ok / secs, cpu1 - cpu0, client))
    finally:
        relay.stop()


def bench_policy(args, results):
    exe = os.path.join(args.build, "tests", "bench", "bench_policy")
    log("policy   %s" % exe)
    out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    log("  " + out.strip().replace("\n", "\n  "))
    m = re.search(r"all stages.*?([\d.]+) ns", out)
    results["policy"] = float(m.group(1)) if m else None


def summary(args, results):
    log("\n== summary (%d x %d bytes; %s) ==" % (args.messages, args.size, load()))
    for s in args.sessions:
        d, r, p = results.get(("direct", s)), results.get(("relay", s)), results.get(("postfix", s))
        parts = []
        if r:
            parts.append("strictrelay %.0f msg/s (peak RSS %.1f MB)" % (r["rate"], r["peak_rss_kb"] / 1024))
        if p:
            parts.append("postfix %.0f msg/s (peak RSS sum %.0f MB, PSS %.0f MB)"
                         % (p["rate"], p["peak_rss_kb"] / 1024, p["peak_pss_kb"] / 1024))
        if d:
            parts.append("direct %.0f msg/s" % d["rate"])
        if r and p:
            parts.append("ratio %.1fx postfix (target >= 5)" % (r["rate"] / p["rate"]))
        if r and d:
            parts.append("%.0f%% of direct (target >= 40%%)" % (100 * r["rate"] / d["rate"]))
        if parts:
            log("e2e %3d sessions: %s" % (s, "; ".join(parts)))
        a = results.get(("accept", s))
        if a:
            log("accept %3d sessions: %.0f msg/s vs %.0f fdatasync/s = %.1fx (target >= 10); %.1f msgs/commit%s"
                % (s, a["rate"], a["fsync"], a["rate"] / a["fsync"], a["per_commit"],
                   "; %.0f%% of direct" % (100 * a["rate"] / d["rate"]) if d else ""))
    if "idle" in results:
        log("idle: %.1f KB RSS per connection (target <= 64)" % (results["idle"]["per_conn"] / 1024))
    if "tls" in results:
        log("starttls: %.0f handshakes/s" % results["tls"]["rate"])
    if results.get("policy") is not None:
        log("policy: %.1f ns per cached decision (target < 50,000)" % results["policy"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sessions", default="20,100")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--tls", type=int, default=1000)
    ap.add_argument("--only", default="direct,relay,postfix,accept,conns,policy")
    args = ap.parse_args()
    args.sessions = [int(x) for x in args.sessions.split(",")]
    args.only = set(args.only.split(","))
    args.build = os.path.abspath(args.build)
    args.bin = os.path.join(args.build, "strictrelay")
    for tool in (SOURCE, SINK, MASTER):
        if not os.access(tool, os.X_OK):
            sys.exit("bench: %s missing (apt-get install postfix)" % tool)
    if not os.path.exists(os.path.join(args.build, "build.ninja")):
        subprocess.run(["meson", "setup", args.build, "--buildtype=release"], cwd=ROOT, check=True)
    subprocess.run(["ninja", "-C", args.build, "strictrelay", "tests/bench/bench_policy"], check=True,
                   stdout=subprocess.DEVNULL)
    bt = subprocess.run(["meson", "introspect", "--buildoptions", args.build], capture_output=True,
                        text=True).stdout
    m = re.search(r'"name": "buildtype", "value": "(\w+)"', bt)
    log("strictrelay %s (%s build), %d cores, %s" % (args.bin, m.group(1) if m else "?",
                                                   os.cpu_count(), load()))

    results = {}
    work = tempfile.mkdtemp(prefix="strictrelay-bench.", dir="/var/tmp")
    os.chmod(work, 0o755)  # Postfix's unprivileged processes work below it
    sink = None
    try:
        if args.only & {"direct", "relay", "postfix"}:
            sink = Sink(work)
            bench_end_to_end(args, work, sink, results)
        if "accept" in args.only:
            bench_accept(args, work, results)
        if "conns" in args.only:
            bench_conns(args, work, results)
        if "policy" in args.only:
            bench_policy(args, results)
    finally:
        if sink:
            sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary(args, results)


if __name__ == "__main__":
    main()
