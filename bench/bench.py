#!/usr/bin/env python3
"""torii against nginx, HAProxy, Caddy and Pingora, side by side in one run.

Run through bench/run (which installs the peers and builds the binaries).
Every proxy gets one worker, the same TLS 1.3 ECDSA P-256 certificate, ALPN
h2 in and h2c to the same backend; each is measured with its access log off
(every scenario) and on (NAME-log: the unary scenarios), logging to a file.
Each round starts every proxy afresh and measures every scenario on every
target, alternating the targets (the order rotates each round). Proxy CPU
comes from /proc/PID/stat (utime+stime) over the measured window.

Standard library only. Every wait is bounded; every process started here is
in its own process group and is killed on exit.
"""

import argparse
import atexit
import base64
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SIZES = [100, 1024, 65536]
PEERS = ["haproxy", "nginx", "caddy", "pingora"]
PROXIES = ["torii"] + PEERS
# The same proxies with their access log on, writing to a file.
LOGGED = [f"{p}-log" for p in PROXIES]
# torii with a rate limit on its route, far above the load (a bucket per
# client IP that never empties): what the check costs (unary 100 B only).
RATE_LIMITED = "torii-ratelimit"
# torii checking an ES256 JWT on every request (the same token, as a client
# with a cached access token sends it; the key from a JWKS file).
JWT_AUTH = "torii-jwt"
# torii tracing to an OTLP collector (the backend's, which drops what it
# gets): at sample_ratio 0 (requests come without a traceparent, so none is
# traced: what having tracing on costs) and at 1 (every request traced, both
# spans exported).
TRACED_0 = "torii-trace0"
TRACED = "torii-trace"
# torii with a retry policy on its route that never has to retry: the
# success path's retry and limit bookkeeping.
RETRYING = "torii-retry"
# torii with one policy more than the plain target: unary 100 B only.
POLICY_TARGETS = [RATE_LIMITED, JWT_AUTH, TRACED_0, TRACED, RETRYING]
UNARY_PATH = "/torii.echo.v1.Echo/Unary"

# --------------------------------------------------------------- processes

_started = []  # Popen objects, each the leader of its own process group
_pgid_file = None


def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


def start(cmd, *, name, workdir, env=None, stdin=None, stdout=None):
    """Starts cmd in a new process group; stderr goes to WORKDIR/NAME.err."""
    err = open(workdir / f"{name}.err", "ab")
    p = subprocess.Popen(
        [str(c) for c in cmd],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=err,
        env=env,
        start_new_session=True,
    )
    err.close()
    _started.append(p)
    _write_pgids()
    return p


def stop(p, grace=3.0):
    """SIGTERM to the process group, SIGKILL after `grace` seconds."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (nginx workers): kill what is left.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    if p in _started:
        _started.remove(p)
    _write_pgids()


def _write_pgids():
    """Keeps bench/run's list of live process groups current, so its exit
    trap only ever kills groups this run still owns."""
    if _pgid_file:
        with open(_pgid_file, "w") as f:
            f.write("".join(f"{q.pid}\n" for q in _started))


def stop_all():
    for p in list(_started):
        stop(p, grace=2.0)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def run_tool(cmd, timeout, what):
    """Runs a command to completion; returns stdout. Raises on failure."""
    try:
        r = subprocess.run(
            [str(c) for c in cmd],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: no result within {timeout:.0f}s")
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{what}: exit {r.returncode}: {' | '.join(tail)}")
    return r.stdout


def last_json(out, what):
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what}: no JSON in its output")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def process_tree(pid):
    """pid and all its descendants (nginx: master and workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# ----------------------------------------------------------------- targets


class Target:
    """A proxy (or the backend itself, "direct") the clients load."""

    tls = True
    # Logs on: the proxy writes its access log to stdout, which start()
    # sends to log_file (else it writes log_file itself).
    log_to_stdout = True

    def __init__(self, name, ctx, logs=False, h1=False, rate_limit=False, jwt=False, trace=None, retry=False):
        self.name, self.ctx = name, ctx
        self.logs = logs
        # The REST scenario's setup: TLS with ALPN http/1.1 in, HTTP/1.1
        # keep-alive to the HTTP/1.1 backend.
        self.h1 = h1
        self.rate_limit = rate_limit
        self.jwt = jwt
        # None: no tracing block; else its sample_ratio.
        self.trace = trace
        self.retry = retry
        self.proc = None
        self.port = None

    @property
    def log_file(self):
        """Where the access log goes when it is on (stdout is redirected
        here for the proxies that log to stdout)."""
        return self.ctx.work / f"{self.name}.access.log"

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    @property
    def request_headers(self):
        """Headers every request to this target carries."""
        return [f"authorization: Bearer {self.ctx.certs['jwt']}"] if self.jwt else []

    def url(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.address}{UNARY_PATH}"

    def pids(self):
        return process_tree(self.proc.pid) if self.proc else []

    def command(self, conf):  # -> (argv, env)
        raise NotImplementedError

    def config(self):  # -> path of the written config
        raise NotImplementedError

    def version(self):
        return ""

    def start(self):
        self.port = free_port()
        conf = self.config()
        argv, env = self.command(conf)
        out = open(self.log_file, "ab") if self.logs and self.log_to_stdout else None
        try:
            self.proc = start(argv, name=self.name, workdir=self.ctx.work, env=env, stdout=out)
        finally:
            if out:
                out.close()
        if not wait_port(self.port, self.proc):
            raise RuntimeError(f"{self.name} did not start: see {self.ctx.work / (self.name + '.err')}")
        # Ready when a real call goes through (upstream connection made).
        deadline = time.monotonic() + 15
        while True:
            try:
                self.ctx.probe(self)
                break
            except RuntimeError as e:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name}: the probe call fails: {e}")
                time.sleep(0.2)

    def stop(self):
        if self.proc:
            stop(self.proc)
            self.proc = None


class Direct(Target):
    """The backend with no proxy: the floor."""

    tls = False

    def start(self):
        self.port = self.ctx.backend_port
        self.ctx.probe(self)

    def pids(self):
        return []

    def stop(self):
        pass


class Torii(Target):
    def config(self):
        c = self.ctx
        path = c.work / f"{self.name}.yaml"
        # Logs on: torii's default, the JSON access log on stdout (which
        # start() sends to a file).
        log = "" if self.logs else "# Logs off (the access log is on by default).\naccess_log: off\n"
        # torii-ratelimit: 10 million requests a second per client IP, never reached.
        limit = (
            "\n        rate_limit: { requests_per_second: 10000000, burst: 10000000, per: client_ip }"
            if self.rate_limit
            else ""
        )
        # torii-jwt: every request's ES256 token verified against a JWKS file.
        providers, auth = "", ""
        if self.jwt:
            providers = (
                f"jwt_providers:\n  - name: bench\n    issuer: \"{c.certs['jwt_issuer']}\"\n"
                f"    audiences: [{c.certs['jwt_audience']}]\n    jwks: {{ file: {c.certs['jwks']} }}\n"
            )
            auth = "\n        auth: { jwt: [bench] }"
        if self.retry:
            auth += "\n        retry: { on: [unavailable, reset, connect_failure], attempts: 3 }"
        if self.trace is not None:
            providers += (
                f"tracing:\n  otlp: {{ endpoint: http://127.0.0.1:{c.backend_port} }}\n"
                f"  sample_ratio: {self.trace}\n"
            )
        path.write_text(
            f"""{log}{providers}listeners:
  - name: bench
    address: {self.address}
    tls:
      certificates:
        - cert: {c.certs['cert']}
          key: {c.certs['key']}
      alpn: [{"http/1.1" if self.h1 else "h2"}]
    routes:
      - cluster: backend{limit}{auth}
clusters:
  - name: backend
    endpoints: ["127.0.0.1:{c.h1_backend_port if self.h1 else c.backend_port}"]
    protocol: {"http1" if self.h1 else "h2c"}
"""
        )
        return path

    def command(self, conf):
        return [self.ctx.torii, "serve", "-c", conf, "--workers", "1", "--log-level", "error"], None

    def version(self):
        return run_tool([self.ctx.torii, "version"], 10, "torii version").strip()


class ToriiPhases(Torii):
    """torii with the phases a request may pass through on top of proxying:
    gRPC-Web (on by default) and JSON transcoding of Echo/Unary
    (bench/proto/echo_http.proto, POST /v1/echo). ALPN h2 and http/1.1,
    logs off (on as NAME-log, in bench/profile). Measured in the phase scenarios only, against native gRPC
    through the same listener."""

    def config(self):
        c = self.ctx
        path = c.work / f"{self.name}.yaml"
        proto = ROOT / "bench" / "proto"
        log = "" if self.logs else "access_log: off\n"
        path.write_text(
            f"""{log}listeners:
  - name: phases
    address: {self.address}
    tls:
      certificates:
        - cert: {c.certs['cert']}
          key: {c.certs['key']}
    json_transcoding:
      protos: [{proto / 'echo_http.proto'}]
      include_paths: [{proto}]
    routes:
      - cluster: backend
clusters:
  - name: backend
    endpoints: ["127.0.0.1:{c.backend_port}"]
    protocol: h2c
"""
        )
        return path


# nginx's HTTP/1.1 proxying with upstream keep-alive (its default is
# HTTP/1.0 and a connection per request).
H1_NGINX = 'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'


class Nginx(Target):
    log_to_stdout = False

    def config(self):
        c = self.ctx
        d = c.work / self.name
        d.mkdir(exist_ok=True)
        # Logs on: nginx's default access log (the combined format), to a file.
        access = f"access_log {self.log_file};" if self.logs else "access_log off;"
        path = d / "nginx.conf"
        path.write_text(
            f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {c.nofile};
pid {d}/nginx.pid;
error_log stderr crit;
events {{ worker_connections {c.maxconn}; }}
http {{
    {access}
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 0;
    keepalive_requests 100000000;
    upstream backend {{
        server 127.0.0.1:{c.h1_backend_port if self.h1 else c.backend_port};
        # nginx runs one request per upstream connection: cache enough of
        # them for every stream in flight (h2load -c4 -m16 = 64).
        keepalive 128;
        keepalive_requests 100000000;
    }}
    server {{
        listen {self.address} ssl{"" if self.h1 else " http2"};
        ssl_certificate {c.certs['cert']};
        ssl_certificate_key {c.certs['key']};
        ssl_protocols TLSv1.3;
        location / {{
            {H1_NGINX if self.h1 else "grpc_pass grpc://backend;"}
        }}
    }}
}}
"""
        )
        return path

    def command(self, conf):
        return ["nginx", "-e", "stderr", "-p", conf.parent, "-c", conf], None

    def version(self):
        r = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10)
        return (r.stderr or r.stdout).strip()


class HAProxy(Target):
    def config(self):
        c = self.ctx
        path = c.work / f"{self.name}.cfg"
        # Logs on: `option httplog` to stdout (sent to a file by start()).
        glog = "\n    log stdout format raw local0 info" if self.logs else ""
        dlog = "\n    log global\n    option httplog" if self.logs else ""
        path.write_text(
            f"""global
    nbthread 1
    maxconn {c.maxconn}{glog}
defaults
    mode http
    maxconn {c.maxconn}{dlog}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind {self.address} ssl crt {c.certs['pem']} alpn {"http/1.1" if self.h1 else "h2"} ssl-min-ver TLSv1.3
    default_backend backend
backend backend
    server s1 127.0.0.1:{c.h1_backend_port if self.h1 else c.backend_port}{"" if self.h1 else " proto h2"}
"""
        )
        return path

    def command(self, conf):
        return ["haproxy", "-db", "-f", conf], None

    def version(self):
        out = run_tool(["haproxy", "-v"], 10, "haproxy -v")
        return out.strip().splitlines()[0]


class Caddy(Target):
    log_to_stdout = False

    def config(self):
        c = self.ctx
        path = c.work / f"{self.name}.json"
        logs = {"default": {"level": "ERROR"}}
        if self.logs:
            # What Caddyfile's `log` does: the server's access logs (JSON),
            # here to a file of their own.
            logs = {
                "default": {"level": "ERROR", "exclude": ["http.log.access.bench"]},
                "bench": {
                    "writer": {"output": "file", "filename": str(self.log_file)},
                    "encoder": {"format": "json"},
                    "include": ["http.log.access.bench"],
                },
            }
        conf = {
            "admin": {"disabled": True},
            "logging": {"logs": logs},
            "apps": {
                "http": {
                    "servers": {
                        "bench": {
                            **({"logs": {"default_logger_name": "bench"}} if self.logs else {}),
                            "listen": [self.address],
                            "protocols": ["h1", "h2"],
                            "automatic_https": {"disable": True},
                            "routes": [
                                {
                                    "handle": [
                                        {
                                            "handler": "reverse_proxy",
                                            "flush_interval": -1,
                                            "transport": {"protocol": "http", "versions": ["h2c", "2"]},
                                            "upstreams": [{"dial": f"127.0.0.1:{c.backend_port}"}],
                                        }
                                    ]
                                }
                            ],
                            "tls_connection_policies": [
                                {
                                    "certificate_selection": {"any_tag": ["bench"]},
                                    "protocol_min": "tls1.3",
                                    "alpn": ["h2"],
                                }
                            ],
                        }
                    }
                },
                "tls": {
                    "certificates": {
                        "load_files": [{"certificate": c.certs["cert"], "key": c.certs["key"], "tags": ["bench"]}]
                    }
                },
            },
        }
        path.write_text(json.dumps(conf, indent=2))
        return path

    def command(self, conf):
        home = self.ctx.work / f"{self.name}-home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            GOMAXPROCS="1",
            HOME=str(home),
            XDG_DATA_HOME=str(home / "data"),
            XDG_CONFIG_HOME=str(home / "config"),
        )
        return ["caddy", "run", "--config", conf], env

    def version(self):
        return "caddy " + run_tool(["caddy", "version"], 10, "caddy version").strip()


class Pingora(Target):
    """bench/pingora: Pingora's proxy with its rustls listener (ALPN h2 and
    http/1.1), h2c to the backend (HTTP/2 only, 32 streams per upstream
    connection), one thread. Logs on: one line per request in its
    `logging` hook, as Pingora's examples do (env_logger, to stderr)."""

    def config(self):
        return None

    def command(self, conf):
        c = self.ctx
        argv = [c.pingora, self.address, c.certs["cert"], c.certs["key"], f"127.0.0.1:{c.backend_port}"]
        if self.logs:
            argv.append("--access-log")
        return argv, None

    log_to_stdout = False

    @property
    def log_file(self):
        # start() sends stderr to NAME.err: that file is the log.
        return self.ctx.work / f"{self.name}.err"

    def version(self):
        return "pingora " + self.ctx.pingora_version


TARGET_CLASSES = {
    "torii": Torii, "haproxy": HAProxy, "nginx": Nginx, "caddy": Caddy, "pingora": Pingora, "direct": Direct,
}


def make_target(name, ctx):
    """NAME, or NAME-log: the same proxy with its access log on; or
    torii-ratelimit, torii-jwt, torii-trace0, torii-trace, torii-retry."""
    if name == RATE_LIMITED:
        return Torii(name, ctx, rate_limit=True)
    if name == JWT_AUTH:
        return Torii(name, ctx, jwt=True)
    if name == TRACED_0:
        return Torii(name, ctx, trace=0)
    if name == TRACED:
        return Torii(name, ctx, trace=1)
    if name == RETRYING:
        return Torii(name, ctx, retry=True)
    base = name[:-4] if name.endswith("-log") else name
    return TARGET_CLASSES[base](name, ctx, logs=name != base)


# ---------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.torii = args.bin_dir / "torii"
        self.tool = args.bin_dir / "examples" / "torii-bench"
        self.pingora = getattr(args, "pingora", None)
        self.pingora_version = pingora_version()
        self.samples = {}  # scenario -> target -> metric -> [values]
        self.errors = []  # (scenario, target, message)
        self.latency_rps = None
        self.latency_rates = []  # one per round
        self.round = 0
        self.nofile, self.maxconn = args.nofile, args.maxconn

    # -- helpers

    def record(self, scenario, target, **metrics):
        slot = self.samples.setdefault(scenario, {}).setdefault(target, {})
        for k, v in metrics.items():
            slot.setdefault(k, []).append(v)

    def fail(self, scenario, target, err):
        log(f"{scenario} on {target}: FAILED: {err}")
        self.errors.append({"scenario": scenario, "target": target, "error": str(err)})

    def probe(self, t):
        if t.h1:
            return probe_h1(t.address)
        cmd = [self.tool, "probe", "--address", t.address] + (["--tls"] if t.tls else [])
        for h in t.request_headers:
            cmd += ["--header", h]
        run_tool(cmd, 20, f"probe {t.name}")

    def cpu_args(self, t):
        args = []
        if t.pids():
            args += ["--cpu", "proxy=" + ",".join(map(str, t.pids()))]
        args += ["--cpu", f"backend={self.backend.pid}"]
        return args

    # -- unary (h2load)

    def unary_cmd(self, t, size, limit, extra=()):
        """h2load posting SIZE-byte unary gRPC calls to T, 4 connections × 16
        streams, for LIMIT (["-D", "5000ms"] or ["-n", "5000"])."""
        return [
            "h2load", "-t1", "-c4", "-m16", *limit,
            "-d", self.certs["bodies"][str(size)],
            "-H", "content-type: application/grpc",
            "-H", "te: trailers",
            *[arg for h in t.request_headers for arg in ("-H", h)],
            *extra,
            t.url(),
        ]

    def h2load(self, t, size, seconds, extra=(), warmup=False):
        cmd = self.unary_cmd(t, size, ["-D", f"{round(seconds * 1000)}ms"], extra)
        out = run_tool(cmd, seconds + 30, f"h2load {t.name} {size} B")
        succeeded, failed, secs = h2load_summary(out)
        if succeeded == 0 and not warmup:
            e = re.search(r"(\d+) errored, (\d+) timeout", out)
            more = f", {e.group(1)} errored, {e.group(2)} timed out" if e else ""
            raise RuntimeError(f"h2load: no request succeeded ({failed} failed{more})")
        return succeeded, failed, secs

    def unary(self, t, size):
        a = self.args
        scenario = f"unary_{size}"
        # The warm-up is untimed and may finish nothing: a proxy that opens
        # one upstream connection per request in flight (nginx) can spend a
        # short warm-up connecting to a slow (debug-built) backend.
        try:
            self.h2load(t, size, a.warmup, warmup=True)
        except RuntimeError as e:
            return self.fail(scenario, t.name, e)
        for attempt in (1, 2):
            try:
                pids = t.pids()
                c0, b0 = cpu_ticks(pids), cpu_ticks([self.backend.pid])
                ok, failed, secs = self.h2load(t, size, a.seconds)
                c1, b1 = cpu_ticks(pids), cpu_ticks([self.backend.pid])
                break
            except RuntimeError as e:
                if attempt == 2:
                    return self.fail(scenario, t.name, e)
                log(f"{scenario} on {t.name}: {e}; measuring once more")
        m = {"rps": ok / secs, "backend_cpu_us": (b1 - b0) / CLK_TCK * 1e6 / ok}
        if pids:
            m["cpu_us"] = (c1 - c0) / CLK_TCK * 1e6 / ok
        if failed:
            m["failed"] = failed
        self.record(scenario, t.name, **m)
        log(f"{scenario:12} {t.name:8} {m['rps']:10.0f} req/s  " + (f"{m['cpu_us']:6.1f} µs/req" if pids else ""))

    def set_latency_rate(self):
        """The latency scenario's rate for this round, the same for every
        target: half of torii's 100 B requests/s measured just before, in
        the same round (the machine's load drifts over a run; a rate fixed
        once can end up at torii's knee)."""
        s = self.samples.get("unary_100", {}).get("torii", {}).get("rps")
        if s and len(s) == self.round:
            self.latency_rps = round(s[-1] / 2)
        elif self.latency_rps is None:
            self.latency_rps = 5000
        self.latency_rates.append(self.latency_rps)
        log(f"latency rate this round: {self.latency_rps} req/s (half of torii's 100 B requests/s)")

    def latency(self, t):
        a = self.args
        scenario = "latency"
        logf = self.work / f"latency-{t.name}.log"
        per_client = max(1, round(self.latency_rps / 4))
        try:
            if logf.exists():
                logf.unlink()
            ok, failed, secs = self.h2load(
                t, 100, a.latency_seconds, extra=["--rps", str(per_client), "--log-file", str(logf)]
            )
            durations = []
            with open(logf) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1].startswith("2"):
                        durations.append(int(parts[2]))
        except (RuntimeError, OSError, ValueError) as e:
            return self.fail(scenario, t.name, e)
        if not durations:
            return self.fail(scenario, t.name, "the h2load log holds no request")
        durations.sort()

        def pct(p):
            return durations[min(len(durations) - 1, int(p / 100 * len(durations)))] / 1000

        m = {
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "p999_ms": pct(99.9),
            "rps": ok / secs,
            "rate_kept": ok / secs / self.latency_rps,
        }
        self.record(scenario, t.name, **m)
        log(f"{scenario:12} {t.name:8} p50 {m['p50_ms']:.3f} p99 {m['p99_ms']:.3f} p99.9 {m['p999_ms']:.3f} ms at {m['rps']:.0f}/s")

    # -- bidi, handshakes, idle (torii-bench)

    def bidi(self, t):
        a = self.args
        scenario = "bidi"
        cmd = [
            self.tool, "bidi", "--address", t.address, *(["--tls"] if t.tls else []),
            "--connections", "4", "--streams", "16", "--payload", "100",
            "--seconds", f"{a.seconds:g}", "--warmup", f"{a.warmup:g}", *self.cpu_args(t),
        ]
        try:
            r = last_json(run_tool(cmd, a.seconds + a.warmup + 40, f"bidi {t.name}"), "bidi")
        except (RuntimeError, ValueError) as e:
            return self.fail(scenario, t.name, e)
        n = r["messages"]
        if n == 0:
            return self.fail(scenario, t.name, f"no message echoed ({r.get('first_error')})")
        m = {"msgs": r["rate"], "backend_cpu_us": r["cpu_ticks"]["backend"] / CLK_TCK * 1e6 / n}
        if "proxy" in r["cpu_ticks"]:
            m["cpu_us"] = r["cpu_ticks"]["proxy"] / CLK_TCK * 1e6 / n
        if r.get("stream_errors"):
            m["stream_errors"] = r["stream_errors"]
            log(f"bidi {t.name}: {r['stream_errors']} streams failed: {r.get('first_error')}")
        self.record(scenario, t.name, **m)
        log(f"{scenario:12} {t.name:8} {m['msgs']:10.0f} msg/s  " + (f"{m['cpu_us']:6.1f} µs/msg" if "cpu_us" in m else ""))

    # -- HTTP/1.1 keep-alive REST: torii, HAProxy, nginx

    def h1(self, t, scenario):
        """h2load --h1 over TLS (ALPN http/1.1), 16 keep-alive connections,
        one request at a time each: GET, or POST of 1 KiB; 1 KiB answers."""
        self.timed_load(
            t, t.name.removesuffix("-h1"), scenario,
            lambda seconds: self.h1_cmd(t, scenario, ["-D", f"{round(seconds * 1000)}ms"]),
        )

    def h1_cmd(self, t, scenario, limit):
        """h2load's command line for a REST scenario; `limit` is -D or -n."""
        cmd = ["h2load", "--h1", "-t1", "-c16", "-m1", *limit]
        if scenario == "h1_post_1024":
            cmd += ["-d", str(self.h1_body), "-H", "content-type: application/octet-stream"]
        return cmd + [f"https://{t.address}/item"]

    def h1_round(self, rnd, names):
        """The REST scenarios on each of `names` (torii, haproxy, nginx),
        each started afresh in its HTTP/1.1 setup, in rotating order."""
        shift = rnd % len(names)
        for n in names[shift:] + names[:shift]:
            t = TARGET_CLASSES[n](f"{n}-h1", self, h1=True)
            try:
                t.start()
            except RuntimeError as e:
                for sc in H1_SCENARIOS:
                    self.fail(sc, n, e)
                continue
            try:
                for sc in H1_SCENARIOS:
                    self.h1(t, sc)
            finally:
                t.stop()

    # -- phases (torii only): what gRPC-Web and JSON transcoding cost

    def phase(self, t, scenario):
        """One phase scenario on the torii-phases target: h2load over TLS,
        h2 (-c4 -m16) or HTTP/1.1 keep-alive (-c16, one request at a time
        per connection), the same 100 B payload as native, gRPC-Web or
        JSON."""
        self.timed_load(t, "torii", scenario, lambda seconds: self.phase_cmd(t, scenario, ["-D", f"{round(seconds * 1000)}ms"]))

    def timed_load(self, t, name, scenario, cmd):
        """An untimed warm-up, then `cmd(seconds)` (an h2load command line)
        for the measured window: requests/s and the target's CPU per
        request, recorded under `name`."""
        a = self.args

        def run(seconds):
            return h2load_summary(run_tool(cmd(seconds), seconds + 30, f"h2load {scenario} {name}"))

        try:
            run(a.warmup)
            pids = t.pids()
            c0 = cpu_ticks(pids)
            ok, failed, secs = run(a.seconds)
            c1 = cpu_ticks(pids)
        except RuntimeError as e:
            return self.fail(scenario, name, e)
        if ok == 0:
            return self.fail(scenario, name, f"no request succeeded ({failed} failed)")
        m = {"rps": ok / secs, "cpu_us": (c1 - c0) / CLK_TCK * 1e6 / ok}
        if failed:
            m["failed"] = failed
        self.record(scenario, name, **m)
        log(f"{scenario:12} {name:8} {m['rps']:10.0f} req/s  {m['cpu_us']:6.1f} µs/req")

    def phase_cmd(self, t, scenario, limit):
        """h2load's command line for a phase scenario; `limit` is -D or -n."""
        kind, wire = PHASES[scenario]
        if kind == "grpc":
            body, headers = self.certs["bodies"]["100"], ["content-type: application/grpc", "te: trailers"]
        elif kind == "grpc-web":
            body, headers = self.certs["bodies"]["100"], ["content-type: application/grpc-web+proto", "x-grpc-web: 1"]
        else:
            if not getattr(self, "json_body", None):
                # The same 100 B payload as the gRPC frame.
                self.json_body = self.work / "unary-100.json"
                self.json_body.write_text(json.dumps({"payload": base64.b64encode(b"x" * 100).decode()}))
            body, headers = str(self.json_body), ["content-type: application/json"]
        path = "/v1/echo" if kind == "json" else UNARY_PATH
        conc = {"h2": ["-c4", "-m16"], "h2-m1": ["-c16", "-m1"], "h1": ["--h1", "-c16", "-m1"]}[wire]
        cmd = ["h2load", "-t1", *conc, *limit, "-d", body]
        for h in headers:
            cmd += ["-H", h]
        return cmd + [f"https://{t.address}{path}"]

    def phases(self, rnd):
        """Every phase scenario once, on a torii-phases started afresh, in an
        order that rotates each round."""
        t = ToriiPhases("torii-phases", self)
        names = list(PHASES)
        shift = rnd % len(names)
        try:
            t.start()
        except RuntimeError as e:
            for sc in names:
                self.fail(sc, "torii", e)
            return
        try:
            for sc in names[shift:] + names[:shift]:
                self.phase(t, sc)
        finally:
            t.stop()

    def streams(self, t):
        """RSS with C connections × S open bidi streams held (each has
        echoed one 100 B message, so it is open through the proxy to the
        backend): (RSS held − idle RSS) ÷ streams."""
        a = self.args
        scenario = "streams"
        conns, per = a.stream_connections, a.streams_per_connection
        time.sleep(0.3)
        pids = t.pids()
        idle = rss_bytes(pids)
        cmd = [self.tool, "streams", "--address", t.address, "--tls", "--connections", str(conns),
               "--streams", str(per), "--hold", "120"]
        try:
            p, r = _held(cmd, f"streams-{t.name}", self.work, timeout=90)
        except (RuntimeError, ValueError) as e:
            return self.fail(scenario, t.name, e)
        try:
            if r["opened"] < conns * per:
                return self.fail(scenario, t.name,
                                 f"{r['opened']} of {conns * per} streams opened ({r.get('first_error')})")
            time.sleep(0.5)
            held = rss_bytes(pids)
        finally:
            _release(p)
        m = {"per_stream_kb": (held - idle) / (conns * per) / 1e3, "held_rss_mb": held / 1e6}
        self.record(scenario, t.name, **m)
        log(f"{scenario:12} {t.name:8} {m['per_stream_kb']:.2f} KB per open stream ({m['held_rss_mb']:.0f} MB held)")

    def handshakes(self, t):
        a = self.args
        scenario = "handshakes"
        cmd = [
            self.tool, "handshakes", "--address", t.address, "--tls",
            "--concurrency", "8", "--seconds", f"{a.seconds:g}", *self.cpu_args(t),
        ]
        try:
            r = last_json(run_tool(cmd, a.seconds + 40, f"handshakes {t.name}"), "handshakes")
        except (RuntimeError, ValueError) as e:
            return self.fail(scenario, t.name, e)
        n = r["handshakes"]
        if n == 0:
            return self.fail(scenario, t.name, f"no handshake completed ({r.get('first_error')})")
        m = {"hs": r["rate"], "cpu_us": r["cpu_ticks"]["proxy"] / CLK_TCK * 1e6 / n}
        if r.get("errors"):
            m["errors"] = r["errors"]
        self.record(scenario, t.name, **m)
        log(f"{scenario:12} {t.name:8} {m['hs']:10.0f} hs/s   {m['cpu_us']:6.1f} µs/hs")

    def memory(self, t):
        """Idle RSS of the started proxy (after its probe call), then RSS
        with N idle TLS+HTTP/2 connections held: bytes per connection."""
        a = self.args
        scenario = "memory"
        n = a.idle_connections
        time.sleep(0.3)
        pids = t.pids()
        idle = rss_bytes(pids)
        cmd = [self.tool, "idle", "--address", t.address, "--tls", "--connections", str(n), "--hold", "120"]
        try:
            p, r = _held(cmd, f"idle-{t.name}", self.work, timeout=90)
        except (RuntimeError, ValueError) as e:
            return self.fail(scenario, t.name, e)
        try:
            if r["opened"] < n:
                return self.fail(scenario, t.name, f"{r['opened']} of {n} connections opened ({r.get('first_error')})")
            time.sleep(0.5)  # let the proxy settle
            held = rss_bytes(pids)
        except KeyError as e:
            return self.fail(scenario, t.name, e)
        finally:
            _release(p)
        m = {"idle_rss_mb": idle / 1e6, "per_conn_kb": (held - idle) / n / 1e3}
        self.record(scenario, t.name, **m)
        log(f"{scenario:12} {t.name:8} idle {m['idle_rss_mb']:.1f} MB, {m['per_conn_kb']:.1f} KB per idle connection")


def h2load_summary(out):
    """(succeeded, failed, seconds) from h2load's summary."""
    m = re.search(r"finished in ([\d.]+)(m?s),", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    if not m or not r:
        raise RuntimeError(f"h2load output not understood: {out[-300:]}")
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return int(r.group(4)), int(r.group(5)), secs


def _held(cmd, name, work, timeout):
    """Starts a holding client (idle, streams), reads its JSON line;
    returns (process, result). The caller closes its stdin to end it."""
    p = start(cmd, name=name, workdir=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = _readline(p.stdout, timeout=timeout)
        if not line:
            raise RuntimeError(f"the client ended early: see {work / (name + '.err')}")
        return p, json.loads(line)
    except (RuntimeError, ValueError):
        _release(p)
        raise


def _release(p):
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    stop(p)


def probe_h1(address):
    """One HTTPS GET over HTTP/1.1 through a target: 200 with a body."""
    import http.client
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    host, port = address.rsplit(":", 1)
    try:
        c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
        c.request("GET", "/item")
        r = c.getresponse()
        body = r.read()
        c.close()
    except (OSError, http.client.HTTPException) as e:
        raise RuntimeError(f"HTTP/1.1 probe: {e}")
    if r.status != 200 or not body:
        raise RuntimeError(f"HTTP/1.1 probe: {r.status} with {len(body)} bytes")


def _readline(f, timeout):
    import select

    deadline = time.monotonic() + timeout
    buf = b""
    fd = f.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return buf.decode() if buf else None
        buf += chunk
        if b"\n" in buf:
            return buf.split(b"\n", 1)[0].decode()
    raise RuntimeError(f"no answer within {timeout}s")


# ------------------------------------------------------------------ report

# (scenario, metric, label, unit, higher_is_better)
ROWS = [
    ("unary_100", "rps", "unary 100 B: requests/s", "", True),
    ("unary_100", "cpu_us", "unary 100 B: proxy CPU per request", "µs", False),
    ("unary_1024", "rps", "unary 1 KiB: requests/s", "", True),
    ("unary_1024", "cpu_us", "unary 1 KiB: proxy CPU per request", "µs", False),
    ("unary_65536", "rps", "unary 64 KiB: requests/s", "", True),
    ("unary_65536", "cpu_us", "unary 64 KiB: proxy CPU per request", "µs", False),
    ("latency", "p50_ms", "latency p50 at fixed rate", "ms", False),
    ("latency", "p99_ms", "latency p99 at fixed rate", "ms", False),
    ("latency", "p999_ms", "latency p99.9 at fixed rate", "ms", False),
    ("latency", "rate_kept", "latency: share of the fixed rate achieved", "", True),
    ("bidi", "msgs", "bidi: messages/s", "", True),
    ("bidi", "cpu_us", "bidi: proxy CPU per message", "µs", False),
    ("handshakes", "hs", "TLS 1.3 full handshakes/s", "", True),
    ("handshakes", "cpu_us", "TLS: proxy CPU per handshake", "µs", False),
    ("memory", "idle_rss_mb", "RSS idle", "MB", False),
    ("memory", "per_conn_kb", "RSS per idle TLS+h2 connection", "KB", False),
    ("streams", "per_stream_kb", "RSS per open bidi stream", "KB", False),
    ("unary_100", "backend_cpu_us", "(backend CPU per unary 100 B request)", "µs", False),
]

SCENARIOS = ["memory", "unary_100", "latency", "unary_1024", "unary_65536", "bidi", "handshakes", "streams"]
# HTTP/1.1 keep-alive REST through torii, HAProxy and nginx.
H1_SCENARIOS = ["h1_get_1024", "h1_post_1024"]
H1_PEERS = ["haproxy", "nginx"]
# torii only, 100 B unary through one listener with gRPC-Web and JSON
# transcoding: scenario -> (what the client speaks, wire).
PHASES = {
    "phase_grpc": ("grpc", "h2"),
    "phase_grpc_m1": ("grpc", "h2-m1"),
    "phase_grpc_web_h2": ("grpc-web", "h2"),
    "phase_grpc_web_h1": ("grpc-web", "h1"),
    "phase_json_h2": ("json", "h2"),
    "phase_json_h1": ("json", "h1"),
}
PHASE_LABELS = {
    "phase_grpc": "native gRPC, TLS h2",
    "phase_grpc_m1": "native gRPC, TLS h2, one request at a time per connection",
    "phase_grpc_web_h2": "gRPC-Web (binary), TLS h2",
    "phase_grpc_web_h1": "gRPC-Web (binary), TLS HTTP/1.1",
    "phase_json_h2": "JSON-transcoded unary, TLS h2",
    "phase_json_h1": "JSON-transcoded unary, TLS HTTP/1.1",
}
TLS_ONLY = {"memory", "handshakes", "streams"}
# What the logs-on targets run: every request logged is what costs.
LOGGED_SCENARIOS = {"unary_100", "unary_1024", "unary_65536"}


def applies(scenario, name):
    if name in POLICY_TARGETS:
        return scenario == "unary_100"
    if name.endswith("-log"):
        return scenario in LOGGED_SCENARIOS
    return name != "direct" or scenario not in TLS_ONLY


def pingora_version():
    """Pingora's version in bench/pingora's lock file."""
    try:
        text = (ROOT / "bench" / "pingora" / "Cargo.lock").read_text()
    except OSError:
        return "?"
    m = re.search(r'name = "pingora"\nversion = "([^"]+)"', text)
    return m.group(1) if m else "?"


def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def med(results, scenario, target, metric):
    s = results.get(scenario, {}).get(target, {}).get(metric)
    return s["median"] if s else None


def evaluate_targets(results, peers_present, samples=None):
    """The issue's targets, each as (name, verdict, detail)."""
    out = []

    def ratio(a, b):
        return a / b if a is not None and b else None

    def line(name, ok, detail):
        verdict = "n/a" if ok is None else ("met" if ok else "NOT met")
        out.append({"target": name, "verdict": verdict, "detail": detail})

    per = {t: v["per_stream_kb"]["median"] for t, v in results.get("streams", {}).items() if "per_stream_kb" in v}
    if "torii" in per:
        others = {t: v for t, v in per.items() if t != "torii"}
        line(
            "RSS per open bidi stream: torii lowest",
            None if not others else all(per["torii"] < v for v in others.values()),
            ", ".join(f"{t} {v:.2f} KB" for t, v in sorted(per.items(), key=lambda kv: kv[1])),
        )
    for sc in H1_SCENARIOS:
        if sc not in results:
            continue
        r = ratio(med(results, sc, "torii", "cpu_us"), med(results, sc, "haproxy", "cpu_us"))
        line(
            f"HTTP/1.1 keep-alive {'GET' if 'get' in sc else 'POST'} 1 KiB: CPU per request ≤ 0.75 × HAProxy's",
            None if r is None else r <= 0.75,
            f"torii/HAProxy = {r:.2f}" if r else "no numbers",
        )
    # Each against native gRPC sent the same way: h2 with 16 requests in
    # flight per connection, or (for HTTP/1.1, one request at a time per
    # connection) h2 with one at a time per connection.
    for sc, bound, base in [
        ("phase_grpc_web_h2", 1.3, "phase_grpc"), ("phase_grpc_web_h1", 1.3, "phase_grpc_m1"),
        ("phase_json_h2", 2.0, "phase_grpc"), ("phase_json_h1", 2.0, "phase_grpc_m1"),
    ]:
        if sc not in results:
            continue
        r = ratio(med(results, sc, "torii", "cpu_us"), med(results, base, "torii", "cpu_us"))
        line(
            f"{PHASE_LABELS[sc]}: CPU per request ≤ {bound} × native gRPC's ({PHASE_LABELS[base]})",
            None if r is None else r <= bound,
            f"{r:.2f} × native" if r else "no numbers",
        )

    hap = "haproxy" in peers_present
    for size, label in [(100, "100 B"), (1024, "1 KiB"), (65536, "64 KiB")]:
        sc = f"unary_{size}"
        r = ratio(med(results, sc, "torii", "cpu_us"), med(results, sc, "haproxy", "cpu_us")) if hap else None
        line(
            f"proxy CPU per unary request ({label}) ≤ 0.75 × HAProxy's",
            None if r is None else r <= 0.75,
            "HAProxy missing" if not hap else (f"torii/HAProxy = {r:.2f}" if r else "no numbers"),
        )
    for size, label in [(100, "100 B"), (1024, "1 KiB"), (65536, "64 KiB")]:
        sc = f"unary_{size}"
        r = ratio(med(results, sc, "torii", "rps"), med(results, sc, "haproxy", "rps")) if hap else None
        line(
            f"requests/s ({label}) ≥ 1.1 × HAProxy's",
            None if r is None else r >= 1.1,
            "HAProxy missing" if not hap else (f"torii/HAProxy = {r:.2f}" if r else "no numbers"),
        )
    tp99, dp99 = med(results, "latency", "torii", "p99_ms"), med(results, "latency", "direct", "p99_ms")
    kept = med(results, "latency", "torii", "rate_kept")
    detail = f"torii {fmt(tp99)} ms, direct {fmt(dp99)} ms" if tp99 is not None and dp99 is not None else "no numbers"
    if kept is not None and kept < 0.95:
        detail += f" (torii kept only {kept:.0%} of the rate: the load was past its knee in this run)"
    # Informative only (the verdict compares the medians): the machine's
    # load drifts between rounds, and each round measures both at one rate.
    lat = (samples or {}).get("latency", {})
    tr, dr = lat.get("torii", {}).get("p99_ms", []), lat.get("direct", {}).get("p99_ms", [])
    if tr and len(tr) == len(dr):
        detail += "; torii − direct per round: " + ", ".join(f"{t - d:+.2f}" for t, d in zip(tr, dr)) + " ms"
    line(
        "p99 at half load ≤ direct p99 + 0.5 ms",
        None if tp99 is None or dp99 is None else tp99 <= dp99 + 0.5,
        detail,
    )
    peer_bidi = [(p, med(results, "bidi", p, "msgs")) for p in peers_present]
    peer_bidi = [(p, v) for p, v in peer_bidi if v]
    tb = med(results, "bidi", "torii", "msgs")
    if peer_bidi and tb:
        best, bv = max(peer_bidi, key=lambda x: x[1])
        line("bidi messages/s ≥ 1.2 × the best peer", tb / bv >= 1.2, f"torii/{best} = {tb / bv:.2f}")
    else:
        line("bidi messages/s ≥ 1.2 × the best peer", None, "no peer numbers")
    pc = med(results, "memory", "torii", "per_conn_kb")
    line("≤ 10 KB per idle TLS+HTTP/2 connection", None if pc is None else pc <= 10, f"torii {fmt(pc)} KB")
    ir = med(results, "memory", "torii", "idle_rss_mb")
    line("idle RSS ≤ 15 MB", None if ir is None else ir <= 15, f"torii {fmt(ir)} MB")
    r = ratio(med(results, "handshakes", "torii", "hs"), med(results, "handshakes", "haproxy", "hs")) if hap else None
    line(
        "TLS full handshakes/s ≥ HAProxy's",
        None if r is None else r >= 1.0,
        "HAProxy missing" if not hap else (f"torii/HAProxy = {r:.2f}" if r else "no numbers"),
    )

    # Access log on and off (issue 22).
    def cpu_ratio(a, b, sc="unary_100"):
        return ratio(med(results, sc, a, "cpu_us"), med(results, sc, b, "cpu_us"))

    r = cpu_ratio("torii", "haproxy") if hap else None
    line(
        "logs off: CPU per unary 100 B request ≤ 0.5 × HAProxy's",
        None if r is None else r <= 0.5,
        "HAProxy missing" if not hap else (f"torii/HAProxy = {r:.2f}" if r else "no numbers"),
    )
    r = cpu_ratio("torii-log", "haproxy-log") if "haproxy-log" in peers_present else None
    line(
        "logs on: CPU per unary 100 B request ≤ 0.65 × HAProxy's (both logging every request)",
        None if r is None else r <= 0.65,
        f"torii-log/haproxy-log = {r:.2f}" if r else "no numbers",
    )
    on, off = med(results, "unary_100", "torii-log", "cpu_us"), med(results, "unary_100", "torii", "cpu_us")
    cost = on - off if on is not None and off is not None else None
    line(
        "torii's access log costs ≤ 1.5 µs of CPU per request (100 B, on − off)",
        None if cost is None else cost <= 1.5,
        f"{on:.2f} − {off:.2f} = {cost:+.2f} µs" if cost is not None else "no numbers",
    )
    # Each policy target against plain torii (logs off), unary 100 B.
    for name, what, bar in [
        (RATE_LIMITED, "a rate-limit check adds ≤ 0.3 µs of CPU per request (100 B, torii-ratelimit − torii; "
         "the difference is within the run's noise, the check's own cost is measured by examples/rate-limit-cost)",
         0.3),
        (JWT_AUTH, "JWT verification adds ≤ 20 µs of CPU per request (100 B, ES256, the same token on every request; "
         "torii-jwt − torii)", 20),
        (TRACED_0, "tracing at sample_ratio 0 adds ≤ 0.2 µs of CPU per request (100 B, torii-trace0 − torii; "
         "within the run's noise, the microbenchmark tracing_cost times it alone)", 0.2),
        (TRACED, "tracing at sample_ratio 1 with a live collector adds ≤ 3 µs of CPU per request "
         "(100 B, both spans exported; torii-trace − torii)", 3.0),
        (RETRYING, "a retry policy on the success path adds ≤ 0.2 µs of CPU per request (100 B, torii-retry − torii; "
         "within the run's noise)", 0.2),
    ]:
        v = med(results, "unary_100", name, "cpu_us")
        cost = v - off if v is not None and off is not None else None
        line(what, None if cost is None else cost <= bar,
             f"{v:.2f} − {off:.2f} = {cost:+.2f} µs" if cost is not None else "no numbers")
    pin = "pingora" in peers_present
    r = cpu_ratio("torii", "pingora") if pin else None
    line(
        "CPU per unary 100 B request ≤ 0.8 × Pingora's",
        None if r is None else r <= 0.8,
        "Pingora missing" if not pin else (f"torii/Pingora = {r:.2f}" if r else "no numbers"),
    )
    r = ratio(med(results, "unary_100", "torii", "rps"), med(results, "unary_100", "pingora", "rps")) if pin else None
    line(
        "requests/s (100 B) ≥ 1.2 × Pingora's",
        None if r is None else r >= 1.2,
        "Pingora missing" if not pin else (f"torii/Pingora = {r:.2f}" if r else "no numbers"),
    )
    r = ratio(med(results, "memory", "torii", "per_conn_kb"), med(results, "memory", "pingora", "per_conn_kb")) if pin else None
    line(
        "memory per idle TLS+HTTP/2 connection ≤ 0.5 × Pingora's",
        None if r is None else r <= 0.5,
        "Pingora missing" if not pin else (f"torii/Pingora = {r:.2f}" if r else "no numbers"),
    )
    return out


def markdown(report):
    meta, results = report["meta"], report["results"]
    cols = ["torii"] + PEERS + ["direct"]
    missing = set(meta["peers_missing"])
    lines = [
        f"# torii benchmark — {meta['date']}{' (quick mode: the numbers only prove the harness runs)' if meta['quick'] else ''}",
        "",
        f"{meta['rounds']} round(s), {meta['seconds']:g} s per measurement, targets alternating; "
        f"median (min–max) over rounds. Peer cells end with the ratio torii/peer. "
        f"One worker each; TLS 1.3 ECDSA P-256, ALPN h2 in, h2c to the backend; "
        f"h2load -t1 -c4 -m16; bidi 4 connections × 16 streams, 100 B; "
        f"latency at a fixed rate per round, the same for every target: half of torii's 100 B requests/s "
        f"in that round ({', '.join(fmt(r) for r in meta['latency_rps'])} req/s); "
        f"{meta['idle_connections']} idle connections. \"direct\" is the client talking h2c to the backend.",
        "",
        "| metric | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for scenario, metric, label, unit, _hib in ROWS:
        cells = []
        tv = med(results, scenario, "torii", metric)
        for c in cols:
            if c in missing:
                cells.append("not installed")
                continue
            s = results.get(scenario, {}).get(c, {}).get(metric)
            if s is None:
                failed = any(e["scenario"] == scenario and e["target"] == c for e in report["errors"])
                cells.append("FAILED" if failed else "—")
                continue
            cell = f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"
            if c != "torii" and tv is not None and s["median"] and c != "direct":
                cell += f" · ×{tv / s['median']:.2f}"
            elif c == "direct" and tv is not None and s["median"] and metric in ("rps", "msgs"):
                cell += f" · ×{tv / s['median']:.2f}"
            cells.append(cell)
        lines.append(f"| {label}{' (' + unit + ')' if unit and unit != '/s' else ''} | " + " | ".join(cells) + " |")
    logged = [c for c in LOGGED if c in meta["targets"] or c[:-4] in missing]
    if logged:
        lines += [
            "",
            "Access log on (each proxy logging every request to a file: torii's default JSON access log on "
            "stdout, HAProxy `option httplog` to stdout, nginx `access_log`, Caddy's access log, Pingora a "
            "line per request in its `logging` hook); peer cells end with torii-log/peer-log. "
            "\"log cost\" is CPU per request with the log on minus off.",
            "",
            "| metric | " + " | ".join(logged) + " |",
            "|---|" + "---|" * len(logged),
        ]
        for scenario, metric, label, unit, _hib in ROWS:
            if scenario not in LOGGED_SCENARIOS or metric == "backend_cpu_us":
                continue
            cells = []
            tv = med(results, scenario, "torii-log", metric)
            for c in logged:
                if c[:-4] in missing:
                    cells.append("not installed")
                    continue
                s_ = results.get(scenario, {}).get(c, {}).get(metric)
                if s_ is None:
                    failed = any(e["scenario"] == scenario and e["target"] == c for e in report["errors"])
                    cells.append("FAILED" if failed else "—")
                    continue
                cell = f"{fmt(s_['median'])} ({fmt(s_['min'])}–{fmt(s_['max'])})"
                if c != "torii-log" and tv is not None and s_["median"]:
                    cell += f" · ×{tv / s_['median']:.2f}"
                cells.append(cell)
            lines.append(f"| {label}{' (' + unit + ')' if unit else ''} | " + " | ".join(cells) + " |")
            if metric == "cpu_us":
                costs = []
                for c in logged:
                    on, off = med(results, scenario, c, metric), med(results, scenario, c[:-4], metric)
                    costs.append(f"{on - off:+.2f}" if on is not None and off is not None else "—")
                lines.append(f"| {label.split(':')[0]}: log cost (µs) | " + " | ".join(costs) + " |")
    h1 = [sc for sc in H1_SCENARIOS if sc in results]
    if h1:
        cols1 = ["torii"] + [p for p in H1_PEERS if p not in missing]
        lines += [
            "",
            "HTTP/1.1 keep-alive REST (TLS 1.3 with ALPN http/1.1 in, HTTP/1.1 keep-alive to an HTTP/1.1 backend; "
            "h2load --h1 -c16 -m1; 1 KiB answers, POST sends 1 KiB); peer cells end with torii/peer:",
            "",
            "| metric | " + " | ".join(cols1) + " |",
            "|---|" + "---|" * len(cols1),
        ]
        for sc in h1:
            for metric, label in (("rps", "requests/s"), ("cpu_us", "proxy CPU per request (µs)")):
                tv = med(results, sc, "torii", metric)
                cells = []
                for c in cols1:
                    s_ = results[sc].get(c, {}).get(metric)
                    if s_ is None:
                        cells.append("—")
                        continue
                    cell = f"{fmt(s_['median'])} ({fmt(s_['min'])}–{fmt(s_['max'])})"
                    if c != "torii" and tv is not None and s_["median"]:
                        cell += f" · ×{tv / s_['median']:.2f}"
                    cells.append(cell)
                what = "GET" if "get" in sc else "POST"
                lines.append(f"| {what} 1 KiB: {label} | " + " | ".join(cells) + " |")
    phases = [sc for sc in PHASES if sc in results]
    if phases:
        lines += [
            "",
            "Phases (torii only, one listener with gRPC-Web and JSON transcoding, logs off; 100 B payload; "
            "h2: h2load -c4 -m16; HTTP/1.1 and \"one at a time\": -c16 -m1 keep-alive, compared with native "
            "gRPC sent the same way):",
            "",
            "| request | requests/s | proxy CPU per request (µs) | × native gRPC |",
            "|---|---|---|---|",
        ]
        for sc in phases:
            rps, cpu = results[sc]["torii"].get("rps"), results[sc]["torii"].get("cpu_us")
            cell = lambda s_: f"{fmt(s_['median'])} ({fmt(s_['min'])}–{fmt(s_['max'])})" if s_ else "—"
            base = med(results, "phase_grpc_m1" if PHASES[sc][1] != "h2" else "phase_grpc", "torii", "cpu_us")
            times = f"×{cpu['median'] / base:.2f}" if cpu and base else "—"
            lines.append(f"| {PHASE_LABELS[sc]} | {cell(rps)} | {cell(cpu)} | {times} |")
    lines += ["", "| target | verdict | detail |", "|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['verdict']} | {t['detail']} |")
    if missing:
        lines += ["", "Peers not installed: " + ", ".join(sorted(missing)) + "."]
    if report["errors"]:
        lines += ["", "Failures:"] + [f"- {e['scenario']} on {e['target']}: {e['error']}" for e in report["errors"]]
    lines += ["", "Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short round; checks every scenario produced numbers")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float, help="length of each measured window")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--latency-seconds", type=float)
    ap.add_argument("--idle-connections", type=int)
    ap.add_argument("--targets", default=",".join(PROXIES + ["direct"] + LOGGED + POLICY_TARGETS),
                    help="NAME-log is NAME with its access log on (unary scenarios only); "
                    f"{RATE_LIMITED} is torii with a rate limit far above the load, {JWT_AUTH} torii verifying "
                    f"an ES256 JWT on every request, {TRACED_0} and {TRACED} torii tracing at sample_ratio 0 and 1, "
                    f"{RETRYING} torii with a retry policy it never needs (all unary 100 B only)")
    ap.add_argument("--pingora", type=Path, help="bench/pingora's binary (bench/run builds it)")
    ap.add_argument("--bin-dir", type=Path, required=True, help="cargo's profile dir (target/release)")
    ap.add_argument("--out", type=Path, help="where the JSON and markdown go")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work")
    ap.add_argument("--pgid-file", type=Path)
    ap.add_argument("--stream-connections", type=int, help="streams scenario: connections (default 100)")
    ap.add_argument("--streams-per-connection", type=int, help="streams scenario: streams on each (default 100)")
    ap.add_argument("--only", default="main,h1,phases",
                    help="which groups run: main (the peers' gRPC scenarios), unary (of those, unary 100 B "
                         "only: the policy targets' comparison), h1 (HTTP/1.1 REST), "
                         "phases (torii only: gRPC-Web, JSON transcoding)")
    a = ap.parse_args()
    q = a.quick
    a.rounds = a.rounds or (1 if q else 5)
    a.seconds = a.seconds or (1.0 if q else 5.0)
    a.warmup = a.warmup or (0.3 if q else 1.0)
    a.latency_seconds = a.latency_seconds or (1.0 if q else 5.0)
    a.idle_connections = a.idle_connections or (200 if q else 2000)
    a.stream_connections = a.stream_connections or (10 if q else 100)
    a.streams_per_connection = a.streams_per_connection or 100
    a.out = a.out or (a.work / "quick" if q else ROOT / "bench" / "results")

    global _pgid_file
    _pgid_file = a.pgid_file
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    need_fds = a.idle_connections * 2 + 200
    if want < need_fds:
        log(f"warning: open-file limit {want} is below the {need_fds} the idle scenario needs")
    # Proxies get connection limits that fit the open-file limit (HAProxy
    # refuses to start when 2 x maxconn does not fit).
    a.nofile = want
    a.maxconn = max(100, min(10000, (want - 200) // 2))

    a.work.mkdir(parents=True, exist_ok=True)
    run_stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    a.work = a.work / f"run-{run_stamp}"
    a.work.mkdir(parents=True)
    b = Bench(a)
    for path in (b.torii, b.tool):
        if not path.exists():
            sys.exit(f"bench: {path} is missing: build it first (bench/run does)")
    if not shutil.which("h2load"):
        sys.exit("bench: h2load is missing (Debian's nghttp2-client)")

    wanted = [t.strip() for t in a.targets.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in PROXIES + ["direct"] + LOGGED + POLICY_TARGETS]
    if unknown:
        sys.exit(f"bench: unknown targets: {', '.join(unknown)}")
    binaries = {"haproxy": "haproxy", "nginx": "nginx", "caddy": "caddy", "pingora": str(a.pingora or "")}
    missing = [p for p in PEERS if (p in wanted or p + "-log" in wanted) and not shutil.which(binaries[p])]
    present_peers = [p for p in PEERS + [p + "-log" for p in PEERS] if p in wanted and p.removesuffix("-log") not in missing]
    if missing:
        log("peers not installed, measured without them: " + ", ".join(missing))
    names = [t for t in wanted if t.removesuffix("-log") not in missing]
    if "torii" not in names or "direct" not in names:
        sys.exit("bench: torii and direct are always measured")

    b.certs = last_json(run_tool([b.tool, "setup", "--dir", a.work / "certs"], 60, "setup"), "setup")
    b.backend = start([b.tool, "backend"], name="backend", workdir=a.work, stdout=subprocess.PIPE)
    line = _readline(b.backend.stdout, timeout=15)
    mm = re.search(r"address=127\.0\.0\.1:(\d+)", line or "")
    if not mm:
        sys.exit(f"bench: the backend did not start: {line!r}")
    b.backend_port = int(mm.group(1))

    a.only = {g.strip() for g in a.only.split(",") if g.strip()}
    groups = {"main", "unary", "h1", "phases"}
    if a.only - groups:
        sys.exit(f"bench: unknown --only groups: {', '.join(sorted(a.only - groups))}")
    # unary: the main group cut down to its 100 B unary scenario.
    unary_only = "unary" in a.only and "main" not in a.only
    if unary_only:
        a.only.add("main")
    h1_names = [n for n in ["torii"] + H1_PEERS if n in names] if "h1" in a.only else []
    if h1_names:
        b.h1_backend = start([b.tool, "http-backend", "--size", "1024"], name="h1-backend", workdir=a.work,
                             stdout=subprocess.PIPE)
        mm = re.search(r"address=127\.0\.0\.1:(\d+)", _readline(b.h1_backend.stdout, timeout=15) or "")
        if not mm:
            sys.exit("bench: the HTTP/1.1 backend did not start")
        b.h1_backend_port = int(mm.group(1))
        b.h1_body = a.work / "post-1024.bin"
        b.h1_body.write_bytes(b"x" * 1024)
    targets = {n: make_target(n, b) for n in names}
    versions = {
        n: t.version() for n, t in targets.items() if n not in ["direct"] + POLICY_TARGETS and not n.endswith("-log")
    }
    versions["h2load"] = run_tool(["h2load", "--version"], 10, "h2load").strip()
    log("versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))

    started = time.monotonic()
    for rnd in range(a.rounds):
        shift = rnd % len(names)
        order = names[shift:] + names[:shift]
        log(f"round {rnd + 1}/{a.rounds}: {' '.join(order)}")
        live = []
        try:
            for n in order if "main" in a.only else []:
                try:
                    targets[n].start()
                    live.append(n)
                except RuntimeError as e:
                    for sc in SCENARIOS:
                        if applies(sc, n):
                            b.fail(sc, n, e)
            if unary_only:
                b.round = rnd + 1
                for n in live:
                    b.unary(targets[n], 100)
            else:
                # The logs-on targets run the unary scenarios only.
                full = [n for n in live if applies("bidi", n)]
                tls_full = [n for n in full if targets[n].tls]
                for n in tls_full:
                    b.memory(targets[n])
                b.round = rnd + 1
                for n in live:
                    b.unary(targets[n], 100)
                # Latency right after the 100 B saturation runs it is pegged to.
                if live:
                    b.set_latency_rate()
                for n in full:
                    b.latency(targets[n])
                for size in SIZES[1:]:
                    for n in live:
                        if applies(f"unary_{size}", n):
                            b.unary(targets[n], size)
                for n in full:
                    b.bidi(targets[n])
                for n in tls_full:
                    b.handshakes(targets[n])
                # Open streams in a fresh process: one whose allocator holds the
                # memory the load scenarios freed would grow by nothing.
                for n in tls_full:
                    targets[n].stop()
                    try:
                        targets[n].start()
                    except RuntimeError as e:
                        b.fail("streams", n, e)
                        continue
                    b.streams(targets[n])
        finally:
            for n in live:
                targets[n].stop()
        if h1_names:
            b.h1_round(rnd, h1_names)
        if "phases" in a.only:
            b.phases(rnd)
    elapsed = time.monotonic() - started
    stop(b.backend)
    if h1_names:
        stop(b.h1_backend)

    results = {
        sc: {t: {m: summary(v) for m, v in metrics.items()} for t, metrics in by_t.items()}
        for sc, by_t in b.samples.items()
    }
    report = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "quick": q,
            "rounds": a.rounds,
            "seconds": a.seconds,
            "warmup": a.warmup,
            "latency_seconds": a.latency_seconds,
            "latency_rps": b.latency_rates,
            "idle_connections": a.idle_connections,
            "elapsed_s": round(elapsed, 1),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "machine": platform.machine()},
            "versions": versions,
            "targets": names,
            "peers_missing": missing,
            "method": {
                "unary": "h2load -t1 -c4 -m16 -D SECONDS, a pre-encoded gRPC frame, content-type application/grpc, te trailers",
                "cpu": "utime+stime of the proxy's processes from /proc/PID/stat over the window ÷ requests (or messages, handshakes)",
                "latency": "h2load --rps (per client) × 4 clients at half of torii's 100 B requests/s of the same round, per-request log; nearest-rank percentiles of the 2xx durations",
                "bidi": "torii-bench bidi: 4 connections × 16 streams, 100 B ping-pong; messages = echoes received",
                "handshakes": "torii-bench handshakes: 8 loops of connect, TLS 1.3 full handshake (no resumption, X25519), close_notify, wait for close",
                "streams": "torii-bench streams: C TLS+h2 connections × S bidi streams, each echoing one 100 B message then held open; (VmRSS held − VmRSS idle) ÷ streams",
                "memory": "VmRSS summed over the proxy's processes, idle after one call, then with N TLS+h2 connections (preface and SETTINGS exchanged) held",
                "logs": "NAME-log: NAME with its access log on, to a file (unary scenarios only); NAME: logs off",
                "h1": "HTTP/1.1 keep-alive REST: torii, HAProxy and nginx started afresh after each round with TLS 1.3 (ALPN http/1.1) in and HTTP/1.1 keep-alive to torii-bench http-backend (1 KiB answers); h2load --h1 -t1 -c16 -m1, GET and POST of 1 KiB",
                "phases": "torii only, a second torii (one listener, gRPC-Web on, JSON transcoding of Echo/Unary from bench/proto/echo_http.proto, logs off) started after each round; h2load over TLS: h2 -c4 -m16, HTTP/1.1 --h1 -c16 -m1; CPU as above",
                "rate_limit": f"{RATE_LIMITED}: torii with rate_limit {{requests_per_second: 10000000, burst: 10000000, per: client_ip}} on its route (never empties), unary 100 B only",
                "jwt": f"{JWT_AUTH}: torii with auth {{jwt: [bench]}} on its route (an ES256 key in a JWKS file); every request carries the same token (a client with a cached access token), unary 100 B only",
                "tracing": f"{TRACED_0} and {TRACED}: torii with tracing {{otlp: {{endpoint: the backend's own OTLP collector, which drops what it gets}}, sample_ratio: 0 or 1}}; the requests carry no traceparent, so at 1 every request starts a trace and exports its two spans; unary 100 B only",
                "retry": f"{RETRYING}: torii with retry {{on: [unavailable, reset, connect_failure], attempts: 3}} on its route, never needed; unary 100 B only",
            },
        },
        "results": results,
        "samples": b.samples,
        "errors": b.errors,
    }
    report["targets"] = evaluate_targets(results, present_peers, b.samples)

    a.out.mkdir(parents=True, exist_ok=True)
    base = "quick" if q else f"bench-{run_stamp}"
    (a.out / f"{base}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (a.out / f"{base}.md").write_text(md)
    print(md)
    log(f"wrote {a.out / (base + '.json')} and {base}.md in {elapsed:.0f}s")

    # Every scenario must have produced numbers for every target it applies to.
    holes = []
    for sc in (["unary_100"] if unary_only else SCENARIOS) if "main" in a.only else []:
        for n in names:
            if not applies(sc, n):
                continue
            # A peer that cannot hold the open streams (nginx opens an
            # upstream connection per stream and runs out of connections)
            # is a finding, reported under Failures, not a broken harness.
            if sc == "streams" and n != "torii":
                continue
            got = b.samples.get(sc, {}).get(n)
            if not got or any(not isinstance(v, (int, float)) for vals in got.values() for v in vals):
                holes.append(f"{sc} on {n}")
    if "phases" in a.only:
        holes += [f"{sc} on torii" for sc in PHASES if not b.samples.get(sc, {}).get("torii")]
    holes += [f"{sc} on {n}" for sc in H1_SCENARIOS for n in h1_names if not b.samples.get(sc, {}).get(n)]
    if missing:
        log("NOTE: not measured (not installed): " + ", ".join(missing))
    if holes:
        log("FAILED: no numbers for " + ", ".join(holes))
        return 1
    log(f"every scenario produced numbers for {', '.join(names)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
