#!/bin/sh
# install.sh - builds strictrelay from this source tree and installs it on
# Debian 12: the one install procedure, run by the README's "Installing"
# section, by the Dockerfile's build stage and by tests/integration/
# test_packaging.py (with DESTDIR).
#
#   etc/install.sh [--no-deps] [--sendmail-link] [--no-setup | --setup-only]
#
# Steps:
#   1. etc/install-deps.sh: the build dependencies, with apt-get (--no-deps skips)
#   2. meson setup + compile in $BUILD (release build, prefix $PREFIX,
#      sysconfdir /etc, localstatedir /var), then `meson install`
#   3. --sendmail-link: /usr/sbin/sendmail -> $PREFIX/bin/strictrelay, so local
#      programs inject mail with `sendmail -t -i` (skipped, with a warning,
#      when another MTA already provides /usr/sbin/sendmail)
#   4. setup (--no-setup skips): the system user and group "strictrelay" (only
#      without DESTDIR), /var/lib/strictrelay owned by it (mode 0750),
#      /etc/strictrelay/tls, and /etc/strictrelay/strictrelay.conf made from
#      the installed example when there is none (an existing one is never
#      touched). No certificate is made here: put yours in
#      /etc/strictrelay/tls (README.md "Installing" has the next steps).
#      --setup-only does this step alone, on files installed earlier (the
#      Dockerfile's runtime stage, after copying the build stage's DESTDIR).
#
# Environment: PREFIX (default /usr/local), DESTDIR (default empty: the live
# system), BUILD (build directory, default build-release), BUILDTYPE (default
# release). Needs root for a live install.
set -eu
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BUILD=${BUILD:-build-release}
BUILDTYPE=${BUILDTYPE:-release}
RUN_USER=strictrelay
STATE_DIR=/var/lib/strictrelay
CONF_DIR=/etc/strictrelay

deps=yes build=yes setup=yes sendmail_link=no
for a in "$@"; do
	case "$a" in
	--no-deps) deps=no ;;
	--no-setup) setup=no ;;
	--setup-only) deps=no build=no ;;
	--sendmail-link) sendmail_link=yes ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -eu/d'; exit 0 ;;
	*) echo "install.sh: unknown option \"$a\" (see --help)" >&2; exit 2 ;;
	esac
done
case "$PREFIX" in
/*) ;;
*) echo "install.sh: PREFIX must be an absolute path, not \"$PREFIX\"" >&2; exit 2 ;;
esac

say() { echo "install.sh: $*" >&2; }

# 1. dependencies
[ "$deps" = no ] || etc/install-deps.sh

# 2. build and install. sysconfdir is /etc whatever the prefix: the binary's
# default config is /etc/strictrelay/strictrelay.conf.
if [ "$build" = yes ]; then
	if [ -f "$BUILD/build.ninja" ]; then
		meson configure "$BUILD" --prefix="$PREFIX" --sysconfdir=/etc --localstatedir=/var >/dev/null
	else
		meson setup "$BUILD" --buildtype="$BUILDTYPE" --prefix="$PREFIX" \
			--sysconfdir=/etc --localstatedir=/var
	fi
	meson compile -C "$BUILD"
	if [ -n "$DESTDIR" ]; then
		meson install -C "$BUILD" --no-rebuild --destdir "$DESTDIR"
	else
		meson install -C "$BUILD" --no-rebuild
	fi
	say "installed $DESTDIR$PREFIX/bin/strictrelay"
fi

# 3. sendmail compatibility link
if [ "$sendmail_link" = yes ]; then
	link="$DESTDIR/usr/sbin/sendmail"
	if [ -e "$link" ] && [ "$(readlink "$link" || true)" != "$PREFIX/bin/strictrelay" ]; then
		say "WARNING: $link exists and is not ours (another MTA?): not replacing it;" \
			"local programs can still use $PREFIX/bin/strictrelay sendmail"
	else
		mkdir -p "$DESTDIR/usr/sbin"
		ln -sfn "$PREFIX/bin/strictrelay" "$link"
		say "linked $link -> $PREFIX/bin/strictrelay"
	fi
fi

[ "$setup" = yes ] || exit 0

# 4. user, directories, live configuration
owner=""
if [ -z "$DESTDIR" ]; then
	if ! getent passwd "$RUN_USER" >/dev/null; then
		getent group "$RUN_USER" >/dev/null || groupadd --system "$RUN_USER"
		useradd --system --gid "$RUN_USER" --home-dir "$STATE_DIR" --no-create-home \
			--shell /usr/sbin/nologin --comment "strictrelay SMTP relay" "$RUN_USER"
		say "created system user $RUN_USER"
	fi
	owner="$RUN_USER"
fi
install -d -m 0750 "$DESTDIR$STATE_DIR"
install -d -m 0755 "$DESTDIR$CONF_DIR"
install -d -m 0750 "$DESTDIR$CONF_DIR/tls"
if [ -n "$owner" ]; then
	chown "$owner:$owner" "$DESTDIR$STATE_DIR"
	chgrp "$owner" "$DESTDIR$CONF_DIR/tls"
fi

conf="$DESTDIR$CONF_DIR/strictrelay.conf"
if [ -e "$conf" ]; then
	say "keeping the existing $conf (compare it with strictrelay.conf.example after upgrades)"
else
	# The installed example with the host name left to the system (the
	# default), unless this machine has a fully qualified name to put there.
	fqdn=""
	[ -z "$DESTDIR" ] && fqdn=$(hostname -f 2>/dev/null || true)
	case "$fqdn" in
	*.*) sed -e "s/^hostname = .*/hostname = $fqdn/" "$conf.example" >"$conf.tmp" ;;
	*) sed -e 's/^hostname = /# hostname = /' "$conf.example" >"$conf.tmp" ;;
	esac
	chmod 0644 "$conf.tmp"
	mv "$conf.tmp" "$conf"
	say "wrote $conf from the example: review hostname, relay_networks and [tlsrpt]"
fi
if [ -z "$DESTDIR" ]; then
	[ -f "$CONF_DIR/tls/cert.pem" ] ||
		say "put the relay's certificate and key in $CONF_DIR/tls/cert.pem and key.pem (key readable by root only), or change tls_cert/tls_key"
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		say "start with: systemctl enable --now strictrelay"
	fi
fi
