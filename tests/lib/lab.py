# SPDX-License-Identifier: MIT
"""A local internet on loopback for strictrelay's integration tests.

    import sys, os
    sys.path.insert(0, os.path.join(os.environ["STRICTRELAY_SRCDIR"], "tests", "lib"))
    from lab import Lab

    with Lab() as lab:
        lab.mx.add("mx1.example.test")               # SMTP peer on 127.N.1.1:2525 + A record
        lab.dns.mx("example.test", "mx1.example.test", 10)
        lab.start()                                  # DNS, MX peers, HTTPS hosts
        relay = lab.relay()                          # strictrelay serve -c <generated config>
        rc, out = lab.swaks("--to", "bob@example.test", "--from", "a@relay.test")
        msg = lab.mx.wait_messages(1)[0]

Everything a Lab starts is stopped by PID when the `with` block ends, also on
failure, SIGTERM, SIGINT or interpreter exit. Each Lab owns one address slot N
(1..250) and uses only 127.N.x.y. See tests/lib/README.md.

Runs under Debian's /usr/bin/python3 (aiosmtpd, dnslib).
"""

import atexit
import base64
import contextlib
import ctypes
import datetime
import fcntl
import ipaddress
import json
import os
import random
import re
import select
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

LIB_DIR = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(LIB_DIR))
PYTHON = "/usr/bin/python3"          # Debian's, with aiosmtpd and dnslib (never pyenv's)
SLOT_DIR = "/tmp/strictrelay-lab"
SMTP_PORT = 2525
DNS_PORT = 5353
FAULT_DNS_PORT = 5354
HTTPS_PORT = 8443
BACKEND_PORT = 8080

__all__ = ["Lab", "LabError", "CA", "RawClient", "LabCase", "wait_for"]


class LabError(Exception):
    """A lab component failed (to start, to answer, to stop)."""


def _log(msg):
    sys.stderr.write("lab: %s\n" % msg)
    sys.stderr.flush()


def _tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no log %s: %s)" % (path, e)
    out = data.splitlines()[-lines:]
    return "\n".join("    | " + x for x in out) if out else "    | (empty)"


# ---------------------------------------------------------------------------
# Process bookkeeping
# ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _preexec_pdeathsig():
    # The child gets SIGTERM when the test process dies, even by SIGKILL.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def proc_stat(pid):
    """(state, ppid, pgrp, starttime) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2]), int(rest[19])


def proc_alive(pid):
    """True if pid exists and is not a zombie (kill -0 succeeds on zombies)."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def group_members(pgid):
    """Live (non-zombie) processes whose process group is pgid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st and st[2] == pgid and st[0] not in ("Z", "X"):
            out.append(int(name))
    return out


def listeners(prefix=None):
    """[(proto, ip, port)] of listening TCP and bound UDP sockets (IPv4 and IPv6).

    prefix: only addresses starting with it (e.g. "127.7.")."""
    out = []
    for proto, fname, v6 in (("tcp", "tcp", False), ("udp", "udp", False),
                             ("tcp", "tcp6", True), ("udp", "udp6", True)):
        try:
            with open("/proc/net/" + fname) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, state = cols[1], cols[3]
            if proto == "tcp" and state != "0A":
                continue
            if proto == "udp" and state != "07":
                continue
            hexip, hexport = local.split(":")
            raw = bytes.fromhex(hexip)
            if v6:
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                ip = str(ipaddress.IPv6Address(raw))
                if ip.startswith("::ffff:"):
                    ip = ip[7:]
            else:
                ip = socket.inet_ntoa(raw[::-1])
            if prefix is None or ip.startswith(prefix):
                out.append((proto, ip, int(hexport, 16)))
    return out


def is_listening(ip, port, proto="tcp"):
    ip = str(ipaddress.ip_address(ip))
    return any(p == proto and (i == ip or i in ("0.0.0.0", "::")) and po == port
               for p, i, po in listeners())


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Polls pred() until it returns something true, and returns that; an
    AssertionError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("%s not met within %.1f s" % (what, timeout))
        time.sleep(interval)


class LabCase(unittest.TestCase):
    """A TestCase whose class owns one Lab (cls.lab, made by the subclass's
    setUpClass). tearDownClass closes it, keeping its files when any test
    of the class failed. With timing_label set, each test's duration goes
    to stderr as "LABEL: test_name took N s"."""

    lab = None
    lab_failed = False
    timing_label = None

    @classmethod
    def tearDownClass(cls):
        if cls.lab is not None:
            cls.lab.close(failed=cls.lab_failed)
            cls.lab = None

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result is not None else 0
        t0 = time.monotonic()
        out = super().run(result)
        if self.timing_label:
            sys.stderr.write("%s: %s took %.1f s\n" % (self.timing_label, self._testMethodName,
                                                        time.monotonic() - t0))
        if result is not None and len(result.failures) + len(result.errors) > before:
            type(self).lab_failed = True
        return out


class Proc:
    """One server process started directly (its PID is the server's own), in its
    own session/process group, with stdout+stderr to a log file."""

    def __init__(self, lab, name, argv, log_path, env=None, cwd=None, ready_pipe=False,
                 inherit_lock=True):
        self.lab = lab
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.ready_pipe = ready_pipe
        self.inherit_lock = inherit_lock
        self.popen = None
        self.pid = None
        self.start_time = None
        self._rfd = None
        self._buf = b""

    def spawn(self):
        fds = []
        argv = list(self.argv)
        w = None
        if self.ready_pipe:
            self._rfd, w = os.pipe()
            fds.append(w)
            argv.append(str(w))
        if self.inherit_lock and self.lab._lock_fd is not None:
            # Holding the slot lock: a leftover child keeps the slot taken.
            fds.append(self.lab._lock_fd)
        preexec = _preexec_pdeathsig if threading.current_thread() is threading.main_thread() else None
        with open(self.log_path, "ab") as logf:
            try:
                self.popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    cwd=self.cwd, env=self.env, start_new_session=True, close_fds=True,
                    pass_fds=fds, preexec_fn=preexec)
            finally:
                if w is not None:
                    os.close(w)
        self.pid = self.popen.pid
        st = proc_stat(self.pid)
        self.start_time = st[3] if st else None
        self.lab._procs.append(self)
        return self

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def describe_failure(self, what):
        rc = self.popen.poll() if self.popen else None
        state = "exited with status %s" % rc if rc is not None else "still running (pid %d)" % self.pid
        return "%s: %s; %s; log %s:\n%s" % (self.name, what, state, self.log_path, _tail(self.log_path))

    def read_line(self, timeout):
        """Next line the process wrote to its ready pipe."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(self.describe_failure("no readiness report within %.1f s" % timeout))
            r, _, _ = select.select([self._rfd], [], [], left)
            if not r:
                continue
            chunk = os.read(self._rfd, 4096)
            if not chunk:
                try:
                    self.popen.wait(2)
                except subprocess.TimeoutExpired:
                    pass
                raise LabError(self.describe_failure("exited before reporting readiness"))
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def expect_ready(self, word="READY", timeout=10):
        line = self.read_line(timeout)
        if line != word:
            raise LabError(self.describe_failure("reported %r instead of %s" % (line, word)))

    def wait_until(self, check, what, timeout=10, interval=0.01):
        """Polls check() until true; fails early (with the log tail) if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if not self.running():
                raise LabError(self.describe_failure("exited while waiting for %s" % what))
            if time.monotonic() > deadline:
                raise LabError(self.describe_failure("%s not ready within %.1f s" % (what, timeout)))
            time.sleep(interval)

    def send_signal(self, sig):
        if self.running():
            os.kill(self.pid, sig)

    def stop(self, timeout=3.0, sig=signal.SIGTERM):
        """SIGTERM (or sig), wait up to timeout, then SIGKILL; then stop any process
        left in its process group. Returns the exit status."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _log("%s (pid %d) ignored signal %d for %.1f s: SIGKILL" % (self.name, self.pid, sig, timeout))
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        self.sweep()
        if self._rfd is not None:
            os.close(self._rfd)
            self._rfd = None
        self._buf = b""
        return self.popen.returncode if self.popen else None

    def kill9(self):
        return self.stop(timeout=10, sig=signal.SIGKILL)

    def sweep(self, grace=1.0):
        """Stops what is left of the process group (workers, orphans) by PID."""
        if self.pid is None:
            return
        members = group_members(self.pid)
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_members(self.pid):
            time.sleep(0.02)
        for pid in group_members(self.pid):
            _log("%s: leftover pid %d in its process group: SIGKILL" % (self.name, pid))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and group_members(self.pid):
            time.sleep(0.02)


# ---------------------------------------------------------------------------
# Slots, cleanup on signals and exit
# ---------------------------------------------------------------------------

_LABS = []
_CLOSING = [0]
_PENDING_SIGNAL = []
_HANDLERS_INSTALLED = [False]


def _on_signal(signum, frame):
    if _CLOSING[0]:
        _PENDING_SIGNAL.append(signum)
        return
    # Unwind the test: the Lab's __exit__/finally stops everything.
    raise SystemExit(128 + signum)


def _install_handlers():
    if _HANDLERS_INSTALLED[0] or threading.current_thread() is not threading.main_thread():
        return
    _HANDLERS_INSTALLED[0] = True
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)
    atexit.register(_atexit)


def _atexit():
    for lab in list(_LABS):
        lab.close(failed=False)


def _take_slot():
    os.makedirs(SLOT_DIR, exist_ok=True)
    os.chmod(SLOT_DIR, 0o1777)
    forced = os.environ.get("STRICTRELAY_LAB_SLOT")
    order = [int(forced)] if forced else list(range(1, 251))
    if not forced:
        # Start at a pid-dependent slot so parallel tests rarely contend.
        k = os.getpid() % 250
        order = order[k:] + order[:k]
    busy = []
    for n in order:
        path = os.path.join(SLOT_DIR, "slot-%d.lock" % n)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        used = listeners("127.%d." % n)
        if used:
            busy.append((n, used))
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        if busy:
            _log("skipped slots with leftover listeners: %s" % busy[:3])
        return n, fd
    raise LabError("no free lab slot in %s (1..250); leftovers: %s" % (SLOT_DIR, busy[:5]))


# ---------------------------------------------------------------------------
# Test CA (openssl CLI)
# ---------------------------------------------------------------------------

class CA:
    """Root CA plus leaf certificates, made with the openssl CLI.

    ca.file: the bundle to trust (the relay's ca_file).
    ca.issue(name, ...) -> (cert_path, key_path), cached per argument set."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = os.path.join(lab.dir, "ca")
        os.makedirs(os.path.join(self.dir, "db"))
        os.makedirs(os.path.join(self.dir, "certs"))
        self._lock = threading.RLock()
        self._cache = {}
        self._cas = {}
        self._keys = {}
        self._seq = 0
        self.cnf = os.path.join(self.dir, "openssl.cnf")
        with open(os.path.join(self.dir, "db", "index.txt"), "w"):
            pass
        with open(self.cnf, "w") as f:
            f.write(
                "[ca]\ndefault_ca = labca\n"
                "[labca]\ndir = %s\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\n"
                "serial = $dir/serial\nrand_serial = yes\nunique_subject = no\n"
                "default_md = sha256\npolicy = anything\ncopy_extensions = none\nemail_in_dn = no\n"
                "[anything]\ncommonName = supplied\n"
                "[req]\ndistinguished_name = dn\n[dn]\n" % os.path.join(self.dir, "db"))
        root = self._make_ca("root", "strictrelay lab root CA (slot %d)" % lab.slot)
        self.file = root[0]
        self.key = root[1]

    def _openssl(self, *args):
        env = dict(os.environ, OPENSSL_CONF=self.cnf)
        p = subprocess.run(["openssl"] + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, env=env, cwd=self.dir)
        if p.returncode != 0:
            raise LabError("openssl %s failed (%d):\n%s%s" % (" ".join(args), p.returncode,
                                                            p.stdout, p.stderr))
        return p.stdout

    def _key(self, kind="ec", name=None):
        """A cached key (one per kind unless name is given)."""
        k = (kind, name)
        with self._lock:
            if k not in self._keys:
                path = os.path.join(self.dir, "%s-%s.key" % (kind, name or "leaf"))
                if kind == "rsa":
                    self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                                  "-out", path)
                else:
                    self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                                  "-out", path)
                os.chmod(path, 0o644)
                self._keys[k] = path
            return self._keys[k]

    def _make_ca(self, label, cn, parent=None):
        key = self._key("ec", "ca-" + label)
        crt = os.path.join(self.dir, "ca-%s.crt" % label)
        args = ["req", "-x509", "-new", "-key", key, "-subj", "/CN=" + cn, "-days", "3650",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", crt]
        if parent:
            args += ["-CA", parent[0], "-CAkey", parent[1]]
        self._openssl(*args)
        self._cas[label] = (crt, key)
        return crt, key

    def other(self):
        """A second CA nobody trusts: (cert, key)."""
        with self._lock:
            if "other" not in self._cas:
                self._make_ca("other", "untrusted other CA (slot %d)" % self.lab.slot)
            return self._cas["other"]

    def intermediate(self):
        """An intermediate CA under the root: (cert, key)."""
        with self._lock:
            if "intermediate" not in self._cas:
                self._make_ca("intermediate", "strictrelay lab intermediate CA (slot %d)"
                              % self.lab.slot, parent=self._cas["root"])
            return self._cas["intermediate"]

    @staticmethod
    def _san(entries):
        out = []
        for e in entries:
            if e.startswith(("DNS:", "IP:", "email:", "URI:")):
                out.append(e)
                continue
            try:
                ipaddress.ip_address(e)
                out.append("IP:" + e)
            except ValueError:
                out.append("DNS:" + e)
        return ",".join(out)

    def issue(self, name, sans=None, cn_only=False, expired=False, not_yet_valid=False,
              self_signed=False, other_ca=False, intermediate=False, rsa=False, days=30,
              own_key=False):
        """Issues a server certificate for `name` and returns (cert_path, key_path).

        sans:          SAN entries (DNS names, IPs; "DNS:"/"IP:" prefixes allowed);
                       default [name]. name is always the subject CN.
        cn_only:       no subjectAltName at all (CN=name only)
        expired:       validity ended yesterday (started 30 days ago)
        not_yet_valid: validity starts tomorrow
        self_signed:   signed by its own key (not by any CA)
        other_ca:      signed by a second, untrusted CA
        intermediate:  signed by an intermediate CA; the cert file holds leaf + intermediate
        rsa:           RSA 2048 key instead of EC P-256
        own_key:       a key of its own instead of the lab's shared leaf key
        Wildcard names ("*.example.test") are fine."""
        args = (name, tuple(sans) if sans is not None else None, cn_only, expired, not_yet_valid,
                self_signed, other_ca, intermediate, rsa, days, own_key)
        with self._lock:
            if args in self._cache:
                return self._cache[args]
            self._seq += 1
            base = re.sub(r"[^A-Za-z0-9.-]", "_", name.replace("*", "star")) + "-%d" % self._seq
            key = self._key("rsa" if rsa else "ec", base if own_key else None)
            crt = os.path.join(self.dir, "certs", base + ".crt")
            ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                   "extendedKeyUsage=serverAuth,clientAuth"]
            if not cn_only:
                ext.append("subjectAltName=" + self._san(sans if sans is not None else [name]))
            if self_signed:
                signer = None
            elif other_ca:
                signer = self.other()
            elif intermediate:
                signer = self.intermediate()
            else:
                signer = self._cas["root"]
            if expired or not_yet_valid:
                now = datetime.datetime.now(datetime.timezone.utc)
                if expired:
                    start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
                else:
                    start, end = now + datetime.timedelta(days=1), now + datetime.timedelta(days=1 + days)
                fmt = "%Y%m%d%H%M%SZ"
                csr = os.path.join(self.dir, "certs", base + ".csr")
                extfile = os.path.join(self.dir, "certs", base + ".ext")
                with open(extfile, "w") as f:
                    f.write("[ext]\n" + "\n".join(x.replace("=", " = ", 1) for x in ext) + "\n")
                self._openssl("req", "-new", "-key", key, "-subj", "/CN=" + name, "-out", csr)
                ca_args = ["ca", "-batch", "-notext", "-config", self.cnf, "-in", csr, "-out", crt,
                           "-startdate", start.strftime(fmt), "-enddate", end.strftime(fmt),
                           "-extfile", extfile, "-extensions", "ext"]
                if signer is None:
                    ca_args += ["-selfsign", "-keyfile", key]
                else:
                    ca_args += ["-cert", signer[0], "-keyfile", signer[1]]
                self._openssl(*ca_args)
            else:
                req = ["req", "-x509", "-new", "-key", key, "-subj", "/CN=" + name,
                       "-days", str(days), "-out", crt]
                for e in ext:
                    req += ["-addext", e]
                if signer is not None:
                    req += ["-CA", signer[0], "-CAkey", signer[1]]
                self._openssl(*req)
            if intermediate and not self_signed:
                with open(crt, "a") as out, open(signer[0]) as inter:
                    out.write(inter.read())
            self._cache[args] = (crt, key)
            return crt, key

    def context(self, check_hostname=True, cn_fallback=False):
        """A client ssl.SSLContext trusting only the lab root CA.

        cn_fallback=False: SAN-only host name matching (RFC 6125 practice);
        Python's (and OpenSSL's) default also accepts a CN when there is no SAN."""
        ctx = ssl.create_default_context(cafile=self.file)
        ctx.check_hostname = check_hostname
        ctx.hostname_checks_common_name = cn_fallback
        return ctx


# ---------------------------------------------------------------------------
# DNS: dnsmasq + faultdns (+ optional port-53 stub)
# ---------------------------------------------------------------------------

FAULT_KINDS = ("servfail", "refused", "nxdomain", "timeout", "truncate", "delay", "answer")


def _norm(name):
    return name.rstrip(".").lower()


def _under(name, zone):
    return name == zone or name.endswith("." + zone)


class DNS:
    """dnsmasq on 127.N.0.1:5353 (authoritative for .test and every other TLD
    used by a record), plus faultdns on 127.N.0.1:5354 for faults.

    Declare records before lab.start(); changes after the start restart
    dnsmasq (~0.2 s) at once, or once per `with lab.dns.change():` block."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = os.path.join(lab.dir, "dns")
        os.makedirs(self.dir)
        self.ip = lab.ip(0, 1)
        self.port = DNS_PORT
        self.server = "%s:%d" % (self.ip, self.port)
        self.fault_port = FAULT_DNS_PORT
        self.fault_server = "%s:%d" % (self.ip, self.fault_port)
        self.records = []          # dicts: name, type, value (+ pref/host for MX)
        self.faults = {}           # zone -> {"kind", "delay"}
        self.local_domains = {"test"}
        self.ttl = 1
        self._dnsmasq = None
        self._faultdns = None
        self._stub = None
        self._batch = 0
        self._dirty = False

    # -- records --------------------------------------------------------------
    def _add(self, rec):
        rec["name"] = _norm(rec["name"])
        self.records.append(rec)
        self._changed()
        return self

    def a(self, name, *ips):
        """A records (several IPs: several records)."""
        for ip in ips:
            self._add({"name": name, "type": "A", "value": str(ipaddress.IPv4Address(ip))})
        return self

    def aaaa(self, name, *ips):
        for ip in ips:
            self._add({"name": name, "type": "AAAA", "value": str(ipaddress.IPv6Address(ip))})
        return self

    def mx(self, domain, host, pref=10):
        return self._add({"name": domain, "type": "MX", "host": _norm(host), "pref": int(pref)})

    def null_mx(self, domain):
        """RFC 7505 null MX: "0 ."."""
        return self._add({"name": domain, "type": "MX", "host": "", "pref": 0})

    def txt(self, name, text):
        """One TXT record. A str longer than 255 bytes is split into 255-byte
        character-strings; a list gives the character-strings explicitly."""
        if isinstance(text, (list, tuple)):
            value = [t.decode("latin-1") if isinstance(t, bytes) else t for t in text]
        else:
            value = text
        return self._add({"name": name, "type": "TXT", "value": value})

    def cname(self, name, target):
        return self._add({"name": name, "type": "CNAME", "value": _norm(target)})

    def tlsa(self, name, usage, selector, mtype, data_hex):
        """A TLSA record (served by faultdns: dnsmasq cannot)."""
        self._add({"name": name, "type": "TLSA", "usage": usage, "selector": selector,
                   "mtype": mtype, "data": data_hex})
        if not any(_under(_norm(name), z) for z in self.faults):
            self.faults[_norm(name)] = {"kind": "answer"}
        return self

    def fault(self, name, kind, delay=None):
        """Make `name` and everything below it misbehave: servfail, refused,
        nxdomain, timeout (no answer), truncate (TC=1 over UDP, full answer
        over TCP: only visible when querying lab.dns.fault_server directly, as
        dnsmasq retries over TCP itself), delay (answer after `delay` s),
        answer (records declared under it are served by faultdns)."""
        if kind not in FAULT_KINDS:
            raise ValueError("unknown DNS fault %r (known: %s)" % (kind, ", ".join(FAULT_KINDS)))
        self.faults[_norm(name)] = {"kind": kind, "delay": delay or 0}
        self._changed()
        return self

    def remove(self, name, rtype=None):
        """Removes the records of name (of one type if given) and its fault."""
        n = _norm(name)
        self.records = [r for r in self.records
                        if not (r["name"] == n and (rtype is None or r["type"] == rtype.upper()))]
        if rtype is None:
            self.faults.pop(n, None)
        self._changed()
        return self

    @contextlib.contextmanager
    def change(self):
        """Batch several changes into one restart."""
        self._batch += 1
        try:
            yield self
        finally:
            self._batch -= 1
            if self._batch == 0 and self._dirty:
                self.apply()

    def _changed(self):
        self._dirty = True
        if self._batch == 0 and self.running():
            self.apply()

    # -- config -----------------------------------------------------------------
    def _fault_zone(self, name):
        for z in self.faults:
            if _under(name, z):
                return z
        return None

    @staticmethod
    def _txt_hex(value):
        if isinstance(value, list):
            parts = [v.encode("utf-8") for v in value]
        else:
            b = value.encode("utf-8")
            parts = [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
        out = b""
        for p in parts:
            if len(p) > 255:
                raise ValueError("TXT character-string longer than 255 bytes")
            out += bytes([len(p)]) + p
        return out.hex()

    def _write_configs(self):
        lines = [
            "# generated by tests/lib/lab.py",
            "port=%d" % self.port,
            "listen-address=%s" % self.ip,
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "cache-size=0",
            "local-ttl=%d" % self.ttl,
            "user=root",
            "group=root",
            "pid-file=",
            "log-queries",
            "log-facility=%s" % os.path.join(self.dir, "dnsmasq.log"),
            "host-record=ready.lab.test,%s" % self.ip,
        ]
        tlds = set(self.local_domains)
        for r in self.records:
            tlds.add(r["name"].rsplit(".", 1)[-1])
        for t in sorted(tlds):
            lines.append("local=/%s/" % t)
        for z in sorted(self.faults):
            lines.append("server=/%s/%s#%d" % (z, self.ip, self.fault_port))
        for r in self.records:
            if self._fault_zone(r["name"]):
                continue        # served by faultdns only
            t = r["type"]
            if t in ("A", "AAAA"):
                lines.append("host-record=%s,%s" % (r["name"], r["value"]))
            elif t == "MX":
                if r["host"]:
                    lines.append("mx-host=%s,%s,%d" % (r["name"], r["host"], r["pref"]))
                else:
                    lines.append("dns-rr=%s,15,%04x00" % (r["name"], r["pref"]))
            elif t == "TXT":
                lines.append("dns-rr=%s,16,%s" % (r["name"], self._txt_hex(r["value"])))
            elif t == "CNAME":
                lines.append("cname=%s,%s" % (r["name"], r["value"]))
        with open(os.path.join(self.dir, "dnsmasq.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        fault_cfg = {"listen": [self.ip, self.fault_port], "ttl": self.ttl,
                     "zones": self.faults, "records": self.records}
        tmp = os.path.join(self.dir, ".faultdns.json")
        with open(tmp, "w") as f:
            json.dump(fault_cfg, f, indent=1)
        os.rename(tmp, os.path.join(self.dir, "faultdns.json"))
        self._dirty = False

    # -- processes ------------------------------------------------------------
    def running(self):
        return self._dnsmasq is not None and self._dnsmasq.running()

    def _spawn_dnsmasq(self):
        self._dnsmasq = Proc(self.lab, "dnsmasq", [
            "dnsmasq", "--keep-in-foreground", "--conf-file=" + os.path.join(self.dir, "dnsmasq.conf")],
            os.path.join(self.dir, "dnsmasq.out")).spawn()

    def _spawn(self):
        self._write_configs()
        self._faultdns = Proc(self.lab, "faultdns", [
            PYTHON, os.path.join(LIB_DIR, "faultdns.py"), os.path.join(self.dir, "faultdns.json")],
            os.path.join(self.dir, "faultdns.log"), ready_pipe=True).spawn()
        self._spawn_dnsmasq()

    def _probe(self, ip, port):
        q = _dns_query_packet("ready.lab.test", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(0.05)
            s.sendto(q, (ip, port))
            data = s.recv(512)
            return len(data) >= 12 and data[:2] == q[:2]
        except OSError:
            return False
        finally:
            s.close()

    def _wait(self):
        self._faultdns.expect_ready(timeout=10)
        self._dnsmasq.wait_until(lambda: self._probe(self.ip, self.port), "dnsmasq answering on "
                                 + self.server)

    def start(self):
        self._spawn()
        self._wait()

    def apply(self):
        """Writes the configs and restarts dnsmasq / reloads faultdns."""
        self._write_configs()
        if not self.running():
            return
        self._faultdns.send_signal(signal.SIGHUP)
        self._dnsmasq.stop()
        self._spawn_dnsmasq()
        line = self._faultdns.read_line(10)
        if line != "RELOADED":
            raise LabError(self._faultdns.describe_failure("reload: %s" % line))
        self._dnsmasq.wait_until(lambda: self._probe(self.ip, self.port), "dnsmasq answering on "
                                 + self.server)

    def stop(self):
        for p in (self._stub, self._dnsmasq, self._faultdns):
            if p is not None:
                p.stop()

    # -- helpers ------------------------------------------------------------------
    def dig(self, name, rtype="A", *opts, server=None, port=None):
        """Runs dig against the lab DNS; returns its stdout."""
        ip = server or self.ip
        p = subprocess.run(["dig", "-p", str(port or self.port), "@" + ip, name, rtype,
                            "+time=2", "+tries=1"] + list(opts),
                           capture_output=True, text=True, timeout=30)
        return p.stdout + p.stderr

    def query(self, name, rtype="A", server=None, tcp=False, timeout=2.0):
        """Queries with dnslib; returns a dnslib.DNSRecord (None on timeout)."""
        from dnslib import DNSRecord
        host, port = (server or self.server).rsplit(":", 1)
        q = DNSRecord.question(name, rtype)
        try:
            data = q.send(host, int(port), tcp=tcp, timeout=timeout)
        except socket.timeout:
            return None
        return DNSRecord.parse(data)

    def stub_resolv_conf(self):
        """Starts a port-53 stub dnsmasq on 127.N.0.253 forwarding (uncached) to
        the lab DNS and returns the path of a resolv.conf naming it. For tools
        that only read /etc/resolv.conf: see run_with_resolv_conf()."""
        path = os.path.join(self.dir, "resolv.conf")
        if self._stub is not None and self._stub.running():
            return path
        ip = self.lab.ip(0, 253)
        conf = os.path.join(self.dir, "stub.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "port=53", "listen-address=%s" % ip, "bind-interfaces", "no-resolv", "no-hosts",
                "no-poll", "cache-size=0", "user=root", "group=root", "pid-file=",
                "server=%s#%d" % (self.ip, self.port), "log-queries",
                "log-facility=%s" % os.path.join(self.dir, "stub.log")]) + "\n")
        with open(path, "w") as f:
            f.write("nameserver %s\noptions timeout:2 attempts:2\n" % ip)
        self._stub = Proc(self.lab, "dnsmasq-stub", ["dnsmasq", "--keep-in-foreground",
                                                     "--conf-file=" + conf],
                          os.path.join(self.dir, "stub.out")).spawn()
        self._stub.wait_until(lambda: self._probe(ip, 53), "stub dnsmasq on %s:53" % ip)
        return path

    def run_with_resolv_conf(self, argv, env=None, timeout=60, **kw):
        """Runs argv inside `unshare --mount` with the stub's resolv.conf
        bind-mounted over /etc/resolv.conf (the host's file is untouched).
        Returns a CompletedProcess (text, output captured)."""
        resolv = self.stub_resolv_conf()
        full = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv] + list(argv)
        return subprocess.run(full, env=env, timeout=timeout, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, **kw)


def _dns_query_packet(name, qtype):
    qid = random.randint(0, 0xffff)
    out = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00" + struct.pack("!HH", qtype, 1)


# ---------------------------------------------------------------------------
# MX peers: tests/lib/mxpeer.py
# ---------------------------------------------------------------------------

MX_DEFAULTS = {"starttls": True, "requiretls": False, "pipelining": True, "smtputf8": True,
               "eightbitmime": True, "dsn": False, "size": None, "ehlo_extra": [],
               "tls_min": None, "tls_max": None, "reply": {}, "close": {}, "delay": {},
               "refuse": False}


class MXPeers:
    """SMTP receivers (aiosmtpd) on 127.N.1.x:2525, all in one process."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = os.path.join(lab.dir, "mx")
        self.spool = os.path.join(self.dir, "spool")
        self.transcript_path = os.path.join(self.dir, "transcript.jsonl")
        self.config_path = os.path.join(self.dir, "mxpeer.json")
        os.makedirs(self.spool)
        self.endpoints = {}      # name -> dict
        self._proc = None
        self._next_ip = 1

    def add(self, name, ip=None, port=SMTP_PORT, cert=None, dns=True, **opts):
        """Declares an MX endpoint; returns its dict (ip, port, ...).

        name:  host name (banner, EHLO, certificate; gets an A record if dns)
        ip:    default the next free 127.N.1.x
        cert:  None: issued by the lab CA for name; a (cert, key) tuple; or a dict
               of lab.ca.issue() options, e.g. {"expired": True}
        opts:  starttls, requiretls, pipelining, smtputf8, eightbitmime, dsn,
               size, ehlo_extra, tls_min, tls_max, reply, close, delay, refuse
               (see README.md)."""
        name = _norm(name)
        if name in self.endpoints:
            raise LabError("MX endpoint %s declared twice" % name)
        unknown = set(opts) - set(MX_DEFAULTS)
        if unknown:
            raise TypeError("unknown MX option(s) %s" % sorted(unknown))
        if ip is None:
            ip = self._alloc_ip(port)
        self.lab._check_ip(ip)
        for other in self.endpoints.values():
            if other["ip"] == ip and other["port"] == port:
                raise LabError("MX %s: %s:%d already used by %s" % (name, ip, port, other["name"]))
        ep = dict(MX_DEFAULTS)
        ep.update(opts)
        ep.update({"name": name, "ip": ip, "port": int(port)})
        ep["cert"], ep["key"] = self._cert(name, cert)
        self.endpoints[name] = ep
        if dns:
            self.lab.dns.a(name, ip)
        if self.running():
            self._reload()
        return ep

    def _alloc_ip(self, port):
        used = {(e["ip"], e["port"]) for e in self.endpoints.values()}
        while (self.lab.ip(1, self._next_ip), port) in used:
            self._next_ip += 1
        if self._next_ip > 254:
            raise LabError("out of MX addresses")
        ip = self.lab.ip(1, self._next_ip)
        self._next_ip += 1
        return ip

    def _cert(self, name, cert):
        if cert is None:
            return self.lab.ca.issue(name)
        if isinstance(cert, dict):
            return self.lab.ca.issue(name, **cert)
        return tuple(cert)

    def update(self, name, **opts):
        """Changes an endpoint (behaviours, flags, cert); applied at once when
        running (SIGHUP, acknowledged). Behaviour counters restart."""
        ep = self.endpoints[_norm(name)]
        cert = opts.pop("cert", None)
        unknown = set(opts) - set(MX_DEFAULTS)
        if unknown:
            raise TypeError("unknown MX option(s) %s" % sorted(unknown))
        ep.update(opts)
        if cert is not None:
            ep["cert"], ep["key"] = self._cert(ep["name"], cert)
        if self.running():
            self._reload()
        return ep

    def remove(self, name):
        del self.endpoints[_norm(name)]
        if self.running():
            self._reload()

    def _write_config(self):
        cfg = {"spool": self.spool, "transcript": self.transcript_path,
               "endpoints": list(self.endpoints.values())}
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=1)
        os.rename(tmp, self.config_path)

    def running(self):
        return self._proc is not None and self._proc.running()

    def _spawn(self):
        self._write_config()
        self._proc = Proc(self.lab, "mxpeer", [PYTHON, os.path.join(LIB_DIR, "mxpeer.py"),
                                               self.config_path],
                          os.path.join(self.dir, "mxpeer.log"), ready_pipe=True).spawn()

    def _wait(self):
        self._proc.expect_ready(timeout=15)

    def start(self):
        self._spawn()
        self._wait()

    def _reload(self):
        self._write_config()
        self._proc.send_signal(signal.SIGHUP)
        line = self._proc.read_line(10)
        if line != "RELOADED":
            raise LabError(self._proc.describe_failure("reload failed: %s" % line))

    def stop(self):
        if self._proc is not None:
            self._proc.stop()

    def addr(self, name):
        ep = self.endpoints[_norm(name)]
        return ep["ip"], ep["port"]

    # -- what arrived ----------------------------------------------------------
    def messages(self, name=None):
        """Accepted messages, oldest first: dicts with endpoint, peer_ip, helo,
        esmtp, tls (None or {version, cipher, sni}), mail_from, mail_options,
        rcpt_tos, rcpt_options (one list per recipient), data (bytes, dot-
        unstuffed), raw (bytes as on the wire), size, max_line_length,
        received_at, id, session."""
        out = []
        for fn in sorted(os.listdir(self.spool)):
            if not fn.endswith(".json") or fn.startswith("."):
                continue
            with open(os.path.join(self.spool, fn)) as f:
                m = json.load(f)
            if name is not None and m["endpoint"] != _norm(name):
                continue
            m["data"] = base64.b64decode(m["data"])
            m["raw"] = base64.b64decode(m["raw"])
            out.append(m)
        return out

    def wait_messages(self, n, name=None, timeout=15):
        """Waits until at least n messages arrived (at name, if given)."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(name)
            if len(msgs) >= n:
                return msgs
            if self._proc is not None and not self._proc.running():
                raise LabError(self._proc.describe_failure("mxpeer died"))
            if time.monotonic() > deadline:
                raise LabError("expected %d message(s)%s within %.0f s, got %d.\n"
                               "MX transcript tail:\n%s\n%s" % (
                                   n, " at " + name if name else "", timeout, len(msgs),
                                   _tail(self.transcript_path, 30), self.lab.relay_log_tails()))
            time.sleep(0.05)

    def sessions(self, name=None):
        """SMTP sessions seen (also those without a message), oldest first:
        [{"sid", "endpoint", "events": [{"t", "dir": "C"|"S"|"*", "line"}]}]."""
        sess = {}
        order = []
        try:
            with open(self.transcript_path) as f:
                lines = f.readlines()
        except FileNotFoundError:
            return []
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue        # a line being written
            if name is not None and ev["ep"] != _norm(name):
                continue
            if ev["sid"] not in sess:
                sess[ev["sid"]] = {"sid": ev["sid"], "endpoint": ev["ep"], "events": []}
                order.append(ev["sid"])
            sess[ev["sid"]]["events"].append({"t": ev["t"], "dir": ev["dir"], "line": ev["line"]})
        return [sess[s] for s in order]

    @staticmethod
    def commands(session):
        """The client's command lines in a session (DATA content excluded)."""
        return [e["line"] for e in session["events"] if e["dir"] == "C"]

    def transcript(self, name=None):
        """All sessions as readable text (C: client, S: server, *: event)."""
        out = []
        for s in self.sessions(name):
            out.append("--- %s" % s["sid"])
            out.extend("%s: %s" % (e["dir"], e["line"]) for e in s["events"])
        return "\n".join(out)

    def clear(self):
        """Forgets received messages and transcripts."""
        for fn in os.listdir(self.spool):
            os.unlink(os.path.join(self.spool, fn))
        if os.path.exists(self.transcript_path):
            with open(self.transcript_path, "w"):
                pass


# ---------------------------------------------------------------------------
# HTTPS hosts: nginx (+ tests/lib/httpback.py for dynamic responses)
# ---------------------------------------------------------------------------

def _ngx_quote(s):
    if any(c in s for c in "\"\\\n\r$;{}"):
        raise ValueError("unsafe for nginx config: %r" % s)
    return '"%s"' % s


class HTTPS:
    """HTTPS hosts on 127.N.2.x:8443 served by one nginx (TLS, SNI, static
    files), proxying slow/odd/POST routes to a small Python backend."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = os.path.join(lab.dir, "https")
        self.www = os.path.join(self.dir, "www")
        self.posts_dir = os.path.join(self.dir, "posts")
        for d in (self.www, self.posts_dir, os.path.join(self.dir, "tmp")):
            os.makedirs(d)
        self.hosts = {}          # name -> {"name", "ip", "port", "cert", "key", "routes": {path: spec}}
        self.backend = (lab.ip(0, 254), BACKEND_PORT)
        self._nginx = None
        self._back = None
        self._next_ip = 1

    def add_host(self, name, ip=None, port=HTTPS_PORT, cert=None, files=None, posts=None, dns=True,
                 extra_ports=()):
        """Declares an HTTPS host.

        files: {path: response}; response is a str/bytes body (200 text/plain)
               or a dict: status (200), content_type ("text/plain"), body,
               headers {}, location (for 3xx), delay (s before the headers),
               dribble {"interval": s, "chunk": bytes} (slow body).
        posts: {path: {"status": 200, "body": ""}}: POST capture endpoints.
        cert:  None (lab CA, for name), (cert, key), or dict of ca.issue() options.
        extra_ports: more ports to serve the same host on, e.g. (443,) for
               tools that cannot be told another port (mta-sts-query)."""
        name = _norm(name)
        if name in self.hosts:
            raise LabError("HTTPS host %s declared twice" % name)
        if ip is None:
            ip = self.lab.ip(2, self._next_ip)
            self._next_ip += 1
        self.lab._check_ip(ip)
        if cert is None:
            crt, key = self.lab.ca.issue(name)
        elif isinstance(cert, dict):
            crt, key = self.lab.ca.issue(name, **cert)
        else:
            crt, key = cert
        host = {"name": name, "ip": ip, "port": int(port), "cert": crt, "key": key, "routes": {},
                "extra_ports": [int(p) for p in extra_ports]}
        self.hosts[name] = host
        for path, spec in (files or {}).items():
            host["routes"][path] = self._spec(spec)
        for path, spec in (posts or {}).items():
            s = self._spec(spec or {})
            s["capture"] = True
            host["routes"][path] = s
        if dns:
            self.lab.dns.a(name, ip)
        self._changed()
        return host

    @staticmethod
    def _spec(spec):
        if isinstance(spec, (str, bytes)):
            spec = {"body": spec}
        spec = dict(spec)
        body = spec.get("body", b"")
        if isinstance(body, str):
            body = body.encode("utf-8")
        spec["body"] = body
        spec.setdefault("status", 200)
        spec.setdefault("content_type", "text/plain")
        return spec

    def set_file(self, host, path, spec):
        """Sets (or, with spec None, removes) one path's response."""
        h = self.hosts[_norm(host)]
        if spec is None:
            h["routes"].pop(path, None)
        else:
            h["routes"][path] = self._spec(spec)
        self._changed()

    def _changed(self):
        if self.running():
            self.stop()
            self.start()

    def url(self, host, path="/"):
        h = self.hosts[_norm(host)]
        return "https://%s:%d%s" % (h["name"], h["port"], path)

    def _write_config(self):
        d = self.dir
        routes = {}
        servers = []
        for hi, h in enumerate(self.hosts.values()):
            locs = []
            for pi, (path, spec) in enumerate(h["routes"].items()):
                rid = "h%dp%d" % (hi, pi)
                status = int(spec["status"])
                dynamic = (spec.get("capture") or spec.get("delay") or spec.get("dribble")
                           or spec.get("headers"))
                if not path.startswith("/"):
                    raise ValueError("HTTPS path must start with /: %r" % path)
                loc = "    location = %s {\n" % _ngx_quote(path)
                if not dynamic and 300 <= status < 400 and spec.get("location") and not spec["body"]:
                    loc += "      return %d %s;\n" % (status, _ngx_quote(spec["location"]))
                elif not dynamic and status == 200:
                    fpath = os.path.join(self.www, rid)
                    with open(fpath, "wb") as f:
                        f.write(spec["body"])
                    loc += "      types { }\n      default_type %s;\n      alias %s;\n" % (
                        _ngx_quote(spec["content_type"]), fpath)
                else:
                    headers = dict(spec.get("headers") or {})
                    if spec.get("location"):
                        headers["Location"] = spec["location"]
                    routes[rid] = {"host": h["name"], "path": path, "status": status,
                                   "content_type": spec["content_type"],
                                   "body_b64": base64.b64encode(spec["body"]).decode(),
                                   "headers": headers, "delay": spec.get("delay", 0),
                                   "dribble": spec.get("dribble"),
                                   "capture": bool(spec.get("capture"))}
                    loc += ("      proxy_pass http://%s:%d;\n"
                            "      proxy_set_header X-Lab-Route %s;\n"
                            "      proxy_set_header Host $host;\n" % (self.backend + (rid,)))
                loc += "    }\n"
                locs.append(loc)
            listens = "".join("    listen %s:%d ssl;\n" % (h["ip"], p)
                              for p in [h["port"]] + h["extra_ports"])
            servers.append(
                "  server {\n"
                "%s"
                "    server_name %s;\n"
                "    ssl_certificate %s;\n"
                "    ssl_certificate_key %s;\n"
                "%s"
                "    location / { return 404; }\n"
                "  }\n" % (listens, h["name"], h["cert"], h["key"], "".join(locs)))
        conf = (
            "# generated by tests/lib/lab.py\n"
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root root;\n"
            "pid %(d)s/nginx.pid;\nerror_log %(d)s/error.log info;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            "  access_log %(d)s/access.log;\n"
            "  client_body_temp_path %(d)s/tmp/body;\n  proxy_temp_path %(d)s/tmp/proxy;\n"
            "  fastcgi_temp_path %(d)s/tmp/fastcgi;\n  uwsgi_temp_path %(d)s/tmp/uwsgi;\n"
            "  scgi_temp_path %(d)s/tmp/scgi;\n"
            "  client_max_body_size 64m;\n  server_tokens off;\n"
            "  default_type application/octet-stream;\n"
            "  ssl_protocols TLSv1.2 TLSv1.3;\n"
            "  proxy_http_version 1.1;\n  proxy_buffering off;\n  proxy_redirect off;\n"
            "  proxy_read_timeout 300s;\n"
            "%(servers)s"
            "}\n" % {"d": d, "servers": "".join(servers)})
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        with open(os.path.join(d, "backend.json"), "w") as f:
            json.dump({"listen": list(self.backend), "posts_dir": self.posts_dir, "routes": routes}, f,
                      indent=1)

    def running(self):
        return self._nginx is not None and self._nginx.running()

    def _spawn(self):
        self._write_config()
        self._back = Proc(self.lab, "httpback", [PYTHON, os.path.join(LIB_DIR, "httpback.py"),
                                                 os.path.join(self.dir, "backend.json")],
                          os.path.join(self.dir, "httpback.log"), ready_pipe=True).spawn()
        self._nginx = Proc(self.lab, "nginx", [
            "nginx", "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"),
            "-e", os.path.join(self.dir, "error.log")],
            os.path.join(self.dir, "nginx.out")).spawn()

    def _wait(self):
        self._back.expect_ready(timeout=10)
        addrs = sorted({(h["ip"], p) for h in self.hosts.values() for p in [h["port"]] + h["extra_ports"]})
        self._nginx.wait_until(lambda: all(is_listening(ip, port) for ip, port in addrs),
                               "nginx listening on %s" % ", ".join("%s:%d" % a for a in addrs))

    def start(self):
        self._spawn()
        try:
            self._wait()
        except LabError as e:
            raise LabError("%s\nnginx error.log:\n%s" % (e, _tail(os.path.join(self.dir, "error.log"))))

    def stop(self):
        for p in (self._nginx, self._back):
            if p is not None:
                p.stop()

    def posts(self, host=None):
        """Captured requests at POST endpoints, oldest first: dicts with host,
        path, method, headers, body (bytes), received_ts."""
        out = []
        hosts = [_norm(host)] if host else sorted(os.listdir(self.posts_dir))
        for h in hosts:
            d = os.path.join(self.posts_dir, h)
            if not os.path.isdir(d):
                continue
            for fn in sorted(os.listdir(d)):
                if fn.endswith(".json") and not fn.startswith("."):
                    with open(os.path.join(d, fn)) as f:
                        rec = json.load(f)
                    rec["body"] = base64.b64decode(rec["body"])
                    out.append(rec)
        out.sort(key=lambda r: r["received_ts"])
        return out

    def wait_posts(self, n, host=None, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            p = self.posts(host)
            if len(p) >= n:
                return p
            if time.monotonic() > deadline:
                raise LabError("expected %d POST(s) within %.0f s, got %d; nginx access log:\n%s"
                               % (n, timeout, len(p), _tail(os.path.join(self.dir, "access.log"))))
            time.sleep(0.05)

    def get(self, host, path, timeout=10, method="GET", body=None, ctx=None):
        """A request through the lab's TLS (for tests of the hosts themselves):
        returns (status, headers dict (lower-case names), body bytes)."""
        import http.client
        h = self.hosts[_norm(host)]
        conn = http.client.HTTPSConnection(h["ip"], h["port"], timeout=timeout,
                                           context=ctx or _sni_context(self.lab.ca, h["name"]))
        try:
            conn.request(method, path, body=body, headers={"Host": h["name"]})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()


def _sni_context(ca, server_name):
    """A client context that connects by IP but sends SNI and checks `server_name`."""
    ctx = ca.context()
    orig = ctx.wrap_socket

    def wrap_socket(sock, server_hostname=None, **kw):
        return orig(sock, server_hostname=server_name, **kw)
    ctx.wrap_socket = wrap_socket
    return ctx


# ---------------------------------------------------------------------------
# The relay under test
# ---------------------------------------------------------------------------

def _ini_value(v):
    if v is True:
        return "yes"
    if v is False:
        return "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


class Relay:
    """One strictrelay process (`strictrelay serve -c FILE`)."""

    def __init__(self, lab, index, overrides, env=None, bin=None):
        self.lab = lab
        self.index = index
        self.ip = lab.ip(0, index)
        self.port = SMTP_PORT
        self.dir = os.path.join(lab.dir, "relay%d" % index)
        self.state_dir = os.path.join(self.dir, "state")
        os.makedirs(self.state_dir)
        self.config_path = os.path.join(self.dir, "strictrelay.conf")
        self.log_path = os.path.join(self.dir, "relay.log")
        self.bin = bin or os.environ.get("STRICTRELAY_BIN") or os.path.join(SRC_DIR, "build", "strictrelay")
        self.env = dict(env or {})
        cert, key = lab.ca.issue("relay.test")
        self.config = {
            "server": {"hostname": "relay.test", "listen": "%s:%d" % (self.ip, self.port),
                       "tls_cert": cert, "tls_key": key, "relay_networks": "127.0.0.0/8",
                       # tests run as root; test_smarthost covers [server] user
                       "run_as_root": "yes"},
            "queue": {"state_dir": self.state_dir},
            "delivery": {"dns_servers": lab.dns.server, "ca_file": lab.ca.file,
                         "smtp_port": SMTP_PORT},
            "mta_sts": {"https_port": HTTPS_PORT},
        }
        self.configure(**overrides)
        self._proc = None

    def configure(self, **sections):
        """Merges {section: {key: value}} into the config (value None removes
        a key, a section None removes the section) and rewrites the file.
        A running relay keeps its config until reload() or restart()."""
        for sec, keys in sections.items():
            if keys is None:
                self.config.pop(sec, None)
                continue
            if not isinstance(keys, dict):
                raise TypeError("relay config section %r must be a dict" % sec)
            cur = self.config.setdefault(sec, {})
            for k, v in keys.items():
                if v is None:
                    cur.pop(k, None)
                else:
                    cur[k] = v
        lines = ["# generated by tests/lib/lab.py (slot %d)" % self.lab.slot]
        for sec, keys in self.config.items():
            lines.append("")
            lines.append("[%s]" % sec)
            for k, v in keys.items():
                lines.append("%s = %s" % (k, _ini_value(v)))
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def listen_addrs(self):
        out = []
        srv = self.config.get("server", {})
        for key, sec in (("listen", srv), ("submission_listen", srv),
                         ("submission_tls_listen", srv),
                         ("listen", self.config.get("metrics", {}))):
            for item in _ini_value(sec.get(key, "")).split(","):
                item = item.strip()
                if not item:
                    continue
                m = re.match(r"^\[([^\]]+)\]:(\d+)$", item) or re.match(r"^([^:]+):(\d+)$", item)
                if m:
                    out.append((m.group(1), int(m.group(2))))
        return out

    def running(self):
        return self._proc is not None and self._proc.running()

    def start(self, timeout=10):
        """Starts the relay and waits until every listen address accepts TCP."""
        if self.running():
            raise LabError("relay %d already running" % self.index)
        if not os.access(self.bin, os.X_OK):
            raise LabError("relay binary %s is missing (set STRICTRELAY_BIN or build it)" % self.bin)
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log_path, "ab") as f:
            f.write(("--- lab: starting %s serve -c %s\n" % (self.bin, self.config_path)).encode())
        self._proc = Proc(self.lab, "relay%d" % self.index, [self.bin, "serve", "-c", self.config_path],
                          self.log_path, env=env, cwd=self.dir, inherit_lock=False).spawn()
        addrs = self.listen_addrs()
        self._proc.wait_until(lambda: all(is_listening(ip, port) for ip, port in addrs),
                              "relay listening on %s" % ", ".join("%s:%d" % a for a in addrs),
                              timeout=timeout)
        return self

    def stop(self, timeout=10):
        """SIGTERM and wait (SIGKILL after timeout). Returns the exit status."""
        if self._proc is None:
            return None
        return self._proc.stop(timeout=timeout)

    def kill9(self):
        if self._proc is None:
            return None
        return self._proc.kill9()

    def restart(self, timeout=10):
        self.stop()
        return self.start(timeout=timeout)

    def reload(self):
        """SIGHUP (config reload)."""
        self._proc.send_signal(signal.SIGHUP)

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    @property
    def returncode(self):
        return self._proc.popen.poll() if self._proc else None

    def cli(self, *args, timeout=60, input=None, env=None):
        """Runs `strictrelay ARGS... -c FILE`; returns a CompletedProcess (text)."""
        e = dict(os.environ)
        e.update(self.env)
        e.update(env or {})
        return subprocess.run([self.bin] + list(args) + ["-c", self.config_path], input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, env=e)

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """Current log length: pass as start= to wait_log to see only newer lines."""
        return len(self.log_text())

    def wait_log(self, regex, timeout=10, start=0):
        """Waits until the log (from offset start) matches regex; returns the match."""
        rx = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), start)
            if m:
                return m
            if time.monotonic() > deadline:
                raise LabError("relay log did not match %r within %.0f s; tail of %s:\n%s"
                               % (regex, timeout, self.log_path, _tail(self.log_path)))
            time.sleep(0.05)

    def smtp(self, **kw):
        return self.lab.smtp(self.ip, self.port, **kw)


# ---------------------------------------------------------------------------
# Raw protocol client
# ---------------------------------------------------------------------------

class RawClient:
    """A raw TCP (then optionally TLS) client for protocol-level tests."""

    def __init__(self, ip, port, source=None, timeout=10):
        self.timeout = timeout
        self.sock = socket.create_connection((ip, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out; received so far: %r" % self.buf[-500:])
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by peer; received so far: %r" % self.buf[-500:])
        self.buf += chunk

    def expect(self, regex, timeout=None):
        """Reads until regex (bytes or str) matches the buffer; consumes through
        the match and returns it."""
        if isinstance(regex, str):
            regex = regex.encode()
        rx = re.compile(regex, re.M)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            self._fill(deadline)

    def read_reply(self, timeout=None):
        """One (possibly multi-line) SMTP reply: (code, [text lines])."""
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit():
                raise ValueError("not an SMTP reply line: %r" % text)
            lines.append(text[4:])
            if len(text) == 3 or text[3] == " ":
                return int(text[:3]), lines

    def cmd(self, line, timeout=None):
        """Sends line + CRLF and reads the reply."""
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.read_reply(timeout)

    def starttls(self, server_hostname=None, ctx=None):
        """Wraps the socket in TLS (after a 220 to STARTTLS)."""
        if self.buf:
            raise ValueError("unread data before TLS: %r" % self.buf)
        ctx = ctx or ssl._create_unverified_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        return self.sock

    def closed_by_peer(self, timeout=2):
        """True if the peer closes the connection (EOF) within timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except ConnectionError:
            return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# The lab
# ---------------------------------------------------------------------------

class Lab:
    """A local internet on loopback (address slot N: 127.N.x.y only).

    lab.ca, lab.dns, lab.mx, lab.https; lab.relay(**config); lab.swaks(),
    lab.smtp(), lab.raw(); lab.postfix_mx(...). Use as a context manager."""

    def __init__(self, name=None):
        _install_handlers()
        self.name = name or os.path.splitext(os.path.basename(sys.argv[0] or "lab"))[0]
        self._procs = []
        self._closed = False
        self._lock_fd = None
        self.slot, self._lock_fd = _take_slot()
        self.net = "127.%d." % self.slot
        try:
            self.dir = tempfile.mkdtemp(prefix="strictrelay-lab-%s-%d-" % (self.name, self.slot))
            os.chmod(self.dir, 0o755)
            _LABS.append(self)
            _log("slot %d (127.%d.0.0/16), dir %s" % (self.slot, self.slot, self.dir))
            self.ca = CA(self)
            self.dns = DNS(self)
            self.mx = MXPeers(self)
            self.https = HTTPS(self)
            self.relays = []
            self.postfixes = []
        except BaseException:
            self.close(failed=True)
            raise

    # -- addresses -------------------------------------------------------------
    def ip(self, i, j):
        """127.N.i.j"""
        if not (0 <= i <= 255 and 0 <= j <= 255):
            raise ValueError("bad lab address part %r.%r" % (i, j))
        return "127.%d.%d.%d" % (self.slot, i, j)

    def _check_ip(self, ip):
        if not str(ip).startswith(self.net):
            raise LabError("%s is outside this lab's range %s0.0/16" % (ip, self.net))

    # -- lifecycle -------------------------------------------------------------
    def start(self):
        """Starts DNS, and the MX peers and HTTPS hosts if any were declared.
        Processes start in parallel; returns when all are ready."""
        t0 = time.monotonic()
        parts = [] if self.dns.running() else [self.dns]
        if self.mx.endpoints and not self.mx.running():
            parts.append(self.mx)
        if self.https.hosts and not self.https.running():
            parts.append(self.https)
        for p in parts:
            p._spawn()
        for p in parts:
            if p is self.https:
                try:
                    p._wait()
                except LabError as e:
                    raise LabError("%s\nnginx error.log:\n%s" % (
                        e, _tail(os.path.join(self.https.dir, "error.log"))))
            else:
                p._wait()
        self.startup_seconds = time.monotonic() - t0
        return self

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        ok_exit = exc_type is not None and issubclass(exc_type, SystemExit) and exc.code in (0, None)
        self.close(failed=exc_type is not None and not ok_exit)
        return False

    def all_pids(self):
        return [p.pid for p in self._procs if p.pid]

    def relay_log_tails(self, lines=30):
        out = []
        for r in getattr(self, "relays", []):
            out.append("relay%d log %s:\n%s" % (r.index, r.log_path, _tail(r.log_path, lines)))
        return "\n".join(out)

    def close(self, failed=False):
        """Stops everything (relays first), checks nothing is left, removes the
        directory (kept if STRICTRELAY_KEEP=1 and the test failed, or
        STRICTRELAY_KEEP=always)."""
        if self._closed:
            return
        self._closed = True
        _CLOSING[0] += 1
        try:
            self.leftovers = []
            for r in reversed(getattr(self, "relays", [])):
                with contextlib.suppress(Exception):
                    r.stop()
            for pf in reversed(getattr(self, "postfixes", [])):
                with contextlib.suppress(Exception):
                    pf.stop()
            for p in reversed(self._procs):
                try:
                    p.stop()
                except Exception as e:
                    _log("stopping %s: %r" % (p.name, e))
            for p in self._procs:
                alive = group_members(p.pid) if p.pid else []
                if p.popen is not None and p.popen.poll() is None:
                    alive.append(p.pid)
                if alive:
                    self.leftovers.append((p.name, alive))
            if self._lock_fd is not None:
                left = listeners(self.net)
                if left:
                    self.leftovers.append(("listeners", left))
            if self.leftovers:
                _log("WARNING: left behind after stopping: %s" % self.leftovers)
            if failed and getattr(self, "dir", None):
                self._print_logs()
            keep = os.environ.get("STRICTRELAY_KEEP", "")
            if getattr(self, "dir", None):
                if keep == "always" or (failed and keep not in ("", "0")):
                    _log("kept %s" % self.dir)
                else:
                    shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            if self in _LABS:
                _LABS.remove(self)
            _CLOSING[0] -= 1
        if _PENDING_SIGNAL and not _CLOSING[0]:
            sig = _PENDING_SIGNAL.pop()
            raise SystemExit(128 + sig)

    def _print_logs(self):
        seen = set()
        out = ["lab %s (slot %d) failed; component logs:" % (self.dir, self.slot)]
        for p in self._procs:
            if p.log_path in seen:
                continue
            seen.add(p.log_path)
            out.append("  %s (pid %s) %s:\n%s" % (p.name, p.pid, p.log_path, _tail(p.log_path, 25)))
        mx = getattr(self, "mx", None)
        if mx is not None and mx.sessions():
            out.append("  MX transcript tail:\n%s" % _tail(mx.transcript_path, 25))
        sys.stderr.write("\n".join(out) + "\n")
        sys.stderr.flush()

    # -- conveniences --------------------------------------------------------------
    def mta_sts(self, domain, mode="enforce", mx=None, max_age=86400, id="1", policy=None,
                ip=None, cert=None, txt=True, extra_ports=()):
        """Publishes MTA-STS for domain: TXT _mta-sts.DOMAIN "v=STSv1; id=ID" and
        https://mta-sts.DOMAIN:8443/.well-known/mta-sts.txt (CRLF lines) with
        mode, mx patterns (default ["mx1.DOMAIN"]) and max_age, or `policy`
        verbatim (str/bytes or a response dict). Returns the HTTPS host dict."""
        if policy is None:
            lines = ["version: STSv1", "mode: %s" % mode]
            lines += ["mx: %s" % m for m in (mx if mx is not None else ["mx1." + domain])]
            lines.append("max_age: %d" % max_age)
            policy = "\r\n".join(lines) + "\r\n"
        if txt:
            self.dns.txt("_mta-sts." + domain, "v=STSv1; id=%s" % id)
        return self.https.add_host("mta-sts." + domain, ip=ip, cert=cert, extra_ports=extra_ports,
                                   files={"/.well-known/mta-sts.txt": policy})

    def tlsrpt_https(self, domain, host=None, path="/report", status=200, ip=None):
        """Publishes TLSRPT for domain with an HTTPS rua: TXT _smtp._tls.DOMAIN
        "v=TLSRPTv1; rua=https://HOST:8443/PATH" and a POST capture endpoint
        there (read with lab.https.posts(HOST)). Returns the rua URL."""
        host = host or "tlsrpt." + domain
        if _norm(host) in self.https.hosts:
            h = self.https.hosts[_norm(host)]
            h["routes"][path] = dict(HTTPS._spec({"status": status}), capture=True)
            self.https._changed()
        else:
            h = self.https.add_host(host, ip=ip, posts={path: {"status": status}})
        url = "https://%s:%d%s" % (h["name"], h["port"], path)
        self.dns.txt("_smtp._tls." + domain, "v=TLSRPTv1; rua=%s" % url)
        return url

    # -- the relay -----------------------------------------------------------------
    def relay(self, start=True, env=None, bin=None, **config_overrides):
        """Creates relay number k = len(relays)+1 listening on 127.N.0.k:2525,
        writes its config (lab defaults + overrides: section=dict(key=value))
        and starts it unless start=False. env: extra environment (e.g.
        STRICTRELAY_<SECTION>_<KEY>); bin: binary (default $STRICTRELAY_BIN)."""
        r = Relay(self, len(self.relays) + 1, config_overrides, env=env, bin=bin)
        self.relays.append(r)
        if start:
            r.start()
        return r

    # -- clients -----------------------------------------------------------------
    def _default_server(self):
        if not self.relays:
            raise LabError("no relay in this lab: give server=")
        r = self.relays[0]
        return r.ip, r.port

    def swaks(self, *args, server=None, timeout=30):
        """Runs /usr/bin/swaks (--server defaults to the first relay);
        returns (returncode, transcript)."""
        argv = ["/usr/bin/swaks"]
        if server is None and "--server" not in args and "-s" not in args:
            server = "%s:%d" % self._default_server()
        if server is not None:
            argv += ["--server", server]
        argv += list(args)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"")
            if isinstance(out, bytes):
                out = out.decode("utf-8", "replace")
            return -1, out + "\n(lab: swaks timed out after %s s)" % timeout
        return p.returncode, p.stdout + p.stderr

    def smtp(self, ip=None, port=None, source_address=None, timeout=30,
             local_hostname="client.test", server_hostname=None):
        """A connected smtplib.SMTP (default: to the first relay).
        source_address: an IP such as lab.ip(0, 2) to connect from.
        server_hostname: the name starttls() sends as SNI and checks
        (default: the IP)."""
        if ip is None:
            ip, dport = self._default_server()
            port = port or dport
        s = smtplib.SMTP(timeout=timeout, local_hostname=local_hostname,
                         source_address=(source_address, 0) if source_address else None)
        s._host = server_hostname or ip     # what starttls() uses for SNI / the name check
        s.connect(ip, port or SMTP_PORT)
        return s

    def raw(self, ip=None, port=None, source=None, timeout=10):
        """A RawClient (default: to the first relay)."""
        if ip is None:
            ip, dport = self._default_server()
            port = port or dport
        return RawClient(ip, port or SMTP_PORT, source=source, timeout=timeout)

    def client_context(self, check_hostname=True, cn_fallback=False):
        return self.ca.context(check_hostname=check_hostname, cn_fallback=cn_fallback)

    # -- Postfix MX -----------------------------------------------------------------
    def postfix_mx(self, listeners, **kw):
        """Starts a private Postfix instance receiving mail for any domain on
        127.N.3.x:2525 (see postfix.py); returns it (messages(), wait_messages())."""
        if LIB_DIR not in sys.path:
            sys.path.insert(0, LIB_DIR)
        from postfix import PostfixMX
        pf = PostfixMX(self, listeners, **kw)
        self.postfixes.append(pf)
        pf.start()
        return pf
