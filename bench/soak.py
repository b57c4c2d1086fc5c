#!/usr/bin/env python3
"""Soak: torii under steady load for a long while, with everything that
usually makes a proxy leak going on at once; RSS, open file descriptors and
error counts sampled every 10 s must stay flat.

Run through bench/soak (which installs h2load and builds the binaries).
What runs, all on loopback, every wait bounded, every process in its own
process group and killed on exit:

- torii (`serve --workers 1`, TLS with ALPN h2, h2c to the backend) in front
  of `torii-bench backend` (a tonic echo service, one worker);
- saturation first: h2load at full speed for 5 s (unary, 100 B); then, for
  --minutes, about half of it: unary gRPC at 40 % of saturation
  (`h2load --rps`, 10 s windows) plus bidi ping-pong (`torii-bench bidi`,
  1 connection x 2 streams, 10 s windows);
- a slow client (raw HTTP/2 over TLS, stdlib only): 64 KiB echoes with a
  16 KiB stream window it tops up 2 KiB every 50 ms, and every fifth
  connection stops reading mid-response, holds the connection 15 s, then
  drops it;
- a config reload every 30 s (the file rewritten with another route
  order, then SIGHUP), and an upstream restart every 2 minutes (the backend
  stopped with SIGTERM and started again on the same port).

Verdict (printed and kept in bench/results/soak-DATE.{json,md}); after a
one-minute warm-up (or a sixth of the run, whichever is shorter), samples
are split in thirds:
- RSS flat: the last third's peak <= 1.25 x the first third's peak + 8 MiB;
- open fds flat: the last third's peak <= the first third's peak + 16;
- errors flat: errors (the clients' and torii's non-OK requests) in
  windows away from an upstream restart (not within 15 s after one) stay
  under 0.1 % of the requests torii answered in them, and the last third
  has no more of them than the first third + 2; torii answered requests in
  every window;
- every reload succeeded (torii_config_reloads_total{result="success"} counts
  them all) and torii is still up at the end.
Exit 0 when all hold.

Standard library only.
"""

import argparse
import datetime
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402  (the benchmark's process helpers)

SAMPLE_EVERY = 10.0
RELOAD_EVERY = 30.0
RESTART_EVERY = 120.0
AFTER_RESTART = 15.0


def log(*args):
    print("soak:", *args, file=sys.stderr, flush=True)


class Stats:
    """Counters the load threads add to (under one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, **kv):
        with self.lock:
            for k, v in kv.items():
                self.c[k] = self.c.get(k, 0) + v

    def snapshot(self):
        with self.lock:
            return dict(self.c)


# ------------------------------------------------------------ slow client

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """A literal header field without indexing, new name (RFC 7541 6.2.2)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


class Hpack:
    """Just enough HPACK (RFC 7541) to read torii's trailers: torii never
    Huffman-codes, so strings are raw; names by index are only needed for
    the dynamic table (grpc-status is not in the static one)."""

    def __init__(self):
        self.table, self.max = [], 4096

    @staticmethod
    def _int(b, i, prefix):
        mask = (1 << prefix) - 1
        v = b[i] & mask
        i += 1
        if v < mask:
            return v, i
        shift = 0
        while True:
            v += (b[i] & 0x7F) << shift
            i += 1
            if not b[i - 1] & 0x80:
                return v, i
            shift += 7

    def _str(self, b, i):
        huffman = b[i] & 0x80
        n, i = self._int(b, i, 7)
        return (None if huffman else b[i : i + n]), i + n

    def _name(self, index):
        if index > 61:
            return self.table[index - 62][0]
        return None  # a static name: not one we look for

    def decode(self, b):
        fields, i = [], 0
        while i < len(b):
            c = b[i]
            if c & 0x80:
                index, i = self._int(b, i, 7)
                if index > 61:
                    fields.append(self.table[index - 62])
            elif c & 0xE0 == 0x20:
                self.max, i = self._int(b, i, 5)
                self._evict()
            else:
                incremental = c & 0xC0 == 0x40
                index, i = self._int(b, i, 6 if incremental else 4)
                if index == 0:
                    name, i = self._str(b, i)
                else:
                    name = self._name(index)
                value, i = self._str(b, i)
                fields.append((name, value))
                if incremental:
                    self.table.insert(0, (name or b"?", value or b""))
                    self._evict()
        return fields

    def _evict(self):
        while sum(len(n) + len(v) + 32 for n, v in self.table) > self.max:
            self.table.pop()


class Conn:
    def __init__(self, addr):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(addr, timeout=10)
        self.s = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""
        self.hpack = Hpack()
        self.send_window = 65535
        self.stream_send_window = 65535
        # Our stream window: 16 KiB, topped up slowly.
        self.s.sendall(PREFACE + frame(4, 0, 0, struct.pack(">HI", 4, 16384)))

    def read_frame(self):
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    kind, flags = self.buf[3], self.buf[4]
                    stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = self.buf[9 : 9 + n]
                    self.buf = self.buf[9 + n :]
                    self.control(kind, flags, stream, payload)
                    return kind, flags, stream, payload
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("torii closed the connection")
            self.buf += chunk

    def control(self, kind, flags, stream, payload):
        if kind == 4 and not flags & 1:  # SETTINGS
            for i in range(0, len(payload) - 5, 6):
                ident, value = struct.unpack(">HI", payload[i : i + 6])
                if ident == 4:
                    self.stream_send_window = value
            self.s.sendall(frame(4, 1, 0))
        elif kind == 6 and not flags & 1:  # PING
            self.s.sendall(frame(6, 1, 0, payload))
        elif kind == 8:  # WINDOW_UPDATE
            inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if stream == 0:
                self.send_window += inc
            else:
                self.stream_send_window += inc
        elif kind == 7:  # GOAWAY
            code = int.from_bytes(payload[4:8], "big")
            if code != 0:
                raise ConnectionError(f"GOAWAY {code}: {payload[8:]!r}")

    def call(self, stream, host, body, stop_reading):
        """One unary echo of `body`; True when it came back whole with
        grpc-status 0. `stop_reading`: read one DATA frame, then hold."""
        head = b"\x83\x87" + literal(b":path", B.UNARY_PATH.encode()) + literal(b":authority", host.encode())
        head += literal(b"content-type", b"application/grpc") + literal(b"te", b"trailers")
        self.s.sendall(frame(1, 4, stream, head))
        self.stream_send_window_at_open = self.stream_send_window
        sent = 0
        window = self.stream_send_window
        while sent < len(body):
            room = min(16384, len(body) - sent, window, self.send_window)
            if room <= 0:
                self.read_frame()
                window = self.stream_send_window
                continue
            end = 1 if sent + room == len(body) else 0
            self.s.sendall(frame(0, end, stream, body[sent : sent + room]))
            sent += room
            window -= room
            self.send_window -= room
        got = b""
        while True:
            kind, flags, sid, payload = self.read_frame()
            if kind == 1:
                # Every header block goes through the decoder (its table).
                fields = dict(self.hpack.decode(payload))
            if sid != stream:
                continue
            if kind == 3:
                raise ConnectionError(f"RST_STREAM {int.from_bytes(payload, 'big')}")
            if kind == 0:
                got += payload
                if stop_reading:
                    time.sleep(15)
                    return None
                # Slowly: 2 KiB every 50 ms.
                left = len(payload)
                while left > 0:
                    n = min(2048, left)
                    time.sleep(0.05)
                    self.s.sendall(frame(8, 0, stream, struct.pack(">I", n)) + frame(8, 0, 0, struct.pack(">I", n)))
                    left -= n
            if kind == 1 and flags & 1:
                # The echo's message carries the request's payload: the
                # same length; grpc-status 0 in the trailers.
                status = fields.get(b"grpc-status")
                if status != b"0" or len(got) != len(body):
                    self.why = f"grpc-status {status!r}, {len(got)} of {len(body)} bytes"
                    return False
                return True


def slow_client(addr, body, stop, stats, note):
    n = 0
    while not stop.is_set():
        n += 1
        stop_reading = n % 5 == 0
        try:
            c = Conn(addr)
            try:
                for i in range(4):
                    if stop.is_set():
                        break
                    ok = c.call(1 + 2 * i, "localhost", body, stop_reading)
                    if ok is None:
                        stats.add(slow_abandoned=1)
                        break
                    if ok:
                        stats.add(slow_ok=1)
                    else:
                        stats.add(slow_errors=1)
                        note(f"slow client: {c.why}")
            finally:
                c.s.close()
        except (OSError, ConnectionError, ssl.SSLError) as e:
            stats.add(slow_errors=1)
            note(f"slow client: {e}")
            stop.wait(1.0)


# -------------------------------------------------------------- the rest


def torii_config(path, listen_port, admin_port, backend_port, certs, variant):
    """Two equivalent configs (the route order differs), so that a reload
    really rebuilds the routes."""
    routes = [
        "      - match: { grpc_service: torii.echo.v1.Echo }\n        cluster: backend\n",
        "      - match: { prefix: /never/ }\n        direct_response: { status: 404, body: never }\n",
    ]
    if variant % 2:
        routes.reverse()
    path.write_text(
        f"""# soak: reload #{variant}
access_log: off
admin:
  address: 127.0.0.1:{admin_port}
listeners:
  - name: soak
    address: 127.0.0.1:{listen_port}
    tls:
      certificates:
        - cert: {certs['cert']}
          key: {certs['key']}
      alpn: [h2]
    routes:
{''.join(routes)}clusters:
  - name: backend
    endpoints: ["127.0.0.1:{backend_port}"]
    protocol: h2c
"""
    )


def metrics(admin_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {"requests": 0, "request_errors": 0, "reloads_ok": 0, "reloads_error": 0, "upstream_errors": 0, "non_ok": {}}
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{(.*)\} ([\d.e+]+)$", line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2), float(m.group(3))
        if name == "torii_requests_total":
            out["requests"] += value
            status = re.search(r'grpc_status="(\w*)"', labels)
            status = status.group(1) if status else ""
            if status != "OK":
                key = ",".join(x for x in labels.split(",") if not x.startswith(("listener=", "grpc_service=", "grpc_method=")))
                out["non_ok"][key] = out["non_ok"].get(key, 0) + value
            # A client that leaves (the slow client's abandoned calls) is
            # not an error of torii's.
            if status not in ("OK", "CANCELLED", "NONE"):
                out["request_errors"] += value
        elif name == "torii_config_reloads_total":
            out["reloads_ok" if 'result="success"' in labels else "reloads_error"] += value
        elif name == "torii_upstream_errors_total":
            out["upstream_errors"] += value
    return out


def proc_sample(pid):
    rss = B.rss_bytes([pid])
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1
    return rss, fds


def h2load_window(url, body, rps_per_client, seconds):
    cmd = [
        "h2load", "-t1", "-c4", "-m16", "--rps", str(rps_per_client), "-D", f"{seconds}s",
        "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers", url,
    ]
    out = B.run_tool(cmd, seconds + 30, "h2load")
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not r:
        raise RuntimeError(f"h2load output not understood: {out[-300:]}")
    return int(r.group(4)), int(r.group(5)) + int(r.group(6)) + int(r.group(7))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--restart-every", type=float, default=RESTART_EVERY, help="seconds between upstream restarts")
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=B.ROOT / "bench" / "results")
    ap.add_argument("--work", type=Path, default=B.ROOT / "bench" / "work")
    ap.add_argument("--pgid-file", type=Path)
    a = ap.parse_args()
    B._pgid_file = a.pgid_file
    signal.signal(signal.SIGTERM, B._on_signal)
    signal.signal(signal.SIGINT, B._on_signal)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = a.work / f"soak-{stamp}"
    work.mkdir(parents=True)
    torii_bin, tool = a.bin_dir / "torii", a.bin_dir / "examples" / "torii-bench"
    for p in (torii_bin, tool):
        if not p.exists():
            sys.exit(f"soak: {p} is missing: build it first (bench/soak does)")

    certs = B.last_json(B.run_tool([tool, "setup", "--dir", work / "certs"], 60, "setup"), "setup")

    def start_backend(port):
        p = B.start([tool, "backend", "--workers", "1", "--address", f"127.0.0.1:{port}"],
                    name="backend", workdir=work, stdout=subprocess.PIPE)
        line = B._readline(p.stdout, timeout=15)
        m = re.search(r"address=127\.0\.0\.1:(\d+)", line or "")
        if not m:
            raise RuntimeError(f"the backend did not start: {line!r}")
        return p, int(m.group(1))

    backend, backend_port = start_backend(0)
    listen_port, admin_port = B.free_port(), B.free_port()
    conf = work / "torii.yaml"
    variant = 0
    torii_config(conf, listen_port, admin_port, backend_port, certs, variant)
    torii = B.start([torii_bin, "serve", "-c", conf, "--workers", "1", "--log-level", "warn"], name="torii", workdir=work)
    if not B.wait_port(listen_port, torii):
        sys.exit(f"soak: torii did not start: see {work / 'torii.err'}")
    target = f"127.0.0.1:{listen_port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            B.run_tool([tool, "probe", "--address", target, "--tls"], 20, "probe")
            break
        except RuntimeError as e:
            if time.monotonic() > deadline:
                sys.exit(f"soak: the probe call fails: {e}")
            time.sleep(0.2)

    url = f"https://{target}{B.UNARY_PATH}"
    body100 = certs["bodies"]["100"]
    body64k = Path(certs["bodies"]["65536"]).read_bytes()
    log("measuring saturation: unary 100 B, full speed, 5 s")
    sat_ok = 0
    out = B.run_tool(["h2load", "-t1", "-c4", "-m16", "-D", "5s", "-d", body100,
                      "-H", "content-type: application/grpc", "-H", "te: trailers", url], 40, "h2load saturation")
    m = re.search(r"finished in ([\d.]+)(m?s),", out)
    r = re.search(r"(\d+) succeeded", out)
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    sat_ok = int(r.group(1))
    saturation = sat_ok / secs
    unary_rate = max(4, round(saturation * 0.4))
    log(f"saturation {saturation:.0f} req/s; unary load {unary_rate} req/s (+ bidi 1x2 ping-pong, the slow client)")

    stop = threading.Event()
    stats = Stats()
    events = []  # (t, what)
    t0 = time.monotonic()

    def note(what):
        """An event worth a line in the report (the first 200)."""
        if len(events) < 200:
            events.append((time.monotonic() - t0, what))

    def unary_loop():
        while not stop.is_set():
            try:
                ok, bad = h2load_window(url, body100, max(1, unary_rate // 4), 10)
                stats.add(unary_ok=ok, unary_errors=bad)
            except RuntimeError as e:
                stats.add(unary_errors=1)
                note(f"h2load: {e}")
                stop.wait(1)

    def bidi_loop():
        while not stop.is_set():
            cmd = [tool, "bidi", "--address", target, "--tls", "--connections", "1", "--streams", "2",
                   "--payload", "100", "--seconds", "10", "--warmup", "0"]
            try:
                r = B.last_json(B.run_tool(cmd, 50, "bidi"), "bidi")
                stats.add(bidi_ok=r["messages"], bidi_errors=r.get("stream_errors", 0))
            except (RuntimeError, ValueError) as e:
                stats.add(bidi_errors=1)
                note(f"bidi: {e}")
                stop.wait(1)

    threads = [
        threading.Thread(target=unary_loop, daemon=True),
        threading.Thread(target=bidi_loop, daemon=True),
        threading.Thread(target=slow_client, args=(("127.0.0.1", listen_port), body64k, stop, stats, note), daemon=True),
    ]
    for t in threads:
        t.start()

    samples, restarts = [], []
    duration = a.minutes * 60
    next_sample, next_reload, next_restart = SAMPLE_EVERY, RELOAD_EVERY, a.restart_every
    torii_alive = True
    try:
        while True:
            now = time.monotonic() - t0
            if now >= duration:
                break
            if torii.poll() is not None:
                torii_alive = False
                note(f"torii exited with {torii.returncode}")
                break
            if now >= next_reload:
                next_reload += RELOAD_EVERY
                variant += 1
                torii_config(conf, listen_port, admin_port, backend_port, certs, variant)
                os.kill(torii.pid, signal.SIGHUP)
                note(f"reload #{variant}")
            if now >= next_restart:
                next_restart += a.restart_every
                note("upstream stopping (SIGTERM)")
                B.stop(backend)
                note("upstream stopped")
                backend, _ = start_backend(backend_port)
                restarts.append(now)
                note("upstream listening again")
            if now >= next_sample:
                next_sample += SAMPLE_EVERY
                rss, fds = proc_sample(torii.pid)
                cpu = B.cpu_ticks([torii.pid])
                try:
                    mt = metrics(admin_port)
                except OSError as e:
                    mt = {"error": str(e)}
                s = {"t": round(now, 1), "rss": rss, "fds": fds, "cpu_ticks": cpu, **stats.snapshot(),
                     **{f"torii_{k}": v for k, v in mt.items() if k != "non_ok"}}
                samples.append(s)
                log(f"t={now:5.0f}s rss={rss / 2**20:6.1f} MiB fds={fds:4d} "
                    f"unary ok/err={s.get('unary_ok', 0)}/{s.get('unary_errors', 0)} "
                    f"bidi ok/err={s.get('bidi_ok', 0)}/{s.get('bidi_errors', 0)} "
                    f"slow ok/err/abandoned={s.get('slow_ok', 0)}/{s.get('slow_errors', 0)}/{s.get('slow_abandoned', 0)}")
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=40)
    # The last word from the admin (reload count) before stopping torii.
    try:
        final_metrics = metrics(admin_port)
    except OSError as e:
        final_metrics = {"error": str(e)}
    B.stop_all()

    verdict = judge(samples, restarts, variant, final_metrics, torii_alive, duration)
    report = {
        "date": stamp,
        "minutes": a.minutes,
        "saturation_rps": round(saturation),
        "unary_rate": unary_rate,
        "reloads": variant,
        "upstream_restarts": len(restarts),
        "events": [[round(t, 1), e] for t, e in events],
        "samples": samples,
        "final_metrics": final_metrics,
        "verdict": verdict,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    base = a.out / f"soak-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    base.with_suffix(".md").write_text(markdown(report))
    for line in verdict["lines"]:
        log(line)
    log(f"results: {base}.json, {base}.md")
    log("FLAT" if verdict["flat"] else "NOT FLAT")
    return 0 if verdict["flat"] else 1


def window_errors(samples):
    """Per sample window: (t, client errors + torii's non-OK requests,
    requests torii answered OK). torii's counters move continuously; the
    clients' only when a 10 s load window ends."""
    keys_err = ("unary_errors", "bidi_errors", "slow_errors", "torii_request_errors")
    out, prev = [], {}
    for s in samples:
        err = sum(s.get(k, 0) - prev.get(k, 0) for k in keys_err)
        ok = (s.get("torii_requests", 0) - prev.get("torii_requests", 0)) - (
            s.get("torii_request_errors", 0) - prev.get("torii_request_errors", 0)
        )
        out.append((s["t"], err, ok))
        prev = s
    return out


def near_restart(t, restarts):
    """Whether the window ending at t saw an upstream restart or its
    aftermath (the restart itself takes up to a few seconds)."""
    return any(r - 1 <= t <= r + AFTER_RESTART + SAMPLE_EVERY for r in restarts)


def judge(samples, restarts, reloads, final_metrics, alive, duration):
    lines, flat = [], True

    def check(ok, text):
        nonlocal flat
        flat &= ok
        lines.append(("ok   " if ok else "FAIL ") + text)

    warm = min(60.0, duration / 6)
    steady = [s for s in samples if s["t"] >= warm]
    check(alive, "torii stayed up")
    if len(steady) < 3:
        check(False, f"only {len(steady)} samples after the warm-up")
        return {"flat": flat, "lines": lines}
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]
    r0, r1 = max(s["rss"] for s in first), max(s["rss"] for s in last)
    check(r1 <= r0 * 1.25 + 8 * 2**20, f"RSS: first third peak {r0 / 2**20:.1f} MiB, last third peak {r1 / 2**20:.1f} MiB")
    f0, f1 = max(s["fds"] for s in first), max(s["fds"] for s in last)
    check(f1 <= f0 + 16, f"open fds: first third peak {f0}, last third peak {f1}")
    windows = [w for w in window_errors(samples) if w[0] >= warm]
    quiet = [w for w in windows if not near_restart(w[0], restarts)]
    q_err, q_ok = sum(e for _, e, _ in quiet), sum(ok for _, _, ok in quiet)
    check(q_err <= 0.001 * max(q_ok, 1), f"errors away from upstream restarts: {q_err:.0f} in {q_ok:.0f} requests")
    qt = max(1, len(quiet) // 3)
    e0, e1 = sum(e for _, e, _ in quiet[:qt]), sum(e for _, e, _ in quiet[-qt:])
    check(e1 <= e0 + 2, f"errors away from restarts: first third {e0:.0f}, last third {e1:.0f}")
    fewest = min(ok for _, _, ok in windows)
    check(fewest > 0, f"torii answered requests in every window (fewest OK in 10 s: {fewest:.0f})")
    ok_reloads = final_metrics.get("reloads_ok", 0)
    check(ok_reloads >= reloads and not final_metrics.get("reloads_error"),
          f"reloads: {reloads} sent, {ok_reloads:.0f} ok, {final_metrics.get('reloads_error', 0):.0f} refused")
    return {"flat": flat, "lines": lines}


def markdown(r):
    out = [
        f"# soak {r['date']}: {'flat' if r['verdict']['flat'] else 'NOT flat'}",
        "",
        f"{r['minutes']:g} minutes; saturation {r['saturation_rps']} req/s (unary 100 B), load: unary "
        f"{r['unary_rate']} req/s + bidi 1x2 ping-pong + a slow 64 KiB client; {r['reloads']} reloads, "
        f"{r['upstream_restarts']} upstream restarts. Script: bench/soak.",
        "",
        "## Verdict",
        "",
        *[f"- {line}" for line in r["verdict"]["lines"]],
        "",
        "## Samples (every 10 s; counters are totals so far)",
        "",
        "| t (s) | RSS (MiB) | fds | torii CPU µs per request + message (window) | unary ok | unary err | bidi msgs | bidi err | slow ok | slow err | slow abandoned | torii non-OK requests |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    prev = {}
    for s in r["samples"]:
        work = sum(s.get(k, 0) - prev.get(k, 0) for k in ("torii_requests", "bidi_ok"))
        cpu = (s.get("cpu_ticks", 0) - prev.get("cpu_ticks", 0)) / B.CLK_TCK * 1e6
        per = f"{cpu / work:.1f}" if work > 0 else "-"
        prev = s
        out.append(
            f"| {s['t']:.0f} | {s['rss'] / 2**20:.1f} | {s['fds']} | {per} | {s.get('unary_ok', 0)} | {s.get('unary_errors', 0)} | "
            f"{s.get('bidi_ok', 0)} | {s.get('bidi_errors', 0)} | {s.get('slow_ok', 0)} | {s.get('slow_errors', 0)} | "
            f"{s.get('slow_abandoned', 0)} | {s.get('torii_request_errors', 0):.0f} |"
        )
    out += ["", "## Events", ""] + [f"- {t:.0f} s: {e}" for t, e in r["events"]] + [""]
    return "\n".join(out)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        B.stop_all()
