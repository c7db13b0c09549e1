# SPDX-License-Identifier: MIT
"""A private Postfix instance as a "real MTA" receiving peer (tests/lib/lab.py).

One Postfix master serves several MX host names, one smtpd listener per
IP:port (127.N.3.x:2525 by default), each with its own myhostname and lab
certificate, and delivers every message (any domain) into one Maildir.
Started as `master -d -c DIR/etc` so the recorded PID is the master's own.

    pf = lab.postfix_mx(["mx.pf.test", {"name": "plain.pf.test", "tls": "none"}])
    lab.dns.mx("pf.test", "mx.pf.test")
    ...
    msgs = pf.wait_messages(1)     # [{"path", "bytes", "message" (email.message.Message)}]

Postfix 3.7 has no REQUIRETLS: `MAIL FROM:<a> REQUIRETLS` gets 555 5.5.4.
"""

import email
import email.policy
import grp
import os
import pwd
import time

import lab as _lab

MASTER = "/usr/lib/postfix/sbin/master"

MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixMX:
    """listeners: host names, or dicts {name, ip (default next 127.N.3.x),
    port (2525), tls: "may" (default) | "encrypt" | "none", cert (None: lab
    CA for name; (cert, key); or dict of ca.issue() options)}.
    main_cf: extra main.cf settings {key: value}. dns: add A records."""

    _count = 0

    def __init__(self, lab, listeners, main_cf=None, dns=True):
        PostfixMX._count += 1
        self.lab = lab
        self.index = PostfixMX._count
        self.dir = os.path.join(lab.dir, "postfix%d" % self.index)
        self.etc = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.logdir = os.path.join(self.dir, "log")
        self.mail = os.path.join(self.dir, "mail")
        self.maildir = os.path.join(self.mail, "sink")
        self.log_path = os.path.join(self.logdir, "maillog")
        self.main_cf = dict(main_cf or {})
        self.listeners = []
        self._proc = None
        used = {(p["ip"], p["port"]) for other in lab.postfixes for p in other.listeners}
        n = 1
        for item in listeners:
            spec = {"name": item} if isinstance(item, str) else dict(item)
            spec["name"] = spec["name"].rstrip(".").lower()
            spec.setdefault("port", _lab.SMTP_PORT)
            spec.setdefault("tls", "may")
            if spec["tls"] not in ("may", "encrypt", "none"):
                raise ValueError("postfix listener tls must be may, encrypt or none")
            if not spec.get("ip"):
                while (lab.ip(3, n), spec["port"]) in used:
                    n += 1
                spec["ip"] = lab.ip(3, n)
            lab._check_ip(spec["ip"])
            used.add((spec["ip"], spec["port"]))
            cert = spec.get("cert")
            if spec["tls"] != "none":
                if cert is None:
                    cert = lab.ca.issue(spec["name"])
                elif isinstance(cert, dict):
                    cert = lab.ca.issue(spec["name"], **cert)
                spec["cert"], spec["key"] = cert
            self.listeners.append(spec)
            if dns:
                lab.dns.a(spec["name"], spec["ip"])

    def _write(self):
        pw = pwd.getpwnam("postfix")
        gid = grp.getgrnam("postfix").gr_gid
        for d in (self.etc, self.queue):
            os.makedirs(d, exist_ok=True)
        for d in (self.data, self.logdir, self.mail):
            os.makedirs(d, exist_ok=True)
            os.chown(d, pw.pw_uid, 0)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.listeners[0]["name"] if self.listeners else "postfix.test",
            "mydomain": "postfix.test",
            "myorigin": "postfix.test",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "virtual_mailbox_domains": "static:ALL",
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": "static:sink/",
            "virtual_uid_maps": "static:%d" % pw.pw_uid,
            "virtual_gid_maps": "static:%d" % gid,
            "virtual_minimum_uid": "1",
            "virtual_mailbox_limit": "0",
            "message_size_limit": "52428800",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.logdir,
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
            "smtputf8_enable": "yes",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP Postfix (lab)",
            "import_environment": "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C",
        }
        main.update(self.main_cf)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write("# generated by tests/lib/postfix.py\n")
            for k, v in main.items():
                f.write("%s = %s\n" % (k, v))
        lines = ["# generated by tests/lib/postfix.py"]
        for spec in self.listeners:
            opts = ["-o myhostname=%s" % spec["name"]]
            if spec["tls"] == "none":
                opts.append("-o smtpd_tls_security_level=none")
            else:
                opts.append("-o smtpd_tls_security_level=%s" % spec["tls"])
                opts.append("-o smtpd_tls_chain_files=%s,%s" % (spec["key"], spec["cert"]))
            lines.append("%s:%d inet n - n - - smtpd %s" % (spec["ip"], spec["port"], " ".join(opts)))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write("\n".join(lines) + "\n" + MASTER_CF_SERVICES)
        # Postfix re-reads a main.cf that is only a moment old until it has
        # aged (~2 s of start-up delay): backdate the files.
        past = time.time() - 60
        for fn in ("main.cf", "master.cf"):
            os.utime(os.path.join(self.etc, fn), (past, past))

    def _make_queue(self):
        """The queue layout `postfix check` would create (it takes ~3 s)."""
        uid = pwd.getpwnam("postfix").pw_uid
        postdrop = grp.getgrnam("postdrop").gr_gid
        os.makedirs(self.queue, exist_ok=True)
        os.chmod(self.queue, 0o755)
        for d in ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                  "incoming", "private", "saved", "trace"):
            path = os.path.join(self.queue, d)
            os.makedirs(path, exist_ok=True)
            os.chown(path, uid, 0)
            os.chmod(path, 0o700)
        for d, mode in (("maildrop", 0o730), ("public", 0o710)):
            path = os.path.join(self.queue, d)
            os.makedirs(path, exist_ok=True)
            os.chown(path, uid, postdrop)
            os.chmod(path, mode)
        os.makedirs(os.path.join(self.queue, "pid"), exist_ok=True)

    def start(self, timeout=20):
        self._write()
        self._make_queue()
        self._proc = _lab.Proc(self.lab, "postfix%d" % self.index, [MASTER, "-d", "-c", self.etc],
                               os.path.join(self.dir, "master.out"),
                               env=dict(os.environ, MAIL_CONFIG=self.etc)).spawn()
        addrs = [(s["ip"], s["port"]) for s in self.listeners]
        try:
            self._proc.wait_until(lambda: all(_lab.is_listening(ip, port) for ip, port in addrs),
                                  "postfix listening on %s" % ", ".join("%s:%d" % a for a in addrs),
                                  timeout=timeout)
        except _lab.LabError as e:
            raise _lab.LabError("%s\nmaillog:\n%s" % (e, _lab._tail(self.log_path)))
        return self

    def running(self):
        return self._proc is not None and self._proc.running()

    def stop(self):
        if self._proc is not None:
            self._proc.stop(timeout=5)

    def addr(self, name):
        for s in self.listeners:
            if s["name"] == name.rstrip(".").lower():
                return s["ip"], s["port"]
        raise KeyError(name)

    def messages(self):
        """Delivered messages, oldest first: {"path", "bytes", "message"}."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            if not os.path.isdir(d):
                continue
            for fn in os.listdir(d):
                path = os.path.join(d, fn)
                with open(path, "rb") as f:
                    data = f.read()
                out.append({"path": path, "bytes": data, "mtime": os.stat(path).st_mtime,
                            "message": email.message_from_bytes(data, policy=email.policy.default)})
        out.sort(key=lambda m: (m["mtime"], m["path"]))
        return out

    def wait_messages(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= n:
                return msgs
            if time.monotonic() > deadline:
                raise _lab.LabError("postfix%d: expected %d message(s) within %.0f s, got %d; maillog:\n%s"
                                    % (self.index, n, timeout, len(msgs), _lab._tail(self.log_path)))
            time.sleep(0.05)

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""
