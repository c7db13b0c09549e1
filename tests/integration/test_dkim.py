#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""tlsrpt/dkim.c and tlsrpt/mail.c against an independent verifier: Debian's
dkimpy (python3-dkim, with python3-nacl for ed25519-sha256).

tests/tools/dkimsign (DKIMSIGN_BIN) signs; keys come from `openssl genpkey`
(RSA-2048, Ed25519; RSA-1024 for the warning; EC P-256 for the refusal).
dkim.verify() gets the key record from a dnsfunc that returns what
`dkimsign --public-txt` printed (no DNS involved). Checks, for both keys:
  - several messages verify: plain, folded headers with trailing blanks,
    no body at all, an empty body, a body of blank lines only, long lines,
    8-bit text, repeated header fields signed with --headers, a last line
    without CR LF (as SMTP transports it), and the TLS report mail built by
    tlsrpt_mail_sign() with a binary gzip attachment;
  - our bh= equals a hash of dkimpy's own relaxed body canonicalization;
  - the DKIM-Signature has no l=, c=relaxed/relaxed, the right a=, h= with
    the TLS-Report-* fields for the report mail, lines of at most 78;
  - what relaxed canonicalization allows still verifies (blanks added at
    line ends, a header refolded); tampering FAILS: a changed body octet,
    a changed attachment, a changed signed header, an added From, the
    wrong key in DNS;
  - the report mail verifies in dkimpy's strict TLSRPT mode (RFC 8460:
    key record with s=tlsrpt);
  - key records: "v=DKIM1; k=...; s=tlsrpt; p=..." by default.
    dkimpy 1.1.4 accepts only a single service type and drops the key for
    a list (RFC 6376 3.6.1 allows one); that case is reported as a NOTE,
    and verification is checked with --service "" (no s=) and
    --service tlsrpt instead.
Exit 77 (skipped) when dkimpy or nacl is missing (etc/install-deps.sh --test
installs them).
"""

import base64
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import dkim
    import dkim.util
    from dkim.canonicalization import Relaxed
    import nacl.signing  # noqa: F401  (dkimpy needs it for ed25519)
except ImportError as e:
    print("SKIP: python3-dkim / python3-nacl missing (etc/install-deps.sh --test): %s" % e)
    sys.exit(77)

DKIMSIGN = os.environ["DKIMSIGN_BIN"]
DOMAIN = "sender.example"
SELECTOR = "tlsrpt2026"
FAILURES = []
NOTES = []

TLSRPT_H = ["from", "to", "subject", "date", "message-id", "mime-version", "content-type",
            "tls-report-domain", "tls-report-submitter"]


def dkimpy_version():
    try:
        import importlib.metadata
        return importlib.metadata.version("dkimpy")
    except Exception:
        return "(unknown version)"


def check(cond, what):
    if cond:
        print("ok   %s" % what)
    else:
        print("FAIL %s" % what)
        FAILURES.append(what)
    return cond


def run(args, stdin=b""):
    p = subprocess.run([DKIMSIGN] + args, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def genkey(path, *args):
    subprocess.run(["openssl", "genpkey", "-out", path] + list(args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def public_txt(key, service=None):
    args = ["--public-txt"] + (["--service", service] if service is not None else []) + [key]
    rc, out, err = run(args)
    if rc != 0:
        raise RuntimeError("dkimsign --public-txt failed: %s" % err)
    return out.strip()


def dnsfunc_for(txt):
    want = ("%s._domainkey.%s." % (SELECTOR, DOMAIN)).encode()

    def dnsfunc(name, timeout=5):
        return txt if name == want else None
    return dnsfunc


def verify(msg, txt, tlsrpt=False):
    return dkim.verify(msg, dnsfunc=dnsfunc_for(txt), tlsrpt=tlsrpt)


def split(msg):
    """(the DKIM-Signature field as sent, its tags, the rest)"""
    m = re.match(rb"(DKIM-Signature:.*?\r\n)(?![ \t])", msg, re.S)
    field = m.group(1)
    value = field.split(b":", 1)[1]
    tags = dkim.util.parse_tag_value(re.sub(rb"\r\n", b"", value))
    tags = {k: re.sub(rb"\s+", b"", v) for k, v in tags.items()}
    return field, tags, msg[len(field):]


def body_of(msg):
    i = msg.find(b"\r\n\r\n")
    return b"" if i < 0 else msg[i + 4:]


def sign(key, msg, headers=None):
    args = (["--headers", headers] if headers else []) + [key, DOMAIN, SELECTOR]
    rc, out, err = run(args, msg)
    if rc != 0:
        raise RuntimeError("dkimsign failed (%d): %s" % (rc, err))
    return out


def crlf(s):
    return s.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def messages():
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    base = ("From: TLS Reports <tlsrpt@sender.example>\r\nTo: rua@example.net\r\n"
            "Date: %s\r\nMessage-ID: <m1@sender.example>\r\n" % date).encode()
    long_value = b"x" * 900
    long_line = b"y" * 998
    big = b"".join(b"line %d of a larger body, with  double  blanks \r\n" % i
                   for i in range(3000))
    return [
        ("plain", base + b"Subject: plain\r\n\r\nHello.\r\n", None),
        ("folded headers, trailing blanks",
         b"From: \"Reporting, Inc.\"   \r\n\t<tlsrpt@sender.example>   \r\n"
         b"To:   rua@example.net,\r\n  other@example.net\t\r\n"
         b"Subject: Report Domain: example.net\r\n Submitter: sender.example\r\n"
         b" Report-ID: <x@y>  \r\n"
         b"TLS-Report-Domain:  example.net  \r\nTLS-Report-Submitter:\tsender.example\r\n"
         b"\r\nbody line with trailing blanks   \t\r\n  indented   words\twith   tabs\r\n"
         b"\t\r\n\r\n\r\n", None),
        ("no body at all", base + b"Subject: no body\r\n", None),
        ("empty body", base + b"Subject: empty body\r\n\r\n", None),
        ("blank lines only", base + b"Subject: blank\r\n\r\n\r\n \t \r\n\r\n", None),
        ("long lines", base + b"Subject: " + long_value + b"\r\n\r\n" + long_line + b"\r\n"
         + big, None),
        ("8-bit", base + "Subject: caf\u00e9 \u2013 r\u00e9sum\u00e9\r\n\r\n"
         "Gr\u00fc\u00dfe, \u65e5\u672c\r\n".encode("utf-8"), None),
        ("repeated fields, --headers",
         base + b"X-Trace: one\r\nSubject: dups\r\nX-Trace: two\r\nx-trace:  three \r\n"
         b"\r\nbody\r\n", "From,To,Subject,X-Trace,X-Missing,from"),
    ]


def check_sig_field(name, signed, alg, headers=None):
    field, tags, rest = split(signed)
    check(b"l" not in tags, "%s: no l= tag" % name)
    check(tags.get(b"a") == alg.encode(), "%s: a=%s" % (name, alg))
    check(tags.get(b"c") == b"relaxed/relaxed", "%s: c=relaxed/relaxed" % name)
    check(tags.get(b"d") == DOMAIN.encode() and tags.get(b"s") == SELECTOR.encode(),
          "%s: d= and s=" % name)
    t = int(tags.get(b"t", b"0"))
    check(abs(t - time.time()) < 300, "%s: t= is now" % name)
    lines = field.split(b"\r\n")[:-1]
    check(all(len(x) <= 78 for x in lines) and all(x[:1] == b" " for x in lines[1:]),
          "%s: DKIM-Signature folded at <= 78 (%s)" % (name, [len(x) for x in lines]))
    if headers is not None:
        check([h.lower() for h in tags[b"h"].decode().split(":")] == headers,
              "%s: h=%s" % (name, tags[b"h"].decode()))
    # bh= against dkimpy's own relaxed body canonicalization
    bh = base64.b64encode(hashlib.sha256(Relaxed.canonicalize_body(body_of(rest))).digest())
    check(tags.get(b"bh") == bh, "%s: bh= equals dkimpy's relaxed body hash" % name)
    return rest


def test_messages(keys, txts):
    for kname, key, alg in keys:
        any_txt = txts[kname]["any"]
        for name, msg, headers in messages():
            label = "%s %s" % (kname, name)
            try:
                one_message(label, key, alg, any_txt, msg, headers)
            except Exception as e:  # report and go on with the next message
                check(False, "%s raised %r" % (label, e))
        # last line without CR LF: SMTP transports it with one
        msg = b"From: tlsrpt@sender.example\r\nTo: rua@example.net\r\n\r\nlast line   "
        signed = sign(key, msg)
        check(verify(signed + b"\r\n", any_txt),
              "%s: last line without CR LF verifies as transported" % kname)


def one_message(label, key, alg, any_txt, msg, headers):
    signed = sign(key, msg, headers)
    rest = check_sig_field(label, signed, alg)
    check(rest == msg, "%s: message after the header unchanged" % label)
    check(verify(signed, any_txt), "%s: dkimpy verifies" % label)
    if headers:
        _, tags, _ = split(signed)
        check(tags[b"h"] == b"From:To:Subject:X-Trace:X-Trace:X-Trace",
              "%s: h= lists each occurrence, absent and repeated names once" % label)
        swapped = signed.replace(b"X-Trace: one", b"X-Trace: 1ne")
        check(not verify(swapped, any_txt), "%s: changed X-Trace FAILS" % label)
    # relaxed: blanks at line ends and refolding do not matter
    if b"\r\n\r\n" in signed:
        head, body = signed.split(b"\r\n\r\n", 1)
        body2 = body.replace(b"\r\n", b"  \r\n")
        head2 = head.replace(b"\r\nSubject: ", b"\r\nSubject:\r\n\t ", 1)
        check(verify(head2 + b"\r\n\r\n" + body2, any_txt),
              "%s: blanks at line ends and a refolded Subject still verify" % label)
        tampered = head + b"\r\n\r\n" + body + b"X\r\n"
        check(not verify(tampered, any_txt), "%s: a changed body FAILS" % label)
    tampered = re.sub(rb"\r\nSubject: ?", b"\r\nSubject: Re: ", signed, count=1)
    check(not verify(tampered, any_txt), "%s: a changed Subject FAILS" % label)
    extra = signed.replace(b"\r\nFrom:", b"\r\nFrom: evil@attacker.example\r\nFrom:", 1)
    check(not verify(extra, any_txt), "%s: an added From FAILS" % label)


def report_gzip():
    js = (b'{"organization-name":"Sender Org","date-range":{"start-datetime":'
          b'"2026-11-22T00:00:00Z","end-datetime":"2026-11-22T23:59:59Z"},'
          b'"contact-info":"tlsrpt@sender.example","report-id":'
          b'"20261122.example.net.001@sender.example","policies":[]}')
    # incompressible bytes too, so the attachment has many base64 lines
    data = js + b"\n" + os.urandom(5000)
    return gzip.compress(data), data


def test_report_mail(keys, txts):
    gz, plain = report_gzip()
    fname = "sender.example!example.net!1795305600!1795391999!001.json.gz"
    for kname, key, alg in keys:
        rc, signed, err = run(["--tlsrpt-mail", "--seed", "T1", key, DOMAIN, SELECTOR,
                               "tlsrpt-noreply@sender.example", "tls-reports@example.net",
                               "example.net", "sender.example",
                               "20261122.example.net.001@sender.example", fname], gz)
        if not check(rc == 0, "%s report mail: built and signed (%s)" % (kname, err.strip())):
            continue
        label = "%s report mail" % kname
        check_sig_field(label, signed, alg, TLSRPT_H)
        check(verify(signed, txts[kname]["any"]), "%s: dkimpy verifies" % label)
        check(verify(signed, txts[kname]["tlsrpt"], tlsrpt="strict"),
              "%s: dkimpy verifies in strict TLSRPT mode (s=tlsrpt)" % label)
        check(verify(signed, txts[kname]["tlsrpt"], tlsrpt=True),
              "%s: dkimpy verifies in TLSRPT mode" % label)
        # the attachment really is our gzip, byte for byte
        import email
        m = email.message_from_bytes(signed)
        parts = m.get_payload()
        check(m.get_content_type() == "multipart/report"
              and m.get_param("report-type") == "tlsrpt"
              and parts[1].get_payload(decode=True) == gz
              and gzip.decompress(parts[1].get_payload(decode=True)) == plain
              and parts[1].get_filename() == fname,
              "%s: multipart/report with the exact gzip attachment" % label)
        # tampering
        i = signed.index(b"Content-Transfer-Encoding: base64\r\n")
        j = signed.index(b"\r\n\r\n", i) + 4 + 10
        c = signed[j:j + 1]
        t = signed[:j] + (b"B" if c != b"B" else b"C") + signed[j + 1:]
        check(not verify(t, txts[kname]["any"]), "%s: a changed attachment FAILS" % label)
        t = signed.replace(b"TLS-Report-Domain: example.net", b"TLS-Report-Domain: example.org")
        check(t != signed and not verify(t, txts[kname]["any"]),
              "%s: a changed TLS-Report-Domain FAILS" % label)
        t = signed.replace(b"TLS-Report-Submitter: sender.example",
                           b"TLS-Report-Submitter: attacker.example")
        check(t != signed and not verify(t, txts[kname]["any"]),
              "%s: a changed TLS-Report-Submitter FAILS" % label)
        other = txts["other-rsa"]["any"]
        check(not verify(signed, other), "%s: the wrong key in DNS FAILS" % label)
        # the default record, s=tlsrpt, verifies in dkimpy's strict TLSRPT mode
        default = txts[kname]["default"]
        check(b"s=tlsrpt;" in default, "%s: the default record says s=tlsrpt" % label)
        check(verify(signed, default, tlsrpt=True),
              "%s: dkimpy verifies with the default s=tlsrpt record" % label)


def test_keys(tmp, keys):
    for kname, key, alg in keys:
        txt = public_txt(key)
        k = "rsa" if alg == "rsa-sha256" else "ed25519"
        check(re.fullmatch(rb"v=DKIM1; k=%s; s=tlsrpt; p=[A-Za-z0-9+/]+=*" % k.encode(),
                           txt) is not None, "%s: public TXT %r..." % (kname, txt[:40]))
        check(public_txt(key, "tlsrpt").startswith(b"v=DKIM1; k=%s; s=tlsrpt; p=" % k.encode()),
              "%s: public TXT with --service tlsrpt" % kname)
        check(public_txt(key, "").startswith(b"v=DKIM1; k=%s; p=" % k.encode()),
              "%s: public TXT without s=" % kname)
    # RSA-1024: accepted with a warning, verifies
    k1024 = os.path.join(tmp, "rsa1024.pem")
    genkey(k1024, "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024")
    msg = b"From: a@sender.example\r\nTo: b@example.net\r\nSubject: s\r\n\r\nx\r\n"
    rc, out, err = run([k1024, DOMAIN, SELECTOR], msg)
    check(rc == 0 and "warning" in err and "1024" in err,
          "RSA-1024: signed with a warning (%s)" % err.strip())
    check(rc == 0 and verify(out, public_txt(k1024, "")), "RSA-1024: dkimpy verifies")
    # EC: refused, naming the file
    kec = os.path.join(tmp, "ec.pem")
    genkey(kec, "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    rc, out, err = run([kec, DOMAIN, SELECTOR], msg)
    check(rc == 3 and kec in err and "EC" in err and out == b"",
          "EC key refused, naming the file (%d: %s)" % (rc, err.strip()))
    rc, out, err = run(["--public-txt", kec])
    check(rc == 3, "EC key: no public TXT either")


def main():
    if shutil.which("openssl") is None:
        print("SKIP: openssl command missing")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="test_dkim.")
    try:
        rsa = os.path.join(tmp, "rsa2048.pem")
        ed = os.path.join(tmp, "ed25519.pem")
        other = os.path.join(tmp, "other.pem")
        genkey(rsa, "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
        genkey(ed, "-algorithm", "ED25519")
        genkey(other, "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
        keys = [("rsa", rsa, "rsa-sha256"), ("ed25519", ed, "ed25519-sha256")]
        txts = {}
        for kname, key in (("rsa", rsa), ("ed25519", ed), ("other-rsa", other)):
            txts[kname] = {"default": public_txt(key), "any": public_txt(key, ""),
                           "tlsrpt": public_txt(key, "tlsrpt")}
        for t in (test_keys, test_messages, test_report_mail):
            print("== %s" % t.__name__)
            try:
                if t is test_keys:
                    t(tmp, keys)
                else:
                    t(keys, txts)
            except Exception as e:  # report and go on with the next check
                check(False, "%s raised %r" % (t.__name__, e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for n in NOTES:
        print("NOTE %s" % n)
    if FAILURES:
        raise SystemExit("%d check(s) failed:\n  %s" % (len(FAILURES), "\n  ".join(FAILURES)))
    print("all checks passed")


if __name__ == "__main__":
    main()
