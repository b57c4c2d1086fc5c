#!/usr/bin/env python3
"""Routing scale: how `torii check` and a reload cope with many routes.

  python3 bench/routes.py --torii target/release/torii [--routes 10,10000]

For each route count N, writes a config whose listener has N routes (a mix
of host + prefix, exact path and gRPC service routes, as a large xDS push
would carry, and a catch-all last), then measures:
  - `torii check -c FILE`: wall time, best of 3;
  - a reload of the same file by a running `torii serve` (SIGHUP): the time
    from the signal to the "reloaded" log line, best of 3.
Does not need a quiet machine for a verdict against a 200 ms bar on these
two (they are single-threaded work; noise only makes them slower).
Standard library only; everything started is stopped on exit.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(n, port):
    """N routes: thirds of host + prefix, exact path, gRPC service; the
    last one catches the rest."""
    lines = [
        "access_log: off",
        "listeners:",
        "  - name: scale",
        f"    address: 127.0.0.1:{port}",
        "    routes:",
    ]
    for i in range(max(0, n - 1)):
        kind = i % 3
        if kind == 0:
            m = f"{{ host: svc{i}.example.com, prefix: /api/v{i % 7}/ }}"
        elif kind == 1:
            m = f"{{ path: /static/page{i}.html }}"
        else:
            m = f"{{ grpc_service: pkg{i % 97}.Service{i} }}"
        lines.append(f"      - match: {m}")
        lines.append(f"        cluster: c{i % 50}")
    lines.append("      - cluster: c0")
    lines.append("clusters:")
    for c in range(50):
        lines.append(f"  - name: c{c}")
        lines.append(f'    endpoints: ["127.0.0.1:{10000 + c}"]')
    return "\n".join(lines) + "\n"


def time_check(torii, path):
    best = None
    for _ in range(3):
        t = time.monotonic()
        r = subprocess.run([torii, "check", "-c", path], capture_output=True, text=True, timeout=120)
        dt = time.monotonic() - t
        if r.returncode != 0:
            raise RuntimeError(f"torii check failed: {r.stdout[-500:]} {r.stderr[-500:]}")
        best = dt if best is None else min(best, dt)
    return best


def time_reload(torii, path, work):
    err = open(work / "serve.err", "w+b")
    p = subprocess.Popen([torii, "serve", "-c", path, "--workers", "1", "--log-level", "info"],
                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        def wait_for(text, count, timeout=60):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if p.poll() is not None:
                    raise RuntimeError("torii serve exited: " + (work / "serve.err").read_text()[-500:])
                if (work / "serve.err").read_text(errors="replace").count(text) >= count:
                    return time.monotonic()
                time.sleep(0.002)
            raise RuntimeError(f"no {text!r} within {timeout}s")

        wait_for("listening", 1)
        best = None
        for i in range(3):
            # The file is the same: torii reloads it on SIGHUP all the same.
            t = time.monotonic()
            os.kill(p.pid, signal.SIGHUP)
            done = wait_for("reloaded", i + 1)
            dt = done - t
            best = dt if best is None else min(best, dt)
        return best
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)
        err.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torii", required=True, type=Path)
    ap.add_argument("--routes", default="10,10000")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="torii-routes-") as d:
        work = Path(d)
        for n in (int(x) for x in a.routes.split(",")):
            path = work / f"routes-{n}.yaml"
            path.write_text(config(n, free_port()))
            check = time_check(a.torii, path)
            reload = time_reload(a.torii, path, work)
            size = path.stat().st_size
            print(f"{n:6} routes ({size / 1024:.0f} KiB): torii check {check * 1000:7.1f} ms, "
                  f"reload {reload * 1000:7.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
