#!/bin/bash
# Soak at full speed through the proxies (issue 7): the topology of
# concurrent.sh,
#
#   loadgen --tcp--> proxy A --tcp | tls | zlib--> proxy B --tcp--> echo
#
# with CONNS streams of BYTES each running at once and every finished
# stream replaced by a new connection, for SECONDS. The RSS of both proxies
# and of the echo server is sampled every 5 s; the curve is printed, then
# per minute after a 2-minute warm-up the lowest, median and highest RSS,
# and a verdict per process: FLAT if the last minute's median and peak are
# within 5 % (or 2 MiB) of the first minute's, with the slope of the
# per-minute medians. `loadgen.py curve FILE` prints the verdicts again
# from a saved run. Every stream is checked by SHA-256 as in
# concurrent.sh.
#
#   bench/load/soak.sh [SECONDS [CONNS [BYTES]]]   (600, 16, 67108864)
set -eu
. "$(dirname "$0")/common.sh"
SECS=${1:-600}
CONNS=${2:-16}
BYTES=${3:-67108864}

A=$(free_port)
B=$(free_port)
E=$(free_port)
start echo listen -q "tcp://127.0.0.1:$E" --echo
ECHO=$LAST_PID
wait_port "$E"
start proxyB proxy -q "tcp://127.0.0.1:$B | tls($CERT) | zlib" "tcp://127.0.0.1:$E"
PB=$LAST_PID
wait_port "$B"
start proxyA proxy -q "tcp://127.0.0.1:$A" "tcp://127.0.0.1:$B | tls($TRUST) | zlib"
PA=$LAST_PID
wait_port "$A"

machine
echo "soak: $SECS s, $CONNS streams at once of $BYTES bytes each way, replaced as they end"
rc=0
python3 "$LOADGEN" streams --port "$A" --conns "$CONNS" --bytes "$BYTES" \
	--seconds "$SECS" --window 4194304 --pids "$PA" "$PB" "$ECHO" \
	--names proxyA proxyB echo --every 5 --warm 120 || rc=$?
echo "after: proxy A $(fds "$PA") fds; proxy B $(fds "$PB") fds; echo $(fds "$ECHO") fds"
exit "$rc"
