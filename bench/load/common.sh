# Shared by the load scripts (sourced): the tool, a certificate, free
# ports, background servers that are stopped on exit, /proc readings.

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOADGEN="$HERE/loadgen.py"

# The tool: $STRATA, or the first build directory's.
if [ -z "${STRATA:-}" ]; then
	for b in "$ROOT"/build/tools/strata "$ROOT"/build*/tools/strata; do
		if [ -x "$b" ]; then
			STRATA=$b
			break
		fi
	done
fi
[ -x "${STRATA:-}" ] || { echo "no strata tool: build it or set STRATA" >&2; exit 2; }

TMP=$(mktemp -d /tmp/strata-load-XXXXXX)
PIDS=""
cleanup()
{
	for p in $PIDS; do
		kill "$p" 2>/dev/null || true
	done
	for p in $PIDS; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# A self-signed P-256 certificate for localhost and 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-subj /CN=localhost -days 2 \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	-keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
CERT="cert=$TMP/cert.pem, key=$TMP/key.pem"
TRUST="ca=$TMP/cert.pem, name=localhost"

free_port()
{
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME ARGS...: the tool in the background, its log in $TMP/NAME.log;
# sets LAST_PID.
start()
{
	local name=$1
	shift
	"$STRATA" "$@" >"$TMP/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS="$PIDS $LAST_PID"
}

wait_port()
{
	local hex
	hex=$(printf '0100007F:%04X' "$1")
	for _ in $(seq 500); do
		awk -v a="$hex" '$2 == a && $4 == "0A" { f = 1 } END { exit !f }' \
			/proc/net/tcp && return 0
		sleep 0.01
	done
	echo "nothing listens on port $1" >&2
	exit 1
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }

machine()
{
	echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/'), $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "tool: $STRATA ($("$STRATA" --version)), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
}
