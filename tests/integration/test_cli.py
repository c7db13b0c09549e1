#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The command line: --version, --help, COMMAND --help, usage errors (exit 2),
check-config (effective settings with their origin; FILE:LINE errors, exit 1;
environment overrides) and the queue commands against a running relay.

Run: meson test -C build cli --print-errorlogs
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relaycase import QID_RE, SRCDIR, RelayCase  # noqa: E402

BIN = os.environ.get("STRICTRELAY_BIN") or os.path.join(SRCDIR, "build", "strictrelay")
SECTIONS = ["server", "queue", "delivery", "auth", "routes", "requiretls", "mta_sts", "tlsrpt",
            "metrics", "log"]


def clean_env(extra=None):
    """The environment without any STRICTRELAY_<SECTION>_<KEY> override."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("STRICTRELAY_") and k.split("_")[1].lower() in SECTIONS)}
    env.update(extra or {})
    return env


def run(*args, env=None, timeout=30):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=clean_env(env))


class CLI(RelayCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="strictrelay-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def conf(self, text, name="strictrelay.conf"):
        """Writes a config file (with a private state_dir unless text sets [queue])."""
        path = os.path.join(self.tmp, name)
        if "[queue]" not in text:
            text += "\n[queue]\nstate_dir = %s\n" % os.path.join(self.tmp, "state")
        with open(path, "w") as f:
            f.write(text)
        return path

    # ------------------------------------------------------------------ version, help
    def test_version(self):
        with open(os.path.join(SRCDIR, "meson.build")) as f:
            version = re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)
        for args in (["--version"], ["-V"], ["version"], ["-c", "/nonexistent.conf", "--version"]):
            with self.subTest(args=args):
                p = run(*args)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout, "strictrelay %s\n" % version)
                self.assertEqual(p.stderr, "")

    def test_help(self):
        for args in (["--help"], ["-h"], ["help"]):
            with self.subTest(args=args):
                p = run(*args)
                self.assertEqual(p.returncode, 0, p.stderr)
                out = p.stdout
                for word in ("serve", "check-config", "queue list", "queue show", "flush", "hold",
                             "release", "delete", "version", "--version", "--help", "-c",
                             "STRICTRELAY_", "EXIT STATUS"):
                    self.assertIn(word, out)
        # no command at all: the help on stderr, usage error
        p = run()
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, "")
        self.assertIn("check-config", p.stderr)

    def test_command_help(self):
        expect = {
            "serve": ["strictrelay serve", "SIGTERM"],
            "check-config": ["strictrelay check-config", "FILE:LINE"],
            "queue": ["strictrelay queue", "list", "show ID", "flush", "hold ID", "release ID",
                      "delete ID", "--body"],
        }
        for cmd, words in expect.items():
            # works without any readable config
            for args in ([cmd, "--help"], [cmd, "-h"], ["--help", cmd], ["help", cmd],
                         ["-c", "/nonexistent.conf", cmd, "--help"]):
                with self.subTest(args=args):
                    p = run(*args)
                    self.assertEqual(p.returncode, 0, p.stderr)
                    for w in words:
                        self.assertIn(w, p.stdout)
                    self.assertEqual(p.stderr, "")

    def test_usage_errors(self):
        ok = self.conf("[server]\nhostname = cli.test\n")
        cases = [
            (["frobnicate"], r'unknown command "frobnicate"'),
            (["-c"], r"-c needs a file name"),
            (["-c", ok, "serve", "extra"], r'serve: unexpected argument "extra"'),
            (["-c", ok, "check-config", "extra"], r'check-config: unexpected argument "extra"'),
            (["-c", ok, "queue"], r"queue: missing subcommand"),
            (["-c", ok, "queue", "nuke"], r'queue: unknown subcommand "nuke"'),
            (["-c", ok, "queue", "list", "extra"], r"queue: list takes no arguments"),
            (["-c", ok, "queue", "show"], r"queue: show needs a queue id"),
            (["-c", ok, "queue", "hold"], r"queue: hold needs a queue id"),
            (["-c", ok, "queue", "delete"], r"queue: delete needs a queue id"),
            (["-c", ok, "queue", "show", "not-an-id"], r'"not-an-id" is not a queue id'),
            (["-c", ok, "queue", "hold", "M83Z8QXWP8F"], r'"M83Z8QXWP8F" is not a queue id'),
            (["-c", ok, "queue", "delete", "m83z8qxwp8fy!"], r"is not a queue id"),
        ]
        for args, rx in cases:
            with self.subTest(args=args):
                p = run(*args)
                self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
                self.assertRegex(p.stderr, rx)
                self.assertEqual(p.stdout, "")

    # ------------------------------------------------------------------ check-config
    def test_check_config_prints_effective_settings(self):
        path = self.conf("# test config\n"
                         "[server]\n"
                         "hostname = cli.test\n"
                         "max_message_size = 10M   # comment\n"
                         "listen = 127.0.0.1:2525, [::1]:2526\n"
                         "[routes]\n"
                         "example.internal = [10.0.0.5]:25 tls=verify\n")
        p = run("check-config", "-c", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        for sec in SECTIONS:
            self.assertRegex(out, r"(?m)^\[%s\]$" % sec)
        p_ = re.escape(path)
        self.assertRegex(out, r"(?m)^hostname = cli\.test\s+# from %s:3$" % p_)
        self.assertRegex(out, r"(?m)^max_message_size = 10M\s+# from %s:4$" % p_)
        self.assertRegex(out, r"(?m)^listen = 127\.0\.0\.1:2525, \[::1\]:2526\s+# from %s:5$" % p_)
        self.assertRegex(out, r"(?m)^example\.internal = \[10\.0\.0\.5\]:25 tls=verify\s+# from %s:7$" % p_)
        self.assertRegex(out, r"(?m)^max_connections = 1000\s+# default$")
        self.assertRegex(out, r"(?m)^bare_newline = reject\s+# default$")
        self.assertRegex(out, r"(?m)^state_dir = %s\s+# from %s:\d+$"
                         % (re.escape(os.path.join(self.tmp, "state")), p_))
        self.assertIn("configuration OK", p.stderr)
        # -c after the command and --config= work the same
        self.assertEqual(run("-c", path, "check-config").stdout, out)
        self.assertEqual(run("--config=" + path, "check-config").stdout, out)

    def test_check_config_errors(self):
        cert, key = self.lab.ca.issue("relay.test")
        junk = os.path.join(self.tmp, "junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        cases = [
            ("[server]\nhostname = a.test\nbogus = 1\n", 3, r'unknown key "bogus" in \[server\]'),
            ("[nosuch]\na = b\n", 1, r"unknown section \[nosuch\]"),
            ("hostname = a.test\n", 1, r"key outside any section"),
            ("[server]\nhostname\n", 2, r'expected "key = value"'),
            ("[server]\nmax_connections = lots\n", 2, r'max_connections: "lots" is not a number'),
            ("[server]\nmax_connections = 0\n", 2, r'max_connections: "0" is out of range'),
            ("[server]\ncommand_timeout = 5x\n", 2, r'command_timeout: "5x" is not a duration'),
            ("[server]\nmax_message_size = huge\n", 2, r"max_message_size"),
            ("[server]\nbare_newline = maybe\n", 2, r'bare_newline: "maybe" is not one of: reject, normalize'),
            ("[server]\nlisten = nowhere\n", 2, r"listen"),
            ("[server]\nrelay_networks = 10.0.0.0/33\n", 2, r"relay_networks"),
            ("[delivery]\nrequire_tls = perhaps\n", 2, r"require_tls"),
            ("[routes]\nexample.test = [10.0.0.5]:25 tls=sometimes\n", 2, r"route \"example\.test\""),
            ("\n\n[server]\ntls_cert = /nonexistent/cert.pem\ntls_key = %s\n" % key, 4,
             r'tls_cert "/nonexistent/cert\.pem": No such file or directory'),
            ("[server]\ntls_cert = %s\ntls_key = %s\n" % (junk, key), 2,
             r'tls_cert "%s": no PEM certificate found' % re.escape(junk)),
            ("[server]\ntls_cert = %s\ntls_key = %s\n" % (self.tmp, key), 2,
             r'tls_cert "%s": is a directory' % re.escape(self.tmp)),
            ("[server]\ntls_cert = %s\ntls_key = /nonexistent/key.pem\n" % cert, 3,
             r'tls_key "/nonexistent/key\.pem"'),
        ]
        for i, (text, line, rx) in enumerate(cases):
            with self.subTest(config=text):
                path = self.conf(text, name="bad%d.conf" % i)
                p = run("check-config", "-c", path)
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                self.assertRegex(p.stderr, r"^strictrelay: %s:%d: .*%s" % (re.escape(path), line, rx))
                self.assertEqual(p.stdout, "")
        # the same errors stop `serve` and the queue commands, before anything starts
        path = self.conf(cases[0][0], name="bad-serve.conf")
        for args in (["serve"], ["queue", "list"]):
            p = run("-c", path, *args, timeout=10)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("%s:3: unknown key" % path, p.stderr)
        # a missing config file is named
        p = run("check-config", "-c", os.path.join(self.tmp, "missing.conf"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s: No such file or directory" % os.path.join(self.tmp, "missing.conf"), p.stderr)

    def test_environment_overrides(self):
        path = self.conf("[server]\nhostname = file.test\nmax_connections = 5\n")
        p = run("check-config", "-c", path, env={"STRICTRELAY_SERVER_MAX_CONNECTIONS": "abc"})
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"STRICTRELAY_SERVER_MAX_CONNECTIONS: \"abc\" is not a number")
        self.assertEqual(p.stdout, "")
        p = run("check-config", "-c", path, env={"STRICTRELAY_SERVER_BOGUS": "1"})
        self.assertEqual(p.returncode, 1)
        self.assertIn("STRICTRELAY_SERVER_BOGUS", p.stderr)
        # a valid override wins over the file and says where it came from
        p = run("check-config", "-c", path, env={"STRICTRELAY_SERVER_MAX_CONNECTIONS": "7",
                                                 "STRICTRELAY_LOG_FORMAT": "json"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"(?m)^max_connections = 7\s+# from environment "
                                   r"STRICTRELAY_SERVER_MAX_CONNECTIONS$")
        self.assertRegex(p.stdout, r"(?m)^format = json\s+# from environment STRICTRELAY_LOG_FORMAT$")
        self.assertRegex(p.stdout, r"(?m)^hostname = file\.test\s+# from %s:2$" % re.escape(path))
        # serve uses it too
        r = self.relay(env={"STRICTRELAY_SERVER_HOSTNAME": "env.test"})
        c = self.raw(r, greeting=False)
        code, lines = c.read_reply()
        self.assertEqual((code, lines), (220, ["env.test ESMTP strictrelay"]))
        p = r.cli("check-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"(?m)^hostname = env\.test\s+# from environment STRICTRELAY_SERVER_HOSTNAME$")

    # ------------------------------------------------------------------ queue
    def test_queue_list_and_show_on_empty_queue(self):
        r = self.relay()
        p = r.cli("queue", "list")
        self.assertEqual((p.returncode, p.stdout, p.stderr), (0, "Queue is empty.\n", ""))
        p = r.cli("queue", "show", "M83Z8QXWP8FY")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no message M83Z8QXWP8FY in the queue", p.stderr)
        p = r.cli("queue", "show", "bad")
        self.assertEqual(p.returncode, 2)
        self.assertIn('"bad" is not a queue id', p.stderr)
        p = r.cli("queue", "flush")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^0 recipients due now")

    def _swaks(self, r, to, sender="a@relay.test"):
        rc, out = self.swaks(r, "--to", to, "--from", sender)
        self.assertEqual(rc, 0, out)
        return re.search(r"queued as (%s)" % QID_RE, out).group(1)

    def test_queue_management(self):
        r = self.relay()
        q1 = self._swaks(r, "one@example.test,two@example.net", sender="alice@relay.test")
        q2 = self._swaks(r, "three@example.org")
        listed = {m["id"]: m for m in self.queue_list(r)}
        self.assertEqual(sorted(listed), sorted([q1, q2]))
        self.assertEqual(listed[q1]["state"], "queued")
        self.assertEqual(listed[q1]["nrcpt"], 2)
        self.assertEqual(listed[q1]["sender"], "alice@relay.test")
        self.assertEqual([a for _, a in listed[q1]["rcpts"]], ["one@example.test", "two@example.net"])
        show = self.queue_show(r, q1)
        self.assertEqual((show["id"], show["state"], show["flags"]), (q1, "active", "-"))

        # hold
        p = r.cli("queue", "hold", q1)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "%s: held: not delivered until released "
                                   "(deliveries already under way finish)\n" % q1)
        states = {m["id"]: m["state"] for m in self.queue_list(r)}
        self.assertEqual(states, {q1: "held", q2: "queued"})
        show = self.queue_show(r, q1)
        self.assertEqual(show["state"], "held")
        self.assertTrue(any(re.match(r"\S+ hold by the queue command$", h) for h in show["history"]),
                        show["text"])
        # release
        p = r.cli("queue", "release", q1)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "%s: released\n" % q1)
        self.assertEqual({m["id"]: m["state"] for m in self.queue_list(r)}, {q1: "queued", q2: "queued"})
        self.assertEqual(self.queue_show(r, q1)["state"], "active")
        # flush one, flush all
        p = r.cli("queue", "flush", q1)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("%s: due now" % q1), p.stdout)
        p = r.cli("queue", "flush")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^\d+ recipients? due now")
        hist = [h.split(None, 1)[1] for h in self.queue_show(r, q1)["history"]]
        self.assertRegex(hist[0], r"^received from=<alice@relay\.test> nrcpt=2 ")
        self.assertEqual([h for h in hist if h.endswith("by the queue command")],
                         ["hold by the queue command", "release by the queue command",
                          "flush by the queue command"])
        # delete
        p = r.cli("queue", "delete", q2)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "%s: deleted (no bounce is sent)\n" % q2)
        self.assertEqual(self.queue_ids(r), [q1])
        p = r.cli("queue", "show", q2)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("state:       no longer queued", p.stdout)
        self.assertNotIn("recipients:", p.stdout)
        # a message that is not (or no longer) in the queue: exit 1, named
        for sub in ("hold", "release", "delete", "flush"):
            for qid in (q2, "M83Z8QXWP8FY"):
                with self.subTest(sub=sub, qid=qid):
                    p = r.cli("queue", sub, qid)
                    self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                    self.assertIn("queue %s: no message %s in the queue" % (sub, qid), p.stderr)
                    self.assertEqual(p.stdout, "")
        # the relay kept running and still takes mail next to the CLI
        self.assert_alive(r)
        q3 = self._swaks(r, "four@example.test")
        self.assertEqual(self.queue_ids(r), [q1, q3])
        # the queue survives a restart (state included)
        r.cli("queue", "hold", q3)
        r.restart()
        self.assertEqual({m["id"]: m["state"] for m in self.queue_list(r)}, {q1: "queued", q3: "held"})


if __name__ == "__main__":
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2)
    sys.stderr.write("cli: %.1f s\n" % (time.monotonic() - t0))
    sys.exit(0 if prog.result.wasSuccessful() else 1)
