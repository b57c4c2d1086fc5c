#!/usr/bin/env python3
"""Profile torii alone under one benchmark load (run through bench/profile).

  --tool callgrind  counts instructions (repeatable whatever the machine is
                    doing): torii runs under valgrind, a warm-up runs, the
                    counters are zeroed, COUNT requests run, the counters are
                    dumped. Prints instructions per request and the top
                    functions (callgrind_annotate).
  --tool perf       samples torii (cpu-clock) for SECONDS of load and prints
                    the top symbols (perf report); wall-clock, so noisy.
  --tool massif     heap profile; with --load idle, torii holds CONNECTIONS
                    idle TLS+HTTP/2 connections at the peak, so ms_print's
                    peak snapshot shows what each connection allocates.
  --tool cpu        user and system CPU per request from /proc over COUNT
                    requests (no instrumentation; noisy like the bench).
  --tool rss        idle RSS and RSS per idle TLS+HTTP/2 connection, with
                    CONNECTIONS held (the bench's memory scenario alone);
                    PROFILE_SMAPS=1 also saves /proc/PID/smaps idle and held.
  --tool strace     counts torii's system calls per request (strace -c) over
                    COUNT requests: the kernel time callgrind does not see.
  --access-log      torii with its default JSON access log on, stdout sent
                    to a file (as bench.py's torii-log); with any tool.
  --of backend      (callgrind, unary) counts the backend's instructions
                    instead, per request through torii and then direct: what
                    torii's way of forwarding (headers, HPACK choices, frame
                    batching) costs the service behind it.

Same setup as bench.py: one worker, TLS 1.3 ECDSA P-256 in, h2c to the
torii-bench backend. Everything started here is stopped on exit.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def annotate(dump):
    """callgrind_annotate's self-cost listing of a dump, and its total instructions."""
    ann = bench.run_tool(["callgrind_annotate", "--inclusive=no", dump], 120, "callgrind_annotate")
    total = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", ann)
    return ann, int(total.group(1).replace(",", "")) if total else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--tool", choices=["callgrind", "perf", "massif", "strace", "cpu", "rss"], default="callgrind")
    ap.add_argument("--load", choices=["unary", "bidi", "idle", *bench.PHASES, *bench.H1_SCENARIOS], default="unary",
                    help="phase_*: bench.py's phase scenarios (100 B), on its torii-phases config; "
                         "h1_*: its HTTP/1.1 keep-alive REST scenarios (torii in its HTTP/1.1 setup)")
    ap.add_argument("--phases-config", action="store_true",
                    help="run torii with bench.py's torii-phases config (gRPC-Web, JSON transcoding) for any load")
    ap.add_argument("--target", choices=bench.POLICY_TARGETS,
                    help="run torii with that bench.py target's config (a rate limit, a JWT, tracing, a retry "
                         "policy on its route; unary load): with callgrind, what the policy costs in instructions "
                         "per request, which a timed run cannot resolve below a microsecond")
    ap.add_argument("--connections", type=int, default=500, help="idle: connections held")
    ap.add_argument("--size", type=int, default=100, choices=bench.SIZES)
    ap.add_argument("--count", type=int, default=5000, help="callgrind: requests measured")
    ap.add_argument("--seconds", type=float, default=10.0, help="perf: seconds of load")
    ap.add_argument("--of", choices=["torii", "backend"], default="torii",
                    help="callgrind: the process measured")
    ap.add_argument("--access-log", action="store_true",
                    help="torii with its default access log on (stdout, sent to a file), as bench.py's torii-log")
    ap.add_argument("--work", type=Path, default=bench.ROOT / "bench" / "work")
    ap.add_argument("--pgid-file", type=Path)
    a = ap.parse_args()
    bench._pgid_file = a.pgid_file
    signal.signal(signal.SIGTERM, bench._on_signal)
    signal.signal(signal.SIGINT, bench._on_signal)
    a.work = a.work / time.strftime("profile-%Y%m%d-%H%M%S")
    a.work.mkdir(parents=True)

    # Bench wants the full set of options; only these matter here.
    a.nofile, a.maxconn = 4096, 1000
    b = bench.Bench(a)
    b.certs = bench.last_json(bench.run_tool([b.tool, "setup", "--dir", a.work / "certs"], 60, "setup"), "setup")
    if a.of == "backend" and (a.tool != "callgrind" or a.load != "unary"):
        sys.exit("profile: --of backend counts instructions per unary request: --tool callgrind --load unary")
    backend_argv = [b.tool, "backend"]
    backend_out = a.work / "callgrind-backend.out"
    if a.of == "backend":
        # Two workers, as in the bench (valgrind runs them one at a time).
        backend_argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={backend_out}",
                        *backend_argv, "--workers", "2"]
    b.backend = bench.start(backend_argv, name="backend", workdir=a.work, stdout=subprocess.PIPE)
    m = re.search(r"address=127\.0\.0\.1:(\d+)", bench._readline(b.backend.stdout, timeout=60) or "")
    if not m:
        sys.exit("profile: the backend did not start")
    b.backend_port = int(m.group(1))
    h1 = a.load in bench.H1_SCENARIOS
    if h1:
        b.h1_backend = bench.start([b.tool, "http-backend", "--size", "1024"], name="h1-backend", workdir=a.work,
                                   stdout=subprocess.PIPE)
        m = re.search(r"address=127\.0\.0\.1:(\d+)", bench._readline(b.h1_backend.stdout, timeout=60) or "")
        if not m:
            sys.exit("profile: the HTTP/1.1 backend did not start")
        b.h1_backend_port = int(m.group(1))
        b.h1_body = a.work / "post-1024.bin"
        b.h1_body.write_bytes(b"x" * 1024)

    phases = a.load in bench.PHASES or a.phases_config
    kind = bench.ToriiPhases if phases else bench.Torii
    if a.target:
        if phases or h1 or a.access_log or a.load != "unary":
            sys.exit("profile: --target goes with --load unary, without --access-log or --phases-config")
        t = bench.make_target(a.target, b)
    else:
        t = kind("torii-log", b, logs=True, h1=h1) if a.access_log else kind("torii", b, h1=h1)
    t.port = bench.free_port()
    conf = t.config()
    argv, _ = t.command(conf)
    out = a.work / {"callgrind": "callgrind.out", "perf": "perf.data", "massif": "massif.out",
                   "strace": "strace.txt", "cpu": "cpu.txt", "rss": "rss.txt"}[a.tool]
    if a.tool == "callgrind" and a.of == "torii":
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]
    elif a.tool == "massif":
        argv = ["valgrind", "--tool=massif", f"--massif-out-file={out}", *argv]
    log_out = open(t.log_file, "ab") if a.access_log else None
    t.proc = bench.start(argv, name="torii", workdir=a.work, stdout=log_out)
    if log_out:
        log_out.close()
    if not bench.wait_port(t.port, t.proc, timeout=60):
        sys.exit(f"profile: torii did not start (see {a.work / 'torii.err'})")
    b.probe(t)
    pid = t.proc.pid

    unit = "message" if a.load == "bidi" else "request"

    def load(count=None, seconds=None, target=t):
        if a.load == "idle":
            cmd = [b.tool, "idle", "--address", t.address, "--tls", "--connections", str(a.connections),
                   "--parallel", "8", "--hold", "5"]
            return bench.last_json(bench.run_tool(cmd, 600, "idle"), "idle")["opened"]
        if h1 or a.load in bench.PHASES:
            limit = ["-n", str(count)] if count else ["-D", f"{round(seconds * 1000)}ms"]
            cmd = (b.h1_cmd if h1 else b.phase_cmd)(target, a.load, limit)
            return bench.h2load_summary(bench.run_tool(cmd, 600, "h2load"))[0]
        if a.load == "unary":
            limit = ["-n", str(count)] if count else ["-D", f"{round(seconds * 1000)}ms"]
            cmd = b.unary_cmd(target, a.size, limit)
            o = bench.run_tool(cmd, 600, "h2load")
            r = re.search(r"(\d+) succeeded", o)
            return int(r.group(1)) if r else 0
        secs = seconds or max(2.0, count / 2000)
        cmd = [b.tool, "bidi", "--address", t.address, "--tls", "--payload", str(a.size),
               "--seconds", f"{secs:g}", "--warmup", "0"]
        return bench.last_json(bench.run_tool(cmd, secs + 120, "bidi"), "bidi")["messages"]

    try:
        if a.tool == "massif":
            n = load(count=a.count, seconds=a.seconds)
            bench.stop(t.proc, grace=30)
            ms = bench.run_tool(["ms_print", out], 120, "ms_print")
            report = a.work / "ms_print.txt"
            report.write_text(ms)
            print(f"{a.load}: {n} {'connections held' if a.load == 'idle' else 'completed'}")
            print("\n".join(ms.splitlines()[:40]))
            print(f"\nfull report (the peak snapshot's allocation tree): {report}")
        elif a.tool == "callgrind" and a.of == "backend":
            direct = bench.Direct("direct", b)
            direct.port = b.backend_port
            lines = []
            for name, target in (("through torii", t), ("direct", direct)):
                load(count=500, target=target)
                bench.run_tool(["callgrind_control", "--zero", str(b.backend.pid)], 60, "callgrind_control --zero")
                n = load(count=a.count, target=target)
                before = set(a.work.glob("callgrind-backend.out.*"))
                bench.run_tool(["callgrind_control", "--dump=measured", str(b.backend.pid)], 120,
                               "callgrind_control --dump")
                deadline = time.monotonic() + 30
                while not set(a.work.glob("callgrind-backend.out.*")) - before and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1)
                dump = sorted(set(a.work.glob("callgrind-backend.out.*")) - before, key=os.path.getmtime)[-1]
                ann, ir = annotate(dump)
                (a.work / f"callgrind-backend-{name.split()[-1]}.txt").write_text(ann)
                lines.append(f"{a.load} {a.size} B {name}: {n} completed, {ir:,} instructions in the backend, "
                             f"{ir / max(n, 1):,.0f} per {unit} ({dump.name})")
                print(lines[-1], flush=True)
            out.write_text("\n".join(lines) + "\n")
        elif a.tool == "callgrind":
            load(count=500)
            bench.run_tool(["callgrind_control", "--zero", str(pid)], 60, "callgrind_control --zero")
            n = load(count=a.count)
            bench.run_tool(["callgrind_control", "--dump=measured", str(pid)], 120, "callgrind_control --dump")
            time.sleep(1)
            dumps = sorted(a.work.glob("callgrind.out*"), key=os.path.getmtime)
            dump = [d for d in dumps if d.name != "callgrind.out"][-1]
            ann, ir = annotate(dump)
            report = a.work / "callgrind-annotate.txt"
            report.write_text(ann)
            print(f"{a.load} {a.size} B: {n} completed, {ir:,} instructions in torii, "
                  f"{ir / max(n, 1):,.0f} per {unit}")
            print("\n".join(ann.splitlines()[:60]))
            print(f"\nfull annotation: {report}; raw profile: {dump} (kcachegrind / callgrind_annotate)")
        elif a.tool == "rss":
            # The bench's memory scenario, alone: idle RSS, then RSS per held
            # idle TLS+HTTP/2 connection.
            a.idle_connections = a.connections
            if os.environ.get("PROFILE_SMAPS"):
                # Where the memory is: the process's mappings while held.
                orig = bench.rss_bytes

                def rss_and_maps(pids):
                    for p in pids:
                        with open(f"/proc/{p}/smaps") as f:
                            (a.work / f"smaps-{time.monotonic():.0f}.txt").write_text(f.read())
                    return orig(pids)
                bench.rss_bytes = rss_and_maps
            b.memory(t)
            m = {k: v[0] for k, v in b.samples.get("memory", {}).get(t.name, {}).items()}
            text = (f"idle RSS {m.get('idle_rss_mb', 0):.2f} MB; {m.get('per_conn_kb', 0):.2f} KB per idle "
                    f"TLS+HTTP/2 connection ({a.connections} held)")
            out.write_text(text + "\n")
            print(text)
        elif a.tool == "cpu":
            load(count=2000)

            def ticks():
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return int(fields[11]), int(fields[12])

            def switches():
                # Context switches of all torii's threads (each sleep in
                # epoll_wait is a voluntary one).
                vol = invol = 0
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/status") as f:
                        for line in f:
                            if line.startswith("voluntary_ctxt_switches"):
                                vol += int(line.split()[1])
                            elif line.startswith("nonvoluntary_ctxt_switches"):
                                invol += int(line.split()[1])
                return vol, invol

            hz = os.sysconf("SC_CLK_TCK")
            u0, s0 = ticks()
            v0, i0 = switches()
            n = load(count=a.count)
            u1, s1 = ticks()
            v1, i1 = switches()
            per = lambda t: t * 1e6 / hz / max(n, 1)
            text = (f"{a.load} {a.size} B: {n} completed; torii CPU per "
                    f"{unit}: user {per(u1 - u0):.2f} µs, "
                    f"system {per(s1 - s0):.2f} µs, total {per(u1 - u0 + s1 - s0):.2f} µs; "
                    f"context switches per {unit}: {(v1 - v0) / max(n, 1):.3f} voluntary, "
                    f"{(i1 - i0) / max(n, 1):.3f} involuntary")
            out.write_text(text + "\n")
            print(text)
        elif a.tool == "strace":
            load(count=500)
            rec = bench.start(["strace", "-c", "-f", "-o", out, "-p", str(pid)], name="strace", workdir=a.work)
            time.sleep(1)
            n = load(count=a.count)
            os.kill(rec.pid, signal.SIGINT)
            rec.wait(timeout=60)
            text = out.read_text()
            print(f"{a.load} {a.size} B: {n} completed; system calls in torii:")
            for line in text.splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m:
                    print(f"  {m.group(2):<16} {int(m.group(1)) / max(n, 1):6.2f} per {unit}")
            print(f"\nfull table: {out}")
        else:
            load(seconds=1.0)
            rec = bench.start(["perf", "record", "-F", "999", "-o", out, "-p", pid],
                              name="perf", workdir=a.work)
            n = load(seconds=a.seconds)
            os.kill(rec.pid, signal.SIGINT)
            rec.wait(timeout=60)
            rep = bench.run_tool(["perf", "report", "-i", out, "--no-children", "--stdio",
                                  "--sort", "symbol", "--percent-limit", "0.7"], 300, "perf report")
            report = a.work / "perf-report.txt"
            report.write_text(rep)
            print(f"{a.load} {a.size} B: {n} completed in {a.seconds:g}s")
            print("\n".join(line for line in rep.splitlines() if line.strip() and not line.startswith("#"))[:6000])
            print(f"\nfull report: {report}; raw profile: {out}")
    finally:
        bench.stop_all()


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        bench.stop_all()
