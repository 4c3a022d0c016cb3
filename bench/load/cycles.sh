#!/bin/bash
# Connect-and-close cycles through `strata proxy` with TLS (issue 7):
#
#   client (Python ssl) --tls--> strata proxy --tls--> strata listen --echo
#
# One in three cycles closes with close_notify, one without it, one right
# after the handshake with its line unread. The proxy's and the echo
# server's open fds and VmRSS are read after a warm-up and after the run;
# they must be back where they were.
#
#   bench/load/cycles.sh [CYCLES [WORKERS]]     (10000, 4)
set -eu
. "$(dirname "$0")/common.sh"
N=${1:-10000}
W=${2:-4}
WARM=500

P=$(free_port)
E=$(free_port)
start echo listen -q "tcp://127.0.0.1:$E | tls($CERT)" --echo
ECHO=$LAST_PID
wait_port "$E"
start proxy proxy -q "tcp://127.0.0.1:$P | tls($CERT)" \
	"tcp://127.0.0.1:$E | tls($TRUST)"
PROXY=$LAST_PID
wait_port "$P"

machine
echo "warm-up: $WARM cycles"
python3 "$LOADGEN" cycles --port "$P" --count "$WARM" --tls --ca "$TMP/cert.pem" \
	--workers "$W" >/dev/null || true
sleep 1
pf0=$(fds "$PROXY") pr0=$(rss_kb "$PROXY") ef0=$(fds "$ECHO") er0=$(rss_kb "$ECHO")
echo "before: proxy $pf0 fds, RSS $pr0 KiB; echo $ef0 fds, RSS $er0 KiB"
rc=0
python3 "$LOADGEN" cycles --port "$P" --count "$N" --tls --ca "$TMP/cert.pem" \
	--workers "$W" --pids "$PROXY" "$ECHO" --names proxy echo || rc=$?
sleep 1
pf1=$(fds "$PROXY") pr1=$(rss_kb "$PROXY") ef1=$(fds "$ECHO") er1=$(rss_kb "$ECHO")
echo "after:  proxy $pf1 fds, RSS $pr1 KiB; echo $ef1 fds, RSS $er1 KiB"
verdict=ok
[ "$pf1" -eq "$pf0" ] && [ "$ef1" -eq "$ef0" ] || verdict="FDS GREW"
[ $((pr1 - pr0)) -lt 2048 ] && [ $((er1 - er0)) -lt 2048 ] || verdict="$verdict; RSS GREW"
[ "$rc" -eq 0 ] || verdict="$verdict; CYCLES FAILED"
echo "verdict: $verdict (fds $pf0 -> $pf1 and $ef0 -> $ef1, RSS $((pr1 - pr0)) and $((er1 - er0)) KiB)"
[ "$verdict" = ok ]
