#!/bin/sh
# Installs what strictrelay needs to build, run and be tested on Debian 12.
# Only missing packages are installed; needs root (or sudo) when something is.
set -eu

BUILD_PKGS="meson ninja-build pkg-config gcc libc6-dev libuv1-dev libssl-dev libc-ares-dev
libcurl4-openssl-dev libsqlite3-dev zlib1g-dev openssl ca-certificates"
# Real peers the test suite runs on loopback (see tests/lib/README.md);
# clang and its runtimes for the fuzz smoke run (tests/fuzz/README.md);
# groff for checking the man page (test_packaging).
TEST_PKGS="python3 python3-aiosmtpd python3-dnslib dnsmasq-base nginx-light postfix swaks
dnsutils postfix-mta-sts-resolver sqlite3 iproute2 procps util-linux curl
python3-dkim python3-nacl clang libclang-rt-14-dev groff-base"

want="$BUILD_PKGS"
[ "${1:-}" = "--test" ] && want="$BUILD_PKGS $TEST_PKGS"

missing=""
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# postfix asks debconf questions; "No configuration" keeps it from starting.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
