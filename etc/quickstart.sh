#!/bin/sh
# Quickstart on a fresh Debian 12 machine: installs the build dependencies,
# builds strictrelay, makes a self-signed certificate (./var/tls) if there is
# none, and runs the relay in the foreground with etc/strictrelay.conf
# (127.0.0.1:2525, queue in ./var). Stop it with Ctrl-C.
set -eu
cd "$(dirname "$0")/.."

etc/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=debugoptimized
meson compile -C build

if [ ! -f var/tls/cert.pem ]; then
	mkdir -p var/tls
	echo "quickstart: no certificate yet: making a SELF-SIGNED one in var/tls (replace it for production)" >&2
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
		-subj "/CN=$(hostname -f 2>/dev/null || hostname)" \
		-addext "subjectAltName=DNS:$(hostname -f 2>/dev/null || hostname),DNS:localhost" \
		-keyout var/tls/key.pem -out var/tls/cert.pem 2>/dev/null
	chmod 600 var/tls/key.pem
fi
build/strictrelay -c etc/strictrelay.conf check-config >/dev/null
# The relay refuses to keep running as root unless told to: this quickstart
# serves from the source tree (which may sit in /root, where an unprivileged
# user could not reach ./var), so as root it says so explicitly. An installed
# relay (etc/install.sh) runs as its own user instead ([server] user).
if [ "$(id -u)" = 0 ] && [ -z "${STRICTRELAY_SERVER_USER:-}" ]; then
	echo "quickstart: running the relay as root from the source tree (STRICTRELAY_SERVER_RUN_AS_ROOT=yes)" >&2
	export STRICTRELAY_SERVER_RUN_AS_ROOT=yes
fi
exec build/strictrelay -c etc/strictrelay.conf serve
