#!/usr/bin/env python3
"""Load driver for strata's fault-and-load scripts (issue 7).

  loadgen.py cycles --port P --count N [--tls] [--workers W] [--pids ...]
      N connect-and-close cycles, each a TLS handshake (with --tls), a line
      there and back through an echo, and a close: one in three graceful
      (close_notify), one without close_notify, one right after the
      handshake with the line unread.
  loadgen.py streams --port P --conns N --bytes B [--seconds S] [--pids ...]
      N connections at once, each sending B bytes and reading the echo
      back, then half-closing; SHA-256 of what went out and of what came
      back compared per connection. With --seconds, connections are
      replaced as they finish until S seconds passed (the soak), and the
      RSS of --pids is sampled every --every seconds.

Only the standard library: selectors, nonblocking sockets, hashlib, ssl.
Prints a summary; exit status 0 only if every stream came back intact.
"""
import argparse
import hashlib
import os
import random
import selectors
import socket
import ssl
import sys
import threading
import time

CHUNK = 16384
# 256 byte values onto 32 letters: about 5 bits a byte, so deflate has
# work to do (ratio about 0.65) and the stream is never periodic.
TABLE = bytes(b"abcdefghijklmnopqrstuvwxyz .,;\n-"[i % 32] for i in range(256))


def proc_status(pid):
    """(VmRSS KiB, open fds) of a process, or (None, None) if it is gone."""
    rss = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None, None
    return rss, fds


class Stream:
    """One connection: a deterministic text, sent and checked by SHA-256."""

    def __init__(self, ident, total):
        self.ident = ident
        self.total = total
        self.rng = random.Random(ident)
        self.sent = 0
        self.got = 0
        self.out_hash = hashlib.sha256()
        self.in_hash = hashlib.sha256()
        self.pending = memoryview(b"")
        self.chunk_no = 0
        self.shut = False
        self.done = False
        self.error = None
        self.sock = None

    def next_chunk(self):
        head = b"conn %08d chunk %08d\n" % (self.ident, self.chunk_no)
        n = min(CHUNK, self.total - self.sent - len(self.pending)) - len(head)
        body = self.rng.randbytes(max(n, 0)).translate(TABLE)
        data = (head + body)[: self.total - self.sent]
        self.chunk_no += 1
        self.out_hash.update(data)
        return memoryview(data)

    def want_write(self, window):
        # an application window: no more than this in flight, so what the
        # pipeline can hold for a connection is bounded whatever its parts
        # do (strata listen --echo has no back-pressure of its own)
        return not self.shut and self.sent - self.got < window

    def on_write(self, window):
        while self.sent - self.got < window:
            if not self.pending:
                if self.sent >= self.total:
                    self.sock.shutdown(socket.SHUT_WR)
                    self.shut = True
                    return
                self.pending = self.next_chunk()
            try:
                n = self.sock.send(self.pending)
            except BlockingIOError:
                return
            self.sent += n
            self.pending = self.pending[n:]
            if n == 0:
                return

    def on_read(self):
        while True:
            try:
                data = self.sock.recv(262144)
            except BlockingIOError:
                return
            except OSError as e:
                self.error = f"read: {e}"
                self.done = True
                return
            if not data:
                self.done = True
                if self.got != self.total:
                    self.error = f"EOF after {self.got} of {self.total} bytes"
                elif self.in_hash.digest() != self.out_hash.digest():
                    self.error = "SHA-256 mismatch"
                return
            self.got += len(data)
            self.in_hash.update(data)
            if self.got > self.total:
                self.error = f"{self.got} bytes back, {self.total} sent"


def run_streams(args):
    sel = selectors.DefaultSelector()
    live = {}
    next_id = 0
    results = {"ok": 0, "bad": [], "bytes_out": 0, "bytes_in": 0, "started": 0}
    start = time.monotonic()
    deadline = start + args.seconds if args.seconds else None
    samples = []
    last_sample = 0.0
    last_report = start

    def start_one():
        nonlocal next_id
        s = Stream(next_id + args.seed, args.bytes)
        next_id += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", args.port))
        except BlockingIOError:
            pass
        s.sock = sock
        live[sock.fileno()] = s
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, s)
        results["started"] += 1

    def finish(s):
        sel.unregister(s.sock)
        del live[s.sock.fileno()]
        s.sock.close()
        results["bytes_out"] += s.sent
        results["bytes_in"] += s.got
        if s.error:
            results["bad"].append((s.ident, s.error, time.monotonic() - start))
        else:
            results["ok"] += 1

    def sample(now):
        row = [now - start]
        for pid in args.pids:
            rss, fds = proc_status(pid)
            row += [rss, fds]
        samples.append(row)
        if args.every:
            cols = " ".join(f"{r if r is not None else '-':>9}" for r in row[1::2])
            print(f"  {row[0]:7.1f} s  RSS KiB: {cols}   "
                  f"{results['ok']} streams done, "
                  f"{(results['bytes_out'] + sum(x.sent for x in live.values())) / 2**20:.0f} MiB out",
                  flush=True)

    if args.pids:
        sample(time.monotonic())
        last_sample = time.monotonic()
    # connect in batches: the listen backlog is finite
    while len(live) < args.conns:
        for _ in range(min(100, args.conns - len(live))):
            start_one()
        time.sleep(0.02)
    if args.hold:
        # connected, nothing sent: the proxies' handshakes behind them
        # finish before the bulk data competes with them for the CPU
        for s in live.values():
            sel.modify(s.sock, selectors.EVENT_READ, s)
        time.sleep(args.hold)
        for s in live.values():
            sel.modify(s.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, s)
        start = time.monotonic()
    while live:
        now = time.monotonic()
        if args.every and now - last_sample >= args.every:
            sample(now)
            last_sample = now
        if not args.every and now - last_report >= 10:
            print(f"  {now - start:6.1f} s: {len(live)} live, {results['ok']} done, "
                  f"{results['bytes_in'] / 2**20:.0f} MiB back so far", flush=True)
            last_report = now
        events = sel.select(timeout=0.5)
        for key, mask in events:
            s = key.data
            if mask & selectors.EVENT_WRITE and s.want_write(args.window):
                try:
                    s.on_write(args.window)
                except OSError as e:
                    s.error = f"write: {e}"
                    s.done = True
            if mask & selectors.EVENT_READ and not s.done:
                s.on_read()
            if s.done:
                finish(s)
                if deadline and time.monotonic() < deadline:
                    start_one()
                continue
            # watch writability only while there is something to send
            want = selectors.EVENT_READ
            if s.want_write(args.window):
                want |= selectors.EVENT_WRITE
            if key.events != want:
                sel.modify(s.sock, want, s)
        if time.monotonic() - start > args.timeout + (args.seconds or 0):
            for s in list(live.values()):
                s.error = f"timed out: {s.sent} sent, {s.got} back"
                finish(s)
    took = time.monotonic() - start
    if args.pids:
        sample(time.monotonic())
    return results, took, samples


def minutes(samples, col, warm):
    """Per minute after the warm-up: (start s, min, median, max) of a
    column of the samples."""
    out = []
    t = warm
    last = samples[-1][0] if samples else 0
    while t < last:
        v = sorted(r[col] for r in samples
                   if t <= r[0] < t + 60 and r[col] is not None)
        if v:
            out.append((t, v[0], v[len(v) // 2], v[-1]))
        t += 60
    return out


def verdict_flat(samples, col, warm):
    """FLAT if, after the warm-up, the last minute's median and peak RSS
    are within 5 % (or 2 MiB) of the first minute's; the slope is that
    of the per-minute medians (KiB a minute)."""
    m = minutes(samples, col, warm)
    if len(m) < 3:
        return "too few samples", m, 0
    slack = lambda v: max(2048, v * 0.05)
    _, _, med0, max0 = m[0]
    _, _, med1, max1 = m[-1]
    ok = med1 <= med0 + slack(med0) and max1 <= max0 + slack(max0)
    n = len(m)
    mt = sum(x[0] for x in m) / n
    mv = sum(x[2] for x in m) / n
    slope = sum((x[0] - mt) * (x[2] - mv) for x in m) / max(
        sum((x[0] - mt) ** 2 for x in m), 1e-9) * 60
    return ("FLAT" if ok else "GROWING"), m, slope


def print_verdicts(samples, names, warm):
    for i, name in enumerate(names):
        v, m, slope = verdict_flat(samples, 1 + 2 * i, warm)
        print(f"{name}, per minute after {warm:.0f} s of warm-up "
              f"(RSS KiB: min / median / max):")
        for t, lo, med, hi in m:
            print(f"  {t:5.0f}-{t + 60:<5.0f} s  {lo:>8} {med:>8} {hi:>8}")
        print(f"verdict {name}: {v} (median slope {slope:+.0f} KiB/min)")


def cmd_curve(args):
    """Verdicts again from a saved run's output (its "RSS curve")."""
    samples, names, on = [], None, False
    with open(args.file) as f:
        for line in f:
            if line.startswith("RSS curve"):
                on = True
                continue
            if on and line.strip().startswith("t (s)"):
                names = line.split()[2:]
                continue
            if on:
                parts = line.split()
                try:
                    vals = [float(parts[0])] + [int(x) for x in parts[1:]]
                except (ValueError, IndexError):
                    if samples:
                        break
                    continue
                row = [vals[0]]
                for v in vals[1:]:
                    row += [v, None]
                samples.append(row)
    print_verdicts(samples, names or [], args.warm)
    return 0


def cmd_streams(args):
    results, took, samples = run_streams(args)
    print(f"streams: {results['started']} connections, {results['ok']} intact, "
          f"{len(results['bad'])} failed")
    print(f"bytes: {results['bytes_out']} sent, {results['bytes_in']} echoed "
          f"back ({results['bytes_out'] / 2**30:.2f} GiB each way through "
          f"the proxies) in {took:.1f} s, "
          f"{results['bytes_in'] / took / 2**20:.1f} MiB/s echoed")
    mism = sum(1 for _, e, _ in results["bad"] if "SHA-256" in e)
    print(f"SHA-256 mismatches: {mism}")
    kinds = {}
    for _, err, _ in results["bad"]:
        k = "".join("N" if c.isdigit() else c for c in err)
        kinds[k] = kinds.get(k, 0) + 1
    for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {n:5d} x {k}")
    for ident, err, t in results["bad"][:10]:
        print(f"  stream {ident}: {err} (at {t:.1f} s)")
    if args.pids and args.every and args.seconds:
        print("RSS curve (KiB), time since start:")
        names = args.names or [str(p) for p in args.pids]
        print("  " + f"{'t (s)':>7}  " + " ".join(f"{n:>10}" for n in names))
        for row in samples:
            print("  " + f"{row[0]:7.1f}  " + " ".join(
                f"{(row[1 + 2 * i] if row[1 + 2 * i] is not None else '-'):>10}"
                for i in range(len(args.pids))))
        print_verdicts(samples, names, args.warm)
    return 0 if not results["bad"] else 1


# ---- cycles ----

def one_cycle(args, ctx, kind):
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    s = raw
    try:
        if ctx:
            s = ctx.wrap_socket(raw, server_hostname="localhost")
        if kind == 2:
            s.sendall(b"ping\n")  # closed unread, right after the handshake
            raw.close() if s is raw else s.close()
            return True
        s.sendall(b"ping\n")
        got = b""
        while len(got) < 5:
            d = s.recv(5 - len(got))
            if not d:
                return False
            got += d
        if got != b"ping\n":
            return False
        if kind == 0 and ctx:
            # close_notify, then FIN, not waiting for the server's
            # close_notify (strata's own close, Go's, s_client's); a
            # blocking unwrap() would wait for it
            s.setblocking(False)
            try:
                s = s.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        s.close()
        return True
    except (OSError, ssl.SSLError):
        return False
    finally:
        raw.close()


def cmd_cycles(args):
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.ca) if args.ca else \
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if not args.ca:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    counter = {"next": 0, "ok": 0, "bad": 0}
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = counter["next"]
                if i >= args.count:
                    return
                counter["next"] += 1
            ok = one_cycle(args, ctx, i % 3)
            with lock:
                counter["ok" if ok else "bad"] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for t in threads:
        t.start()
    mark = args.every
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        done = counter["ok"] + counter["bad"]
        if args.pids and args.every and done >= mark:
            mark += args.every
            cols = "  ".join("%s fds %s RSS %s KiB" % ((name,) + tuple(
                reversed(proc_status(pid)))) for name, pid in
                zip(args.names or args.pids, args.pids))
            print(f"  {done:6d} cycles {time.monotonic() - t0:6.1f} s  {cols}",
                  flush=True)
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    print(f"cycles: {args.count} in {took:.1f} s ({args.count / took:.0f}/s), "
          f"{counter['ok']} ok, {counter['bad']} failed")
    return 0 if not counter["bad"] else 1


def cmd_probe(args):
    """TLS handshakes, one every --every seconds, until --stop exists (or
    --seconds pass): how long a new connection waits while the proxy is
    busy with bulk data. Prints each, then the count, median and max."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    took, failed = [], 0
    t_end = time.monotonic() + args.seconds
    while time.monotonic() < t_end and not os.path.exists(args.stop):
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", args.port),
                                          timeout=args.timeout) as raw:
                with ctx.wrap_socket(raw) as tls:
                    tls.do_handshake()
                    took.append(time.monotonic() - t0)
                    # close_notify, so that the proxy logs a clean end
                    try:
                        tls.unwrap()
                    except (OSError, ssl.SSLError):
                        pass
        except (OSError, ssl.SSLError) as e:
            failed += 1
            print(f"probe: handshake failed after "
                  f"{time.monotonic() - t0:.2f} s: {e}", flush=True)
        time.sleep(max(0.0, args.every - (time.monotonic() - t0)))
    took.sort()
    if took:
        print(f"TLS handshakes during the run: {len(took)} ok, {failed} "
              f"failed; median {took[len(took) // 2]:.3f} s, "
              f"max {took[-1]:.3f} s")
    else:
        print(f"TLS handshakes during the run: none ok, {failed} failed")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cycles")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--count", type=int, default=10000)
    c.add_argument("--tls", action="store_true")
    c.add_argument("--ca")
    c.add_argument("--workers", type=int, default=4)
    c.add_argument("--pids", type=int, nargs="*", default=[])
    c.add_argument("--names", nargs="*")
    c.add_argument("--every", type=int, default=1000,
                   help="print the --pids' fds and RSS every this many cycles")
    s = sub.add_parser("streams")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--conns", type=int, default=1000)
    s.add_argument("--bytes", type=int, default=2 << 20)
    s.add_argument("--seconds", type=float, default=0,
                   help="keep replacing finished streams for this long (soak)")
    s.add_argument("--timeout", type=float, default=1800)
    s.add_argument("--hold", type=float, default=0,
                   help="seconds to wait after connecting before sending")
    s.add_argument("--window", type=int, default=256 << 10,
                   help="bytes a connection may have in flight")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--pids", type=int, nargs="*", default=[])
    s.add_argument("--names", nargs="*")
    s.add_argument("--every", type=float, default=0,
                   help="sample the RSS of --pids this often (seconds)")
    s.add_argument("--warm", type=float, default=120,
                   help="soak: seconds of warm-up left out of the verdict")
    h = sub.add_parser("probe")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--every", type=float, default=2)
    h.add_argument("--seconds", type=float, default=3600)
    h.add_argument("--timeout", type=float, default=60)
    h.add_argument("--stop", required=True,
                   help="the probe ends once this file exists")
    v = sub.add_parser("curve")
    v.add_argument("file")
    v.add_argument("--warm", type=float, default=120)
    args = p.parse_args()
    sys.exit({"cycles": cmd_cycles, "streams": cmd_streams,
              "curve": cmd_curve, "probe": cmd_probe}[args.cmd](args))


if __name__ == "__main__":
    main()
