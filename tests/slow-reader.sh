#!/usr/bin/env bash
# slow-reader.sh: the issue's full memory test, too slow for CI.
#
#   tests/slow-reader.sh [STRATA] [MIB] [READER_KIB_PER_S]
#
# Sends MIB (default 1024) MiB as fast as it goes through `strata proxy`
# to a reader that takes READER_KIB_PER_S (default 1024, i.e. 1 MiB/s:
# about 17 minutes for 1 GiB), samples the proxy's VmRSS every second,
# and fails unless every byte arrived and the peak stayed under 64 MiB.
# STRATA defaults to build/tools/strata. PROXY_OPTS and the stacks can be
# changed from the environment: LISTEN_STACK and TARGET_STACK get the
# ports substituted for %L and %T, e.g.
#   LISTEN_STACK='tcp://127.0.0.1:%L' TARGET_STACK='tcp://127.0.0.1:%T'
set -eu
set -o pipefail

STRATA=${1:-build/tools/strata}
MIB=${2:-1024}
RATE_KIB=${3:-1024}
LIMIT_KIB=$((64 * 1024))

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

LPORT=$(free_port)
TPORT=$(free_port)
LISTEN_STACK=${LISTEN_STACK:-tcp://127.0.0.1:%L}
TARGET_STACK=${TARGET_STACK:-tcp://127.0.0.1:%T}
LISTEN_STACK=${LISTEN_STACK//%L/$LPORT}
TARGET_STACK=${TARGET_STACK//%T/$TPORT}
WORK=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

# the reader: accepts, skips connections that end before their first byte,
# reads at RATE_KIB KiB/s, writes how many bytes it got
python3 - "$TPORT" "$RATE_KIB" "$WORK/got" <<'PY' &
import socket, sys, time
port, rate, out = int(sys.argv[1]), int(sys.argv[2]) * 1024, sys.argv[3]
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(4)
while True:
    c, _ = ls.accept()
    first = c.recv(65536)
    if first:
        break
    c.close()
got, t0 = len(first), time.monotonic()
while True:
    d = c.recv(min(65536, max(1024, rate // 10)))
    if not d:
        break
    got += len(d)
    ahead = got / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
open(out, "w").write(str(got))
PY
pids+=($!)

# shellcheck disable=SC2086
"$STRATA" proxy ${PROXY_OPTS:-} "$LISTEN_STACK" "$TARGET_STACK" 2>"$WORK/proxy.log" &
PROXY=$!
pids+=($PROXY)
for _ in $(seq 100); do
	grep -q listening "$WORK/proxy.log" 2>/dev/null && break
	sleep 0.1
done

# the writer: as fast as the proxy takes it, then half-close
python3 - "$LPORT" "$MIB" <<'PY' &
import socket, sys
port, mib = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
buf = b"x" * (1 << 20)
for _ in range(mib):
    s.sendall(buf)
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
PY
WRITER=$!
pids+=($WRITER)

echo "slow-reader: $MIB MiB through strata proxy ($LISTEN_STACK -> $TARGET_STACK) to a reader at $RATE_KIB KiB/s"
peak=0
start=$(date +%s)
said=$start
while kill -0 "$WRITER" 2>/dev/null; do
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$PROXY/status" 2>/dev/null || echo 0)
	[ "${rss:-0}" -gt "$peak" ] && peak=$rss
	now=$(date +%s)
	if [ $((now - said)) -ge 60 ]; then
		echo "  $((now - start)) s: proxy RSS ${rss} KiB (peak ${peak} KiB)"
		said=$now
	fi
	sleep 1
done
wait "$WRITER"
for _ in $(seq 50); do [ -s "$WORK/got" ] && break; sleep 0.1; done
got=$(cat "$WORK/got" 2>/dev/null || echo 0)
want=$((MIB * 1024 * 1024))
secs=$(($(date +%s) - start))
echo "slow-reader: $got of $want bytes in $secs s; proxy RSS peak $peak KiB (limit $LIMIT_KIB KiB)"
[ "$got" -eq "$want" ] || { echo "slow-reader: FAIL: bytes missing"; exit 1; }
[ "$peak" -lt "$LIMIT_KIB" ] || { echo "slow-reader: FAIL: RSS over the limit"; exit 1; }
echo "slow-reader: OK"
