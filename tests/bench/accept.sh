#!/bin/sh
# Accept-only benchmark: how many messages per second strictrelay makes
# durable (250 only after fsync) with N concurrent clients, next to the raw
# fsync rate of the same disk measured in the same run. Not part of CI.
#
#   tests/bench/accept.sh [MESSAGES] [SESSIONS] [SIZE]     (defaults 20000 50 4096)
#
# Needs postfix (smtp-source) and a build in build/ (meson compile -C build).
set -eu
cd "$(dirname "$0")/../.."
N=${1:-20000}
S=${2:-50}
L=${3:-4096}
BIN=${STRICTRELAY_BIN:-build/strictrelay}
SRC=/usr/sbin/smtp-source
[ -x "$BIN" ] || { echo "no $BIN: run meson compile -C build" >&2; exit 1; }
[ -x "$SRC" ] || { echo "no $SRC: apt-get install postfix" >&2; exit 1; }

DIR=$(mktemp -d /var/tmp/strictrelay-bench.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM

# The disk: 4 KiB appends, each followed by fdatasync (what one commit costs).
FSYNC=$(/usr/bin/python3 - "$DIR" <<'PY'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync.bin")
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
block = b"x" * 4096
n = 1000
t = time.monotonic()
for _ in range(n):
    os.write(fd, block)
    os.fdatasync(fd)
print(int(n / (time.monotonic() - t)))
os.close(fd)
PY
)

PORT=$((20000 + $$ % 20000))
cat > "$DIR/bench.conf" <<CONF
[server]
hostname = bench.test
listen = 127.0.0.1:$PORT
relay_networks = 127.0.0.0/8
max_connections = 2000
[queue]
state_dir = $DIR/state
# deliveries go nowhere fast: everything waits for the first retry
[delivery]
smtp_port = 9
connect_timeout = 1s
[routes]
* = [127.0.0.1]:9
CONF
"$BIN" -c "$DIR/bench.conf" serve >"$DIR/serve.log" 2>&1 &
PID=$!
i=0
until grep -q 'info main: ready' "$DIR/serve.log" 2>/dev/null; do
	i=$((i + 1)); [ $i -lt 100 ] || { cat "$DIR/serve.log"; exit 1; }; sleep 0.05
done

START=$(date +%s.%N)
"$SRC" -s "$S" -m "$N" -l "$L" -f bench@example.org -t sink@example.net "127.0.0.1:$PORT"
END=$(date +%s.%N)
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
QUEUED=$(grep -c 'status=queued' "$DIR/serve.log" || true)
STATS=$(grep 'stopped: store' "$DIR/serve.log" | sed 's/.*stopped: store //')
RATE=$(echo "$QUEUED $START $END" | awk '{printf "%d", $1 / ($3 - $2)}')
echo "messages:          $QUEUED of $N accepted ($L bytes, $S concurrent sessions, one message per connection)"
echo "accept rate:       $RATE msg/s (every message fsync'd before its 250)"
echo "disk fsync rate:   $FSYNC fdatasync/s (4 KiB appends)"
echo "group commit:      $STATS"
echo "ratio:             $(echo "$RATE $FSYNC" | awk '{printf "%.1f", $1 / $2}') x the raw fsync rate"
