#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Packaging: etc/install.sh into a DESTDIR, the installed files (binary, man
page, systemd unit, example and live config, sendmail link), the man page
and unit checked with their own tools, every config key documented, and the
container entrypoint (etc/docker-entrypoint.sh) run for real: configured
from STRICTRELAY_* variables on top of the installed config, it generates a
self-signed certificate, passes check-config, starts the relay (which drops
to an unprivileged user), and a message sent with STARTTLS arrives at a lab
MX; a bad variable stops it with check-config's error.

No Docker engine runs here: the Dockerfile's build stage runs the same
etc/install.sh (into a DESTDIR), which is what this test runs, and its
runtime stage ships the same entrypoint and installed config.

Run: meson test -C build packaging --print-errorlogs
 or: STRICTRELAY_BIN=$PWD/build/strictrelay /usr/bin/python3 tests/integration/test_packaging.py
"""

import os
import pwd
import re
import shutil
import smtplib
import ssl
import stat
import subprocess
import sys
import tempfile
import unittest

SRCDIR = os.environ.get("STRICTRELAY_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "lib"))

from lab import Lab, LabCase, Proc, is_listening, wait_for  # noqa: E402

BIN = os.path.abspath(os.environ.get("STRICTRELAY_BIN") or os.path.join(SRCDIR, "build", "strictrelay"))
BUILD = os.path.dirname(BIN)
PREFIX = "/usr/local"
ENTRYPOINT = os.path.join(SRCDIR, "etc", "docker-entrypoint.sh")
# The unprivileged account the entrypoint test's relay switches to (the
# image uses "strictrelay", which this machine need not have).
RUN_USER = "nobody"

_install = {}


def run(argv, env=None, timeout=120, **kw):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(argv, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, **kw)


def read(path):
    with open(path) as f:
        return f.read()


def install_tree():
    """Runs etc/install.sh once into a temporary DESTDIR (shared by every test).
    BUILD is the build directory meson test runs from: install.sh sets its
    install options (prefix, sysconfdir) and `meson compile` finds nothing
    to rebuild, so no second build of the project is made here."""
    if "dest" not in _install:
        tmp = tempfile.mkdtemp(prefix="strictrelay-install-")
        os.chmod(tmp, 0o755)
        dest = os.path.join(tmp, "root")
        p = run([os.path.join(SRCDIR, "etc", "install.sh"), "--no-deps", "--sendmail-link"],
                env={"DESTDIR": dest, "PREFIX": PREFIX, "BUILD": BUILD}, timeout=600)
        _install.update(tmp=tmp, dest=dest, proc=p)
    p = _install["proc"]
    if p.returncode != 0:
        raise AssertionError("etc/install.sh failed (%d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))
    return _install["dest"]


def tearDownModule():
    if "tmp" in _install:
        shutil.rmtree(_install["tmp"], ignore_errors=True)


def parse_ini(text):
    """{section: {key: value}} of check-config's output (comments dropped)."""
    out, sec = {}, None
    for line in text.splitlines():
        m = re.match(r"^\[([a-z_]+)\]\s*$", line)
        if m:
            sec = out.setdefault(m.group(1), {})
            continue
        m = re.match(r"^([a-z_]+) = (.*?)\s*(# .*)?$", line)
        if m and sec is not None:
            sec[m.group(1)] = m.group(2)
    return out


def code_keys(tmpdir):
    """Every (section, key) the code knows, from check-config's output."""
    conf = os.path.join(tmpdir, "minimal.conf")
    with open(conf, "w") as f:
        f.write("[server]\nhostname = relay.test\n[queue]\nstate_dir = %s\n" % os.path.join(tmpdir, "q"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTRELAY_")}
    p = subprocess.run([BIN, "-c", conf, "check-config"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError("check-config of a minimal config failed: %s" % p.stderr)
    keys = [(s, k) for s, kv in parse_ini(p.stdout).items() for k in kv]
    if len(keys) < 40:
        raise AssertionError("check-config printed only %d keys:\n%s" % (len(keys), p.stdout))
    return keys


def readme_reference():
    """{section: set(keys)} from README.md's "Configuration reference":
    "### `[section]`" headings and table rows "| `key` | ...". """
    with open(os.path.join(SRCDIR, "README.md")) as f:
        text = f.read()
    m = re.search(r"^## Configuration reference\n(.*?)(?=^## )", text, re.M | re.S)
    if not m:
        raise AssertionError("README.md has no \"## Configuration reference\" section")
    out, sec = {}, None
    for line in m.group(1).splitlines():
        h = re.match(r"^### `\[([a-z_]+)\]`", line)
        if h:
            sec = out.setdefault(h.group(1), set())
            continue
        r = re.match(r"^\| `([a-z_]+)` \|", line)
        if r and sec is not None:
            sec.add(r.group(1))
    return out


def conf_file_keys(path):
    """{section: set(keys)} of the "key = value" lines of a config file."""
    out, sec = {}, None
    with open(path) as f:
        for line in f:
            h = re.match(r"^\[([a-z_]+)\]", line)
            if h:
                sec = out.setdefault(h.group(1), set())
                continue
            k = re.match(r"^([a-z_]+) =", line)
            if k and sec is not None:
                sec.add(k.group(1))
    return out


class Installed(unittest.TestCase):
    """etc/install.sh --no-deps --sendmail-link with DESTDIR."""

    @classmethod
    def setUpClass(cls):
        cls.dest = install_tree()
        cls.tmp = tempfile.mkdtemp(prefix="strictrelay-pkg-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, p):
        return os.path.join(self.dest, p.lstrip("/"))

    def test_01_layout(self):
        b = self.path(PREFIX + "/bin/strictrelay")
        self.assertTrue(os.access(b, os.X_OK), b)
        p = run([b, "--version"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^strictrelay \d+\.\d+\.\d+")
        for f in (PREFIX + "/share/man/man8/strictrelay.8",
                  PREFIX + "/lib/systemd/system/strictrelay.service",
                  "/etc/strictrelay/strictrelay.conf.example",
                  "/etc/strictrelay/strictrelay.conf"):
            self.assertTrue(os.path.isfile(self.path(f)), f)
        st = os.stat(self.path("/var/lib/strictrelay"))
        self.assertTrue(stat.S_ISDIR(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o750)
        self.assertTrue(os.path.isdir(self.path("/etc/strictrelay/tls")))
        link = self.path("/usr/sbin/sendmail")
        self.assertTrue(os.path.islink(link))
        self.assertEqual(os.readlink(link), PREFIX + "/bin/strictrelay")

    def test_02_example_is_production_layout(self):
        """The installed example: port 25, /var/lib/strictrelay, /etc/strictrelay/tls,
        user strictrelay; every key set; check-config accepts it."""
        example = self.path("/etc/strictrelay/strictrelay.conf.example")
        with open(example) as f:
            text = f.read()
        self.assertNotRegex(text, r"(?m)^[a-z_]+ = .*#install:")
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        if not os.path.exists(cert):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=t",
                            "-keyout", key, "-out", cert], check=True, capture_output=True)
        # The cert paths do not exist here: check-config reads them, so they
        # are moved by the environment, which shows in the origin column.
        p = run([BIN, "-c", example, "check-config"],
                env={"STRICTRELAY_SERVER_TLS_CERT": cert, "STRICTRELAY_SERVER_TLS_KEY": key})
        self.assertEqual(p.returncode, 0, p.stderr)
        eff = parse_ini(p.stdout)
        self.assertEqual(eff["server"]["listen"], "0.0.0.0:25, [::]:25")
        self.assertEqual(eff["server"]["user"], "strictrelay")
        self.assertEqual(eff["queue"]["state_dir"], "/var/lib/strictrelay")
        file_vals = parse_ini(text)
        self.assertEqual(file_vals["server"]["tls_cert"], "/etc/strictrelay/tls/cert.pem")
        self.assertEqual(file_vals["server"]["tls_key"], "/etc/strictrelay/tls/key.pem")
        defaults = [l for l in p.stdout.splitlines() if " = " in l and l.endswith("# default")]
        self.assertEqual(defaults, [], "keys the installed example does not set")

    def test_03_live_config_made_once(self):
        """The live config is the example without a fixed host name, and the
        setup step run again (as the Dockerfile's runtime stage runs it) keeps
        an edited live config as it is."""
        live = self.path("/etc/strictrelay/strictrelay.conf")
        with open(live) as f:
            text = f.read()
        self.assertRegex(text, r"(?m)^# hostname = ")
        self.assertNotRegex(text, r"(?m)^hostname =")
        with open(live, "a") as f:
            f.write("# edited by the operator\n")
        p = run([os.path.join(SRCDIR, "etc", "install.sh"), "--setup-only"],
                env={"DESTDIR": self.dest, "PREFIX": PREFIX}, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("keeping the existing", p.stderr)
        with open(live) as f:
            self.assertEqual(f.read(), text + "# edited by the operator\n")

    def test_04_man_page(self):
        """groff with every warning on says nothing; man -l renders it; every
        command of `strictrelay --help` (and passwd, sendmail) has an entry."""
        page = self.path(PREFIX + "/share/man/man8/strictrelay.8")
        p = run(["groff", "-mandoc", "-ww", "-z", page])
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        if shutil.which("man"):
            p = run(["man", "--warnings", "-l", page], env={"MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, "")
            self.assertIn("EXIT STATUS", p.stdout)
        with open(page) as f:
            src = f.read()
        entries = set(re.findall(r"^\.It Cm ([a-z-]+)", src, re.M))
        h = run([BIN, "--help"])
        self.assertEqual(h.returncode, 0, h.stderr)
        m = re.search(r"^COMMANDS\n(.*?)^\S", h.stdout, re.M | re.S)
        self.assertIsNotNone(m, h.stdout)
        commands = set(re.findall(r"^    ([a-z][a-z-]+)", m.group(1), re.M))
        self.assertIn("serve", commands)
        missing = (commands | {"passwd", "sendmail"}) - entries
        self.assertEqual(missing, set(), "commands without an entry in strictrelay.8")
        for sec in ("SIGNALS", "ENVIRONMENT", "FILES", "EXIT STATUS", "CONFIGURATION"):
            self.assertRegex(src, r"(?m)^\.Sh %s$" % sec)
        for s in ("SIGTERM", "SIGHUP"):
            self.assertIn(s, src)

    def test_05_systemd_unit(self):
        unit = self.path(PREFIX + "/lib/systemd/system/strictrelay.service")
        with open(unit) as f:
            text = f.read()
        self.assertNotRegex(text, r"@[A-Z]+@", "unfilled placeholder")
        svc = {}
        for line in text.splitlines():
            m = re.match(r"^([A-Za-z]+)=(.*)$", line)
            if m:
                svc.setdefault(m.group(1), []).append(m.group(2))
        self.assertEqual(svc["ExecStart"], [PREFIX + "/bin/strictrelay -c /etc/strictrelay/strictrelay.conf serve"])
        self.assertIn("check-config", svc["ExecStartPre"][0])
        self.assertEqual(svc["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        want = {"ProtectSystem": "strict", "ReadWritePaths": "/var/lib/strictrelay",
                "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
                "Restart": "on-failure", "SystemCallFilter": "@system-service"}
        for k, v in want.items():
            self.assertIn(v, svc.get(k, []), k)
        self.assertEqual(set(svc["CapabilityBoundingSet"][0].split()),
                         {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"})
        self.assertEqual(set(svc["RestrictAddressFamilies"][0].split()), {"AF_INET", "AF_INET6", "AF_UNIX"})
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed: checked by the parser above only")
        # The binary is looked up on this system: point ExecStart= at the
        # staged one (the rest of the unit unchanged); Documentation= must
        # find the installed man page.
        vdir = os.path.join(self.tmp, "unit")
        os.makedirs(vdir, exist_ok=True)
        with open(os.path.join(vdir, "strictrelay.service"), "w") as f:
            f.write(text.replace(PREFIX + "/bin/strictrelay", self.path(PREFIX + "/bin/strictrelay")))
        p = run(["systemd-analyze", "verify", os.path.join(vdir, "strictrelay.service")],
                env={"MANPATH": self.path(PREFIX + "/share/man")})
        self.assertEqual((p.returncode, p.stderr.strip()), (0, ""), p.stdout)

    def test_06_every_key_documented(self):
        """Each key check-config prints is in README.md's Configuration
        reference and in etc/strictrelay.conf, under its section; and neither
        documents a key the code does not know."""
        keys = code_keys(self.tmp)
        readme = readme_reference()
        conf = conf_file_keys(os.path.join(SRCDIR, "etc", "strictrelay.conf"))
        known = {}
        for s, k in keys:
            known.setdefault(s, set()).add(k)
        miss_readme = ["[%s] %s" % (s, k) for s, k in keys if k not in readme.get(s, set())]
        miss_conf = ["[%s] %s" % (s, k) for s, k in keys if k not in conf.get(s, set())]
        self.assertEqual(miss_readme, [], "keys missing from README.md's Configuration reference")
        self.assertEqual(miss_conf, [], "keys missing from etc/strictrelay.conf")
        stale = ["[%s] %s" % (s, k) for s, ks in readme.items() for k in ks
                 if k not in known.get(s, set())]
        self.assertEqual(stale, [], "README.md documents keys the code does not know")


class Entrypoint(LabCase):
    """etc/docker-entrypoint.sh on the installed live config (what the image
    ships), everything else from STRICTRELAY_* variables."""

    @classmethod
    def setUpClass(cls):
        dest = install_tree()
        cls.lab = Lab("packaging")
        cls.lab.mx.add("mx.ep.test")
        cls.mx_ip, cls.mx_port = cls.lab.mx.addr("mx.ep.test")
        cls.lab.start()
        cls.dir = os.path.join(cls.lab.dir, "container")
        os.makedirs(cls.dir)
        os.chmod(cls.dir, 0o755)
        cls.conf = os.path.join(cls.dir, "strictrelay.conf")
        shutil.copy(os.path.join(dest, "etc/strictrelay/strictrelay.conf"), cls.conf)
        os.chmod(cls.conf, 0o644)
        cls.cert = os.path.join(cls.dir, "tls", "cert.pem")
        cls.key = os.path.join(cls.dir, "tls", "key.pem")
        cls.state = os.path.join(cls.dir, "queue")
        cls.ip = cls.lab.ip(0, 1)
        cls.env = {
            "STRICTRELAY_CONFIG": cls.conf,
            "STRICTRELAY_BIN": BIN,
            "STRICTRELAY_SERVER_HOSTNAME": "relay.ep.test",
            "STRICTRELAY_SERVER_LISTEN": "%s:2525" % cls.ip,
            "STRICTRELAY_SERVER_TLS_CERT": cls.cert,
            "STRICTRELAY_SERVER_TLS_KEY": cls.key,
            "STRICTRELAY_SERVER_USER": RUN_USER,
            "STRICTRELAY_METRICS_LISTEN": "%s:9325" % cls.ip,
            "STRICTRELAY_QUEUE_STATE_DIR": cls.state,
            "STRICTRELAY_DELIVERY_DNS_SERVERS": cls.lab.dns.server,
            "STRICTRELAY_DELIVERY_CA_FILE": cls.lab.ca.file,
            # by name: resolved with the lab's DNS, verified against the lab CA
            "STRICTRELAY_ROUTES_DEFAULT": "[mx.ep.test]:%d tls=verify" % cls.mx_port,
        }

    def entrypoint(self, *args, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTRELAY_")}
        env.update(self.env)
        env.update(extra or {})
        return subprocess.run([ENTRYPOINT, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60)

    def test_01_serve_self_signed_starttls_delivery(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTRELAY_")}
        env.update(self.env)
        log = os.path.join(self.dir, "entrypoint.log")
        proc = Proc(self.lab, "entrypoint", [ENTRYPOINT, "serve"], log, env=env,
                    inherit_lock=False).spawn()
        try:
            proc.wait_until(lambda: is_listening(self.ip, 2525), "relay listening on %s:2525" % self.ip,
                            timeout=20)
            with open(log) as f:
                out = f.read()
            self.assertIn("generated a SELF-SIGNED one for relay.ep.test", out)
            self.assertTrue(os.path.isfile(self.cert) and os.path.isfile(self.key))
            # The relay is the entrypoint's process (exec) and runs as RUN_USER,
            # owning the queue; the generated key stays readable for it.
            pw = pwd.getpwnam(RUN_USER)
            wait_for(lambda: self._uid(proc.pid) == pw.pw_uid, timeout=10,
                     what="relay running as %s" % RUN_USER)
            self.assertEqual(os.stat(self.state).st_uid, pw.pw_uid)
            self.assertEqual(os.stat(self.key).st_gid, pw.pw_gid)
            self.assertEqual(stat.S_IMODE(os.stat(self.key).st_mode), 0o640)

            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with smtplib.SMTP(self.ip, 2525, timeout=30) as s:
                s.ehlo("client.test")
                self.assertTrue(s.has_extn("starttls"))
                s.starttls(context=ctx)
                der = s.sock.getpeercert(binary_form=True)
                s.ehlo("client.test")
                s.sendmail("app@example.org", ["bob@example.net"],
                           b"Subject: via the container entrypoint\r\n\r\nhello\r\n")
            with open(self.cert) as f:
                self.assertEqual(ssl.PEM_cert_to_DER_cert(f.read()), der,
                                 "the relay serves the generated certificate")
            msg = self.lab.mx.wait_messages(1, "mx.ep.test")[0]
            self.assertEqual(msg["rcpt_tos"], ["bob@example.net"])
            self.assertIsNotNone(msg["tls"])
            self.assertEqual(msg["tls"]["sni"], "mx.ep.test")

            # HEALTHCHECK: /healthz when [metrics] listen is set, else the
            # SMTP greeting (no metrics listener in this check-config).
            hc = self.entrypoint("healthcheck")
            self.assertEqual(hc.returncode, 0, hc.stderr)
            hc = self.entrypoint("healthcheck", extra={"STRICTRELAY_METRICS_LISTEN": ""})
            self.assertEqual(hc.returncode, 0, hc.stderr)
            with open(log) as f:
                self.assertRegex(f.read(), r"metrics listening on %s:9325" % re.escape(self.ip))
        finally:
            rc = proc.stop(timeout=15)
        self.assertEqual(rc, 0, proc.describe_failure("relay did not exit 0 on SIGTERM"))
        hc = self.entrypoint("healthcheck")
        self.assertNotEqual(hc.returncode, 0, "healthcheck passes with the relay stopped")

    @staticmethod
    def _uid(pid):
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("Uid:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def test_02_check_config_keeps_existing_cert(self):
        """With the certificate in place nothing is generated; the effective
        config shows where each value came from."""
        if not os.path.exists(self.cert):
            self.entrypoint("check-config")
        before = read(self.cert)
        p = self.entrypoint("check-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("SELF-SIGNED", p.stderr)
        self.assertEqual(read(self.cert), before)
        self.assertRegex(p.stdout, r"(?m)^hostname = relay\.ep\.test +# from environment STRICTRELAY_SERVER_HOSTNAME$")
        self.assertRegex(p.stdout, r"(?m)^\* = \[mx\.ep\.test\]:%d tls=verify +# from environment "
                         r"STRICTRELAY_ROUTES_DEFAULT$" % self.mx_port)
        # Other commands pass through with the same config (docker exec ... queue list).
        q = self.entrypoint("queue", "list")
        self.assertEqual(q.returncode, 0, q.stderr)

    def test_03_invalid_env_stops_with_check_config_error(self):
        p = self.entrypoint("serve", extra={"STRICTRELAY_SERVER_MAX_CONNECTIONS": "lots"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("environment STRICTRELAY_SERVER_MAX_CONNECTIONS", p.stderr)
        self.assertIn("not starting", p.stderr)
        p = self.entrypoint("serve", extra={"STRICTRELAY_SERVER_NO_SUCH_KEY": "1"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("STRICTRELAY_SERVER_NO_SUCH_KEY: unknown key in [server]", p.stderr)
        p = self.entrypoint("serve", extra={"STRICTRELAY_SERVER_USER": "no-such-user-here"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("no-such-user-here", p.stderr)
        self.assertFalse(is_listening(self.ip, 2525))


if __name__ == "__main__":
    unittest.main()
