#!/usr/bin/env python3
"""Run the README's proxy examples as written and check every curl.

usage: readme-examples.py STRATA_TOOL SOURCE_ROOT WORKDIR

The examples sit between "<!-- proxy-examples: start -->" and
"<!-- proxy-examples: end -->" in README.md (or, on a branch where the
README has not taken them yet, in README-proposed-tool.md). Each command
runs as written in WORKDIR, with `strata` on the PATH; only the port
numbers are swapped for free ones, so the test can run beside anything.
A command ending in '&' runs in the background and the next one waits
until it listens; every `curl` must print "hello". Exit status 0 when all
pass; otherwise a message says which command failed and how.
"""
import os
import re
import shlex
import socket
import subprocess
import sys
import time

START = "<!-- proxy-examples: start -->"
END = "<!-- proxy-examples: end -->"


def examples(root):
    for name in ("README.md", "README-proposed-tool.md"):
        path = os.path.join(root, name)
        if not os.path.exists(path):
            continue
        text = open(path).read()
        if START in text and END in text:
            block = text.split(START, 1)[1].split(END, 1)[0]
            body = block.split("```sh", 1)[1].split("```", 1)[0]
            return name, body
    sys.exit("no proxy examples between %r and %r in README.md" % (START, END))


def commands(body):
    """Logical lines: continuations joined, comments and blanks dropped."""
    out, cur = [], ""
    for line in body.splitlines():
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip() and not cur.strip().startswith("#"):
            out.append(cur.strip())
        cur = ""
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def swap_ports(cmds):
    ports = {}
    pat = re.compile(r"(?<=:)(\d{4,5})\b|(?<=http\.server )(\d{4,5})\b")

    def sub(m):
        old = m.group(0)
        if old not in ports:
            ports[old] = str(free_port())
        return ports[old]

    return [pat.sub(sub, c) for c in cmds]


def listens_on(cmd):
    """Where a background command will listen: ('tcp', port) or ('unix', path)."""
    args = shlex.split(cmd.rstrip("&"))
    if args[:3] == ["python3", "-m", "http.server"]:
        return ("tcp", int(args[3]))
    if args[:2] == ["strata", "proxy"]:
        where = args[2].split("|")[0].strip()
        if where.startswith("unix:"):
            return ("unix", where[5:])
        return ("tcp", int(where.rsplit(":", 1)[1]))
    return None


def wait_listening(where, cwd, proc, cmd):
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit("'%s' exited with %d before listening" % (cmd, proc.returncode))
        try:
            if where[0] == "tcp":
                socket.create_connection(("127.0.0.1", where[1]), 0.2).close()
            else:
                s = socket.socket(socket.AF_UNIX)
                s.connect(os.path.join(cwd, where[1]))
                s.close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit("'%s' does not listen on %s after 6 s" % (cmd, where))


def main():
    tool, root, work = sys.argv[1:4]
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(os.path.abspath(tool)) + ":" + env["PATH"]
    source, body = examples(root)
    cmds = swap_ports(commands(body))
    curls = 0
    background = []
    try:
        for cmd in cmds:
            if cmd.endswith("&"):
                # exec: the shell becomes the command, so terminate()
                # reaches it (a shell left behind would orphan it)
                p = subprocess.Popen("exec " + cmd[:-1], shell=True, cwd=work,
                                     env=env,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                background.append(p)
                where = listens_on(cmd)
                if where:
                    wait_listening(where, work, p, cmd)
                continue
            r = subprocess.run(cmd, shell=True, cwd=work, env=env,
                               capture_output=True, text=True, timeout=20)
            if r.returncode != 0:
                sys.exit("%s: '%s' failed (%d): %s" % (source, cmd, r.returncode,
                                                    r.stderr.strip()))
            if cmd.startswith("curl "):
                curls += 1
                if r.stdout != "hello\n":
                    sys.exit("%s: '%s' printed %r, not 'hello'" % (source, cmd,
                                                                   r.stdout))
    finally:
        for p in background:
            p.terminate()
        for p in background:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
    if curls < 5:
        sys.exit("%s: only %d curl checks in the examples" % (source, curls))
    print("%s: %d commands, %d curl checks, all OK" % (source, len(cmds), curls))


if __name__ == "__main__":
    main()
