#!/bin/sh
# docker-entrypoint.sh - the container's entrypoint: prepares and starts strictrelay.
#
#   docker-entrypoint.sh [serve]        prepare, check the config, exec `strictrelay serve`
#   docker-entrypoint.sh check-config   prepare and print the effective configuration
#   docker-entrypoint.sh healthcheck    exit 0 when the relay answers (HEALTHCHECK)
#   docker-entrypoint.sh queue list ... any other strictrelay command, with -c CONFIG
#   docker-entrypoint.sh sh ...         anything else is executed as given
#
# Configuration comes from the config file (the image ships the installed
# example, production layout) and from STRICTRELAY_<SECTION>_<KEY> environment
# variables, which strictrelay itself applies and which win over the file
# (STRICTRELAY_SERVER_HOSTNAME, STRICTRELAY_ROUTES_DEFAULT, ...). Preparing means:
#   - when neither the certificate nor the key named by [server] tls_cert and
#     tls_key exists, generate a SELF-SIGNED pair there, and say so loudly;
#   - when started as root with [server] user set (strictrelay in the image):
#     make [queue] state_dir (the volume) owned by that user; the relay binds
#     its ports as root and then switches to it;
#   - when started as another user (docker run --user) nothing is switched
#     (the relay ignores [server] user then) and the volume must be writable;
#   - run `strictrelay check-config`: a bad value stops the container with
#     exit 1 and check-config's FILE:LINE: reason (or "environment VAR: ...").
#
# Variables of this script only (paths can be moved for tests):
#   STRICTRELAY_CONFIG  the config file (default /etc/strictrelay/strictrelay.conf)
#   STRICTRELAY_BIN     the strictrelay binary (default: strictrelay on PATH)
set -eu

BIN=${STRICTRELAY_BIN:-strictrelay}
CONF=${STRICTRELAY_CONFIG:-/etc/strictrelay/strictrelay.conf}
EFFECTIVE=""

note() { echo "docker-entrypoint: $*" >&2; }
die() {
	note "$*"
	exit 1
}
cleanup() { [ -z "$EFFECTIVE" ] || rm -f "$EFFECTIVE"; }
trap cleanup EXIT

# ini_get FILE SECTION KEY: the value of KEY in [SECTION] of an INI file in
# strictrelay's syntax (quotes removed, trailing " # comment" dropped); the
# last one wins. Used on the config file and on check-config's output.
ini_get() {
	awk -v sec="$2" -v key="$3" '
	/^[ \t]*\[/ { s = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", s); cur = s; next }
	cur == sec {
		line = $0; sub(/^[ \t]+/, "", line)
		if (substr(line, 1, 1) == "#") next
		n = index(line, "="); if (n == 0) next
		k = substr(line, 1, n - 1); sub(/[ \t]+$/, "", k)
		if (k != key) next
		v = substr(line, n + 1); sub(/^[ \t]+/, "", v)
		if (substr(v, 1, 1) == "\"") { v = substr(v, 2); sub(/".*$/, "", v) }
		else { sub(/(^|[ \t]+)#.*$/, "", v); sub(/[ \t]+$/, "", v) }
		val = v
	}
	END { print val }' "$1"
}

# conf_get SECTION KEY: the environment's STRICTRELAY_SECTION_KEY when set
# (even empty), else the file's value. Only for what must be known before
# check-config can run (the certificate paths).
conf_get() {
	var=$(echo "STRICTRELAY_$1_$2" | tr '[:lower:]' '[:upper:]')
	if eval "[ -n \"\${$var+set}\" ]"; then
		eval "printf '%s\n' \"\${$var}\""
	else
		ini_get "$CONF" "$1" "$2"
	fi
}

# effective SECTION KEY: the value check-config printed.
effective() { ini_get "$EFFECTIVE" "$1" "$2"; }

# The printed line of a key says "# default" when nothing set it.
is_default() {
	awk -v sec="$1" -v key="$2" '
	/^\[/ { cur = substr($0, 2, length($0) - 2); next }
	cur == sec && index($0, key " =") == 1 && / # default$/ { found = 1 }
	END { exit !found }' "$EFFECTIVE"
}

make_self_signed() {
	cert=$1 key=$2
	name=$(conf_get server hostname)
	[ -n "$name" ] || name=$(hostname -f 2>/dev/null || hostname)
	mkdir -p "$(dirname "$cert")" "$(dirname "$key")"
	old_umask=$(umask)
	umask 077
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
		-subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
		-keyout "$key" -out "$cert" 2>/dev/null ||
		die "could not write a self-signed certificate to $cert and $key"
	umask "$old_umask"
	chmod 0644 "$cert"
	note "************************************************************************"
	note "NO TLS CERTIFICATE FOUND: generated a SELF-SIGNED one for $name"
	note "  certificate $cert"
	note "  key         $key"
	note "Clients that verify certificates will refuse it. For production, mount"
	note "a real certificate and key at those paths (or set STRICTRELAY_SERVER_TLS_CERT"
	note "and STRICTRELAY_SERVER_TLS_KEY)."
	note "************************************************************************"
	GENERATED_KEY=$key
}

prepare() {
	[ -f "$CONF" ] || die "no configuration file at $CONF (set STRICTRELAY_CONFIG or mount one)"
	GENERATED_KEY=""
	cert=$(conf_get server tls_cert)
	key=$(conf_get server tls_key)
	if [ -z "$cert" ] && [ -z "$key" ]; then
		note "WARNING: tls_cert and tls_key are empty: no STARTTLS, so no REQUIRETLS"
	elif [ -n "$cert" ] && [ -n "$key" ] && [ ! -e "$cert" ] && [ ! -e "$key" ]; then
		make_self_signed "$cert" "$key"
	fi

	EFFECTIVE=$(mktemp)
	if ! "$BIN" -c "$CONF" check-config >"$EFFECTIVE"; then
		die "the configuration is not valid (see above); not starting"
	fi

	user=$(effective server user)
	state=$(effective queue state_dir)
	if [ "$(id -u)" -eq 0 ] && [ -n "$user" ]; then
		id "$user" >/dev/null 2>&1 || die "[server] user \"$user\" does not exist in this container"
		group=$(id -gn "$user")
		mkdir -p "$state"
		# The volume may come from an older container or another uid.
		find "$state" \( ! -user "$user" -o ! -group "$group" \) -exec chown "$user:$group" {} +
		chmod 0750 "$state"
		# A key made here must stay readable after the switch (SIGHUP reload).
		if [ -n "$GENERATED_KEY" ]; then
			chgrp "$group" "$GENERATED_KEY"
			chmod 0640 "$GENERATED_KEY"
		fi
	fi
	if is_default server hostname; then
		note "WARNING: [server] hostname is the container's host name ($(effective server hostname));" \
			"set STRICTRELAY_SERVER_HOSTNAME to a name receiving MX hosts can resolve"
	fi
}

# healthcheck: GET /healthz when [metrics] listen is set, else the SMTP
# greeting of the first [server] listen address (then QUIT).
healthcheck() {
	EFFECTIVE=$(mktemp)
	"$BIN" -c "$CONF" check-config >"$EFFECTIVE" 2>/dev/null || die "healthcheck: config not valid"
	metrics=$(effective metrics listen)
	if [ -n "$metrics" ]; then
		target=$metrics
	else
		target=$(effective server listen | cut -d, -f1)
	fi
	port=${target##*:}
	host=${target%:*}
	host=$(echo "$host" | tr -d '[]')
	case "$host" in
	0.0.0.0) host=127.0.0.1 ;;
	::) host=::1 ;;
	esac
	if [ -n "$metrics" ]; then
		# shellcheck disable=SC2016
		timeout 10 bash -c 'exec 3<>"/dev/tcp/$0/$1" &&
			printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 &&
			IFS= read -r status <&3 && case "$status" in "HTTP/1."?" 200"*) exit 0 ;; esac
			echo "healthcheck: /healthz: $status" >&2; exit 1' "$host" "$port"
	else
		# shellcheck disable=SC2016
		timeout 10 bash -c 'exec 3<>"/dev/tcp/$0/$1" && IFS= read -r greeting <&3 &&
			case "$greeting" in 220[\ -]*) printf "QUIT\r\n" >&3; exit 0 ;; esac
			echo "healthcheck: greeting: $greeting" >&2; exit 1' "$host" "$port"
	fi
}

cmd=${1:-serve}
case "$cmd" in
serve)
	prepare
	cleanup
	exec "$BIN" -c "$CONF" serve
	;;
check-config)
	prepare
	cat "$EFFECTIVE"
	;;
healthcheck)
	healthcheck
	;;
-* | queue | policy | tlsrpt | send | passwd | sendmail | version)
	exec "$BIN" -c "$CONF" "$@"
	;;
*)
	exec "$@"
	;;
esac
