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

With --bin-dir (cargo's profile dir, holding torii and examples/torii-bench)
it also measures torii's CPU per request with each route count, as bench.py
measures it (TLS 1.3 in, h2c to the torii-bench backend, h2load -c4 -m16,
100 B unary gRPC, one worker, logs off, CPU from /proc): the requests match
a gRPC-service route placed just before the catch-all, so without an index
each passes every other route first. Route counts alternate over --rounds
rounds; medians. Needs a quiet machine.
Standard library only; everything started is stopped on exit.
"""

import argparse
import os
import re
import signal
import statistics
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


def config(n, port, bench=None):
    """N routes: thirds of host + prefix, exact path, gRPC service; the
    last one catches the rest. With `bench` (certificates and the backend's
    port), a TLS listener whose second-to-last route takes the benchmark's
    gRPC service to the backend."""
    lines = [
        "access_log: off",
        "listeners:",
        "  - name: scale",
        f"    address: 127.0.0.1:{port}",
    ]
    if bench:
        lines += [
            "    tls:",
            "      certificates:",
            f"        - cert: {bench['cert']}",
            f"          key: {bench['key']}",
            "      alpn: [h2]",
        ]
    lines.append("    routes:")
    for i in range(max(0, n - 2 if bench else n - 1)):
        kind = i % 3
        if kind == 0:
            m = f"{{ host: svc{i}.example.com, prefix: /api/v{i % 7}/ }}"
        elif kind == 1:
            m = f"{{ path: /static/page{i}.html }}"
        else:
            m = f"{{ grpc_service: pkg{i % 97}.Service{i} }}"
        lines.append(f"      - match: {m}")
        lines.append(f"        cluster: c{i % 50}")
    if bench:
        lines.append("      - match: { grpc_service: torii.echo.v1.Echo }")
        lines.append("        cluster: backend")
    lines.append("      - cluster: c0")
    lines.append("clusters:")
    if bench:
        lines.append("  - name: backend")
        lines.append(f'    endpoints: ["127.0.0.1:{bench["backend_port"]}"]')
        lines.append("    protocol: h2c")
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


def cpu_per_request(a, work, counts):
    """torii's CPU per request with each route count, alternating over the
    rounds; {count: [µs per request, one per round]}."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench

    b = argparse.Namespace(work=work, bin_dir=a.bin_dir, nofile=4096, maxconn=1000)
    ctx = bench.Bench(b)
    ctx.certs = bench.last_json(bench.run_tool([ctx.tool, "setup", "--dir", work / "certs"], 60, "setup"), "setup")
    ctx.backend = bench.start([ctx.tool, "backend"], name="backend", workdir=work, stdout=subprocess.PIPE)
    try:
        m = re.search(r"address=127\.0\.0\.1:(\d+)", bench._readline(ctx.backend.stdout, timeout=15) or "")
        if not m:
            raise RuntimeError("the backend did not start")
        info = dict(ctx.certs, backend_port=int(m.group(1)))
        body = ctx.certs["bodies"]["100"]
        out = {n: [] for n in counts}
        for rnd in range(a.rounds):
            order = counts if rnd % 2 == 0 else list(reversed(counts))
            for n in order:
                t = bench.Torii(f"torii-{n}", ctx)
                path = work / f"routes-{n}-tls.yaml"

                def write(t=t, n=n, path=path):
                    # start() picks the port, then asks for the config.
                    path.write_text(config(n, t.port, info))
                    return path
                t.config = write
                t.start()
                try:
                    def load(seconds):
                        cmd = ["h2load", "-t1", "-c4", "-m16", "-D", f"{round(seconds * 1000)}ms", "-d", body,
                               "-H", "content-type: application/grpc", "-H", "te: trailers", t.url()]
                        return bench.h2load_summary(bench.run_tool(cmd, seconds + 30, "h2load"))[0]
                    load(1.0)
                    pids = t.pids()
                    c0 = bench.cpu_ticks(pids)
                    ok = load(a.seconds)
                    c1 = bench.cpu_ticks(pids)
                finally:
                    t.stop()
                if not ok:
                    raise RuntimeError(f"{n} routes: no request succeeded")
                us = (c1 - c0) / bench.CLK_TCK * 1e6 / ok
                out[n].append(us)
                print(f"round {rnd + 1}: {n:6} routes: {ok / a.seconds:8.0f} req/s, {us:6.2f} µs CPU per request",
                      flush=True)
        return out
    finally:
        bench.stop(ctx.backend)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torii", type=Path, help="the torii binary (default: BIN_DIR/torii)")
    ap.add_argument("--routes", default="10,10000")
    ap.add_argument("--bin-dir", type=Path, help="also measure CPU per request (see above)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    if not a.torii and not a.bin_dir:
        sys.exit("routes.py: give --torii or --bin-dir")
    a.torii = a.torii or a.bin_dir / "torii"
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
        if a.bin_dir:
            counts = [int(x) for x in a.routes.split(",")]
            cpu = cpu_per_request(a, work, counts)
            med = {n: statistics.median(v) for n, v in cpu.items()}
            for n in counts:
                print(f"{n:6} routes: median {med[n]:.2f} µs CPU per request "
                      f"({', '.join(f'{v:.2f}' for v in cpu[n])})")
            lo, hi = med[counts[0]], med[counts[-1]]
            print(f"{counts[-1]} vs {counts[0]} routes: CPU per request {100 * (hi - lo) / lo:+.1f} % "
                  f"(bar: ≤ +10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
