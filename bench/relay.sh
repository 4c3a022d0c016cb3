#!/bin/bash
# The relay benchmark of issue 6: strata proxy against stunnel, socat and
# HAProxy doing the same job, in one run, interleaved.
#
#   TLS tunnel:  client -> plain-to-TLS proxy -> TLS-to-plain proxy -> sink
#   plain relay: client -> TCP proxy -> TCP proxy -> sink
#
# over 127.0.0.1, TLS 1.3 with TLS_AES_128_GCM_SHA256 only, one ECDSA
# P-256 self-signed certificate (made here, in a temporary directory) for
# everybody. The client and the sink are bench/relay-peer (one process,
# blocking sockets, 256 KiB reads and writes). For each row: MB/s (10^6
# bytes per wall-clock second, median of -r runs) and CPU seconds per GiB
# of the two proxy processes (utime + stime + cutime + cstime from
# /proc/PID/stat, after - before the transfer, median), with the client's
# and sink's CPU and the proxies' minor page faults beside them.
# bench/README.md ("Relays") has the exact commands and configurations.
#
# Run it as `bench/run relay [options]` (that builds tools/strata and
# bench/relay-peer with optimizations first). Missing peers (stunnel4,
# socat, haproxy) are installed with apt-get.
set -eu

usage() {
	cat <<EOF
usage: bench/run relay [-r RUNS] [-n BYTES] [-x ROWS] [-a STRATA] [-W] [-k] [-v]
  -r RUNS   timed runs per row (default 5); rows run interleaved
  -n BYTES  bytes per run (default 1073741824)
  -x ROWS   comma-separated rows to run (default: all):
            $ALL_ROWS
            (also: tls-socat-8k, plain-socat-8k: socat's default block size;
            tls-strata-wdef, plain-strata-wdef: strata without --workers 1)
  -a STRATA also run the strata rows with this other strata binary (rows
            tls-strata-alt, plain-strata-alt): an A/B test of a patch in
            the same run
  -W        skip the warm-up and check pass (one untimed run per row
            with SHA-256 at both ends, and the cipher check)
  -k        keep the temporary directory (configurations, logs)
  -v        print every run
EOF
	exit 2
}

ALL_ROWS="tls-strata tls-haproxy tls-stunnel tls-socat plain-direct plain-strata plain-haproxy plain-haproxy-splice plain-socat"
SUITE=TLS_AES_128_GCM_SHA256
runs=5
bytes=1073741824
rows=$ALL_ROWS
warm=1
keep=0
verbose=0
alt=
while getopts r:n:x:a:Wkvh opt; do
	case $opt in
	r) runs=$OPTARG ;;
	n) bytes=$OPTARG ;;
	x) rows=${OPTARG//,/ } ;;
	a) alt=$(cd "$(dirname "$OPTARG")" && pwd)/$(basename "$OPTARG") ;;
	W) warm=0 ;;
	k) keep=1 ;;
	v) verbose=1 ;;
	*) usage ;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
build=${STRATA_BENCH_BUILD:-$root/build-bench}
strata=$build/tools/strata
peer=$build/bench/relay-peer
if [ -n "$alt" ]; then
	rows=$(echo " $rows " | sed 's/ tls-strata / tls-strata tls-strata-alt /; s/ plain-strata / plain-strata plain-strata-alt /')
fi
for f in "$strata" "$peer" $alt; do
	[ -x "$f" ] || { echo "relay.sh: $f missing: run bench/run relay" >&2; exit 1; }
done

# ---- the peers ----
need=
command -v stunnel4 >/dev/null || need="$need stunnel4"
command -v socat >/dev/null || need="$need socat"
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need="$need haproxy"
if [ -n "$need" ]; then
	echo "installing:$need" >&2
	if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
	$sudo apt-get install -y $need >/dev/null 2>&1 ||
	    { $sudo apt-get update >/dev/null && $sudo apt-get install -y $need >/dev/null; } ||
	    { echo "relay.sh: could not install$need" >&2; exit 1; }
fi
PATH=$PATH:/usr/sbin

tmp=$(mktemp -d /tmp/strata-relay.XXXXXX)
pids=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "$keep" = 1 ]; then echo "kept: $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout key.pem -out cert.pem -days 7 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost 2>/dev/null
cat cert.pem key.pem >combined.pem # HAProxy's crt: certificate and key
# socat 1.7 cannot set TLS 1.3 suites; OpenSSL's configuration can.
cat >openssl-socat.cnf <<EOF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
Ciphersuites = $SUITE
EOF

# ---- one row = two proxies (or none) started on ports P1 -> P2 -> P3 ----

haproxy_cfg() { # FILE BIND-LINE SERVER-LINE [EXTRA-DEFAULTS]
	cat >"$1" <<EOF
global
	nbthread 1
	maxconn 1000
defaults
	mode tcp
	timeout connect 10s
	timeout client 60s
	timeout server 60s
${4:-}
frontend in
	bind $2
	default_backend out
backend out
	server next $3
EOF
}

stunnel_cfg() { # FILE client|server ACCEPT CONNECT
	{
		echo "foreground = yes"
		echo "pid ="
		echo "debug = 4"
		echo "[tunnel]"
		echo "accept = 127.0.0.1:$3"
		echo "connect = 127.0.0.1:$4"
		if [ "$2" = client ]; then
			echo "client = yes"
			echo "CAfile = $tmp/cert.pem"
			echo "verifyChain = yes"
			echo "checkHost = localhost"
			echo "sni = localhost"
		else
			echo "cert = $tmp/cert.pem"
			echo "key = $tmp/key.pem"
		fi
		echo "sslVersionMin = TLSv1.3"
		echo "ciphersuites = $SUITE"
		echo "socket = l:TCP_NODELAY=1"
		echo "socket = r:TCP_NODELAY=1"
	} >"$1"
}

# Start proxy N (1: listens on P1, 2: listens on P2) of row $row.
start_proxy() { # ROW N P1 P2 P3
	local row=${1%-alt} n=$2 p1=$3 p2=$4 p3=$5 log=$tmp/$1-$2.log
	local strata=$strata sb=262144 workers="--workers 1"
	[ "$row" != "$1" ] && strata=$alt
	case $row in *-socat-8k) sb=8192 row=${row%-8k} ;; esac
	case $row in *-strata-wdef) workers= row=${row%-wdef} ;; esac
	local tlsc="tls(name=localhost,ca=$tmp/cert.pem,min=1.3,ciphersuites=$SUITE)"
	local tlss="tls(cert=$tmp/cert.pem,key=$tmp/key.pem,min=1.3,ciphersuites=$SUITE)"
	case $row-$n in
	tls-strata-1)
		"$strata" proxy -q $workers "tcp://127.0.0.1:$p1" \
		    "tcp://127.0.0.1:$p2 | $tlsc" 2>>"$log" & ;;
	tls-strata-2)
		"$strata" proxy -q $workers "tcp://127.0.0.1:$p2 | $tlss" \
		    "tcp://127.0.0.1:$p3" 2>>"$log" & ;;
	plain-strata-1)
		"$strata" proxy -q $workers "tcp://127.0.0.1:$p1" \
		    "tcp://127.0.0.1:$p2" 2>>"$log" & ;;
	plain-strata-2)
		"$strata" proxy -q $workers "tcp://127.0.0.1:$p2" \
		    "tcp://127.0.0.1:$p3" 2>>"$log" & ;;
	tls-haproxy-1)
		haproxy_cfg "$tmp/$row-$n.cfg" "127.0.0.1:$p1" \
		    "127.0.0.1:$p2 ssl verify required ca-file $tmp/cert.pem verifyhost localhost sni str(localhost) ssl-min-ver TLSv1.3 ciphersuites $SUITE"
		haproxy -db -f "$tmp/$row-$n.cfg" >>"$log" 2>&1 & ;;
	tls-haproxy-2)
		haproxy_cfg "$tmp/$row-$n.cfg" \
		    "127.0.0.1:$p2 ssl crt $tmp/combined.pem ssl-min-ver TLSv1.3 ciphersuites $SUITE" \
		    "127.0.0.1:$p3"
		haproxy -db -f "$tmp/$row-$n.cfg" >>"$log" 2>&1 & ;;
	plain-haproxy-1 | plain-haproxy-splice-1)
		haproxy_cfg "$tmp/$row-$n.cfg" "127.0.0.1:$p1" "127.0.0.1:$p2" \
		    "$([ "$row" = plain-haproxy-splice ] && printf '\toption splice-request\n\toption splice-response')"
		haproxy -db -f "$tmp/$row-$n.cfg" >>"$log" 2>&1 & ;;
	plain-haproxy-2 | plain-haproxy-splice-2)
		haproxy_cfg "$tmp/$row-$n.cfg" "127.0.0.1:$p2" "127.0.0.1:$p3" \
		    "$([ "$row" = plain-haproxy-splice ] && printf '\toption splice-request\n\toption splice-response')"
		haproxy -db -f "$tmp/$row-$n.cfg" >>"$log" 2>&1 & ;;
	tls-stunnel-1)
		stunnel_cfg "$tmp/$row-$n.conf" client "$p1" "$p2"
		stunnel4 "$tmp/$row-$n.conf" >>"$log" 2>&1 & ;;
	tls-stunnel-2)
		stunnel_cfg "$tmp/$row-$n.conf" server "$p2" "$p3"
		stunnel4 "$tmp/$row-$n.conf" >>"$log" 2>&1 & ;;
	tls-socat-1)
		OPENSSL_CONF=$tmp/openssl-socat.cnf socat -b $sb \
		    "TCP-LISTEN:$p1,bind=127.0.0.1,reuseaddr,fork,nodelay" \
		    "OPENSSL:127.0.0.1:$p2,cafile=$tmp/cert.pem,commonname=localhost,nodelay" \
		    2>>"$log" & ;;
	tls-socat-2)
		OPENSSL_CONF=$tmp/openssl-socat.cnf socat -b $sb \
		    "OPENSSL-LISTEN:$p2,bind=127.0.0.1,reuseaddr,fork,cert=$tmp/cert.pem,key=$tmp/key.pem,verify=0,nodelay" \
		    "TCP:127.0.0.1:$p3,nodelay" 2>>"$log" & ;;
	plain-socat-1)
		socat -b $sb "TCP-LISTEN:$p1,bind=127.0.0.1,reuseaddr,fork,nodelay" \
		    "TCP:127.0.0.1:$p2,nodelay" 2>>"$log" & ;;
	plain-socat-2)
		socat -b $sb "TCP-LISTEN:$p2,bind=127.0.0.1,reuseaddr,fork,nodelay" \
		    "TCP:127.0.0.1:$p3,nodelay" 2>>"$log" & ;;
	*) echo "relay.sh: no row $row" >&2; exit 2 ;;
	esac
	last_pid=$!
	pids="$pids $last_pid"
}

listening() { # PORT
	[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

wait_listening() { # PORT PID
	local i
	for i in $(seq 200); do
		listening "$1" && return 0
		kill -0 "$2" 2>/dev/null || break
		sleep 0.025
	done
	echo "relay.sh: nothing listens on $1 (row $row); log:" >&2
	cat "$tmp"/*.log >&2 2>/dev/null || true
	exit 1
}

# CPU ticks of a process and its reaped children, and its minor page
# faults (with its reaped children's).
cpu_ticks() { # PID
	local s
	s=$(cat "/proc/$1/stat") || { echo 0; return; }
	s=${s##*) }
	set -- $s # field 3 of stat is $1 now
	echo $((${12} + ${13} + ${14} + ${15}))
}
min_faults() { # PID
	local s
	s=$(cat "/proc/$1/stat") || { echo 0; return; }
	s=${s##*) }
	set -- $s
	echo $((${8} + ${9}))
}

# Wait until a proxy has no child left (socat forks one per connection;
# its CPU time is in cutime/cstime once reaped).
wait_children() { # PID
	local i
	for i in $(seq 400); do
		[ -z "$(pgrep -P "$1" 2>/dev/null)" ] && return 0
		sleep 0.025
	done
}

# Ports below the ephemeral range (32768 and up here), not in use at all.
port=$((10000 + $$ % 1000 * 20))
next_ports() {
	local p
	while :; do
		port=$((port + 3))
		[ $port -gt 32000 ] && port=10000
		for p in $port $((port + 1)) $((port + 2)); do
			[ -n "$(ss -Htan "sport = :$p" 2>/dev/null)" ] && continue 2
		done
		p1=$port p2=$((port + 1)) p3=$((port + 2))
		return
	done
}

# Check that the TLS-to-plain proxy of a row settles on TLS 1.3 with
# $SUITE when a client offers AES-256-GCM first.
check_suite() { # ROW P2 P3
	local out sinkpid
	# a target to connect to, so that the proxy does not close the
	# client while its handshake is running
	socat -u "TCP-LISTEN:$3,bind=127.0.0.1,reuseaddr" /dev/null 2>/dev/null &
	sinkpid=$!
	wait_listening "$3" "$sinkpid"
	out=$(openssl s_client -connect "127.0.0.1:$2" -brief -tls1_3 \
	    -ciphersuites "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:$SUITE" \
	    </dev/null 2>&1) || true
	kill "$sinkpid" 2>/dev/null || true
	wait "$sinkpid" 2>/dev/null || true
	case $out in
	*"Ciphersuite: $SUITE"*) ;;
	*) echo "relay.sh: $1: server proxy did not pick $SUITE:" >&2
	   echo "$out" | head -5 >&2; exit 1 ;;
	esac
}

# One run of a row: sets result to "seconds bytes cpu1 cpu2 cpu-ends
# faults" (CPU seconds of proxy 1, proxy 2, and relay-peer's client and
# sink; minor page faults of both proxies);
# exits on a failed or incomplete transfer.
run_row() { # ROW HASH(0|1) NBYTES
	local row=$1 hash=$2 n=$3 a= b= ca0=0 cb0=0 ca1=0 cb1=0 out rc f0=0 f1=0
	next_ports
	if [ "$row" = plain-direct ]; then
		p1=$p3
	else
		start_proxy "$row" 2 "$p1" "$p2" "$p3"; b=$last_pid
		wait_listening "$p2" "$b"
		start_proxy "$row" 1 "$p1" "$p2" "$p3"; a=$last_pid
		wait_listening "$p1" "$a"
		if [ "$hash" = 1 ] && [ "${row#tls-}" != "$row" ]; then
			check_suite "$row" "$p2" "$p3"
			wait_children "$b"
		fi
		ca0=$(cpu_ticks "$a") cb0=$(cpu_ticks "$b")
		f0=$(( $(min_faults "$a") + $(min_faults "$b") ))
	fi
	rc=0
	out=$("$peer" -c "$p1" -s "$p3" -n "$n" $([ "$hash" = 1 ] && echo -H)) || rc=$?
	if [ -n "$a" ]; then
		wait_children "$a"; wait_children "$b"
		ca1=$(cpu_ticks "$a") cb1=$(cpu_ticks "$b")
		f1=$(( $(min_faults "$a") + $(min_faults "$b") ))
		kill "$a" "$b" 2>/dev/null || true
		wait "$a" "$b" 2>/dev/null || true
		pids=
	fi
	if [ $rc != 0 ]; then
		echo "relay.sh: $row: transfer failed ($out); logs:" >&2
		tail -n 5 "$tmp"/"$row"-*.log >&2 2>/dev/null || true
		exit 1
	fi
	[ "$hash" = 1 ] && echo "   check $row: $out" >&2
	local tck
	tck=$(getconf CLK_TCK)
	set -- $out
	result="${2#seconds=} ${1#bytes=} $(awk -v a=$((ca1 - ca0)) -v b=$((cb1 - cb0)) -v t="$tck" \
	    'BEGIN { printf "%.2f %.2f", a / t, b / t }') ${4#cpu=} $((f1 - f0))"
}

# ---- the run ----
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "relay bench  $(date -u '+%Y-%m-%d %H:%M UTC')  ${cpu:-unknown CPU}, $(nproc) cores, Linux $(uname -r)"
echo "$("$strata" --version 2>&1 | head -n 1)  $(haproxy -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3)  $(stunnel4 -version 2>&1 | sed -n 's/^stunnel \([0-9.]*\).*/stunnel \1/p' | head -n 1)  $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/socat \1/p')  $(openssl version)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A res
if [ "$warm" = 1 ]; then
	echo "warm-up and check: one run per row with SHA-256 at both ends" >&2
	for row in $rows; do
		run_row "$row" 1 "$bytes"
	done
fi
read -ra rowv <<<"$rows"
nrows=${#rowv[@]}
for i in $(seq "$runs"); do
	# rotate the order each round so no row always follows the same one
	for k in $(seq 0 $((nrows - 1))); do
		row=${rowv[$(( (k + i - 1) % nrows ))]}
		run_row "$row" 0 "$bytes"
		res[$row]="${res[$row]:-}$result;"
		[ "$verbose" = 1 ] && echo "   run $i $row: $result" >&2
	done
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- the table ----
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END {
	if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A mbs cpg cpa cpb cpe flt lo hi
for row in $rows; do
	ms= cs= as= bs= es= fs=
	IFS=';' read -ra rr <<<"${res[$row]}"
	for r in "${rr[@]}"; do
		set -- $r
		ms="$ms $(awk -v s="$1" -v n="$2" 'BEGIN { printf "%.1f", n / s / 1e6 }')"
		cs="$cs $(awk -v n="$2" -v a="$3" -v b="$4" 'BEGIN { printf "%.3f", (a + b) / (n / 1073741824) }')"
		as="$as $(awk -v n="$2" -v a="$3" 'BEGIN { printf "%.3f", a / (n / 1073741824) }')"
		bs="$bs $(awk -v n="$2" -v b="$4" 'BEGIN { printf "%.3f", b / (n / 1073741824) }')"
		es="$es $(awk -v n="$2" -v e="$5" 'BEGIN { printf "%.3f", e / (n / 1073741824) }')"
		fs="$fs $(awk -v n="$2" -v f="$6" 'BEGIN { printf "%.0f", f / (n / 1073741824) }')"
	done
	mbs[$row]=$(echo $ms | median)
	cpg[$row]=$(echo $cs | median)
	cpa[$row]=$(echo $as | median)
	cpb[$row]=$(echo $bs | median)
	cpe[$row]=$(echo $es | median)
	flt[$row]=$(echo $fs | median)
	lo[$row]=$(echo $ms | tr ' ' '\n' | sort -g | head -n 1)
	hi[$row]=$(echo $ms | tr ' ' '\n' | sort -g | tail -n 1)
done

label() {
	case $1 in
	tls-strata) echo "strata proxy" ;;
	tls-haproxy) echo "HAProxy (nbthread 1)" ;;
	tls-stunnel) echo "stunnel" ;;
	tls-socat) echo "socat (-b 262144)" ;;
	*-socat-8k) echo "ref: socat, default -b 8192" ;;
	*-strata-wdef) echo "ref: strata, default --workers" ;;
	plain-direct) echo "ref: client -> sink, no proxy" ;;
	plain-strata) echo "strata proxy" ;;
	*-strata-alt) echo "ref: strata proxy, -a binary" ;;
	plain-haproxy) echo "HAProxy (nbthread 1)" ;;
	plain-haproxy-splice) echo "ref: HAProxy + splice" ;;
	plain-socat) echo "socat (-b 262144)" ;;
	esac
}

table() { # PREFIX TITLE
	case " $rows" in *" $1"-*) ;; *) return 0 ;; esac
	echo
	echo "$2"
	printf '   %-34s %8s %10s %8s %8s %8s %9s %17s\n' relay "MB/s" "CPU s/GiB" "proxy 1" "proxy 2" "ends" "faults" "MB/s min-max"
	for row in $rows; do
		case $row in "$1"-*) ;; *) continue ;; esac
		printf '   %-34s %8.1f %10.3f %8.3f %8.3f %8.3f %9.0f %8.1f-%-8.1f\n' "$(label "$row")" \
		    "${mbs[$row]}" "${cpg[$row]}" "${cpa[$row]}" "${cpb[$row]}" "${cpe[$row]}" "${flt[$row]}" "${lo[$row]}" "${hi[$row]}"
	done
}

ratio() { # LABEL ROW-A ROW-B TARGET
	[ -n "${mbs[$2]:-}" ] && [ -n "${mbs[$3]:-}" ] || return 0
	awk -v l="$1" -v ma="${mbs[$2]}" -v mb="${mbs[$3]}" -v ca="${cpg[$2]}" \
	    -v cb="${cpg[$3]}" -v t="$4" 'BEGIN {
		r = ma / mb
		v = t == "" ? "" : sprintf("  target >= %.2fx: %s", t, r >= t ? "met" : "MISS")
		printf "   %-30s MB/s %.3fx   CPU per GiB %.3fx%s\n", l, r, ca / cb, v }'
}

gib=$(awk -v n="$bytes" 'BEGIN { printf "%.3f", n / 1073741824 }')
table tls "TLS tunnel: client -> plain-to-TLS proxy -> TLS-to-plain proxy -> sink, $bytes bytes ($gib GiB), TLS 1.3 $SUITE, median of $runs"
table plain "Plain relay: client -> TCP proxy -> TCP proxy -> sink, $bytes bytes, median of $runs"
echo
echo "Ratios (strata / other; MB/s higher is better, CPU per GiB lower is better)"
ratio "TLS, strata/HAProxy" tls-strata tls-haproxy 1.25
ratio "TLS, strata/stunnel" tls-strata tls-stunnel 1.5
ratio "TLS, strata/socat" tls-strata tls-socat ""
ratio "TLS, -a strata/HAProxy" tls-strata-alt tls-haproxy ""
ratio "TLS, -a strata/stunnel" tls-strata-alt tls-stunnel ""
ratio "plain, strata/HAProxy" plain-strata plain-haproxy 0.9
ratio "plain, strata/HAProxy+splice" plain-strata plain-haproxy-splice ""
ratio "plain, strata/socat" plain-strata plain-socat ""
ratio "plain, -a strata/HAProxy" plain-strata-alt plain-haproxy ""
