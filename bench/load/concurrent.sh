#!/bin/bash
# Concurrent streams through two `strata proxy`s with TLS and zlib between
# them (issue 7):
#
#   loadgen --tcp--> proxy A --tcp | tls | zlib--> proxy B --tcp--> echo
#
# Every connection sends BYTES of its own text (a header per 16 KiB naming
# the connection and the chunk, then 5 bits of entropy a byte: deflate has
# work to do and no stream is periodic), half-closes, and reads the echo
# back to EOF; SHA-256 of what went out and of what came back are compared
# per connection. Nothing may be lost, reordered or mixed between
# connections. The proxies' and the echo server's RSS and fds are printed
# every 10 s.
#
#   bench/load/concurrent.sh [CONNS [BYTES [WINDOW [HOLD]]]]
#                                          (1000, 2097152, 262144, 0)
#
# HOLD: seconds between opening the connections and sending (0: at once).
# BACKLOG (environment, default 4096): the listeners' tcp backlog. With
# tcp's default of 511, a thousand connects at once overflow the accept
# queue of proxy B (nstat: TcpExtListenOverflows), the kernel drops the
# segments of the connections it could not queue, and TCP's retransmission
# backoff delays their TLS handshakes past handshake-timeout (10 s): those
# streams fail cleanly (reset or EOF, never wrong data), counted as failed.
#
# Meanwhile a probe makes a TLS handshake with proxy B every 2 s and
# prints how long they took: a new connection's wait while the proxy is
# busy with everybody's bulk data (the proxy runs handshakes at a higher
# event priority than data; see tools/strata.c, PRIO_HANDSHAKE).
#
# WINDOW bounds the bytes a connection has in flight (sent, not yet back):
# `strata listen --echo` has no back-pressure of its own (a client reading
# slower than it writes grows the echo server), so the driver keeps its
# own window.
set -eu
. "$(dirname "$0")/common.sh"
CONNS=${1:-1000}
BYTES=${2:-2097152}
WINDOW=${3:-262144}
HOLD=${4:-0}
BACKLOG=${BACKLOG:-4096}

# each proxy holds two fds a connection, the driver and the echo one
ulimit -n $((CONNS * 2 + 256))

A=$(free_port)
B=$(free_port)
E=$(free_port)
start echo listen -q "tcp://127.0.0.1:$E(backlog=$BACKLOG)" --echo
ECHO=$LAST_PID
wait_port "$E"
start proxyB proxy -q "tcp://127.0.0.1:$B(backlog=$BACKLOG) | tls($CERT) | zlib" \
	"tcp://127.0.0.1:$E"
PB=$LAST_PID
wait_port "$B"
start proxyA proxy -q "tcp://127.0.0.1:$A(backlog=$BACKLOG)" \
	"tcp://127.0.0.1:$B | tls($TRUST) | zlib"
PA=$LAST_PID
wait_port "$A"

machine
echo "$CONNS connections at once, $BYTES bytes each way each, window $WINDOW, hold $HOLD s, backlog $BACKLOG"
ov0=$(nstat -az TcpExtListenOverflows 2>/dev/null | awk '/ListenOverflows/ { print $2 }')
echo "at rest: proxy A $(fds "$PA") fds, RSS $(rss_kb "$PA") KiB; proxy B $(fds "$PB") fds, RSS $(rss_kb "$PB") KiB; echo $(fds "$ECHO") fds, RSS $(rss_kb "$ECHO") KiB"
rc=0
# a TLS handshake with proxy B every 2 s while the streams run
python3 "$LOADGEN" probe --port "$B" --stop "$TMP/probe.stop" \
	>"$TMP/probe.log" 2>&1 &
PROBE=$!
python3 "$LOADGEN" streams --port "$A" --conns "$CONNS" --bytes "$BYTES" \
	--window "$WINDOW" --hold "$HOLD" --pids "$PA" "$PB" "$ECHO" \
	--names proxyA proxyB echo --every 10 --warm 0 || rc=$?
touch "$TMP/probe.stop"
wait "$PROBE" || true
cat "$TMP/probe.log"
sleep 1
echo "after: proxy A $(fds "$PA") fds, RSS $(rss_kb "$PA") KiB; proxy B $(fds "$PB") fds, RSS $(rss_kb "$PB") KiB; echo $(fds "$ECHO") fds, RSS $(rss_kb "$ECHO") KiB"
ov1=$(nstat -az TcpExtListenOverflows 2>/dev/null | awk '/ListenOverflows/ { print $2 }')
echo "accept queue overflows during the run (whole machine): $((${ov1:-0} - ${ov0:-0}))"
for n in proxyA proxyB echo; do
	c=$(grep -c "failed" "$TMP/$n.log" || true)
	echo "$n log: $c connection(s) ended with an error"
	grep "failed" "$TMP/$n.log" | head -3
done
exit "$rc"
