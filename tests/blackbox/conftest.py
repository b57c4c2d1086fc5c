"""Black-box tests of the built torii binary with real clients (grpcio, curl).

Fixtures here start the binary (env TORII_BIN, default target/debug/torii),
wait for the lines it prints when ready (never sleep to synchronise), and stop
it after the test. Certificates are made per test with `cryptography`; gRPC
stubs are generated from proto/echo.proto once per session.
"""

import datetime
import importlib
import importlib.resources
import ipaddress
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
# Generous: a debug build on a busy 2-core machine can be slow to start.
READY_TIMEOUT = float(os.environ.get("TORII_READY_TIMEOUT", "30"))
STOP_TIMEOUT = 15.0
SPIFFE_ID = "spiffe://example.org/ns/default/sa/client"

# torii's readiness lines (interface contract).
LISTENER_RE = r'listening listener="?([^"\s]+)"? address=(\S+)'
ADMIN_RE = r"admin listening address=(\S+)"
ECHO_RE = r"echo listening address=(\S+)"


def pytest_configure(config):
    config.addinivalue_line("markers", "proxy: needs the proxy itself (torii serve/check/demo)")


def skip(why: str):
    """A test that cannot run here says so (`SKIPPED: <why>`, listed by
    pytest -rs). Under CI (`CI` set, and not "false" or "0") it fails
    instead: CI is set up to run every test, so one that cannot run there
    means the setup broke."""
    ci = os.environ.get("CI", "")
    if ci and ci not in ("false", "0"):
        pytest.fail(f"cannot run, and CI must run it: {why}")
    pytest.skip(f"SKIPPED: {why}")


def torii_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("TORII_BIN", "target/debug/torii"))
    return path if path.is_absolute() else REPO / path


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class Process:
    """A child process whose stdout and stderr are read line by line on
    threads (so its pipes never fill) and can be waited on for a pattern."""

    def __init__(self, args, name, cwd=None):
        self.name = name
        self.args = [str(a) for a in args]
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        # Readiness lines must not depend on colours.
        env["NO_COLOR"] = "1"
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self.lines = []  # (stream name, line)
        self.open_streams = 2
        self.cond = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "stderr"), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, pipe, stream):
        for line in pipe:
            with self.cond:
                self.lines.append((stream, strip_ansi(line.rstrip("\n"))))
                self.cond.notify_all()
        with self.cond:
            self.open_streams -= 1
            self.cond.notify_all()

    def output(self) -> str:
        with self.cond:
            return "\n".join(f"[{self.name} {s}] {line}" for s, line in self.lines)

    def wait_for(self, pattern, count=1, timeout=READY_TIMEOUT, streams=("stdout", "stderr")):
        """Waits until `count` lines match `pattern` (a regex, searched);
        returns their match objects. Fails with the output so far if the
        process exits or `timeout` passes first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for s, line in self.lines if s in streams for m in [regex.search(line)] if m]
                if len(found) >= count:
                    return found[:count]
                if self.open_streams == 0:
                    self.proc.wait()
                    raise AssertionError(
                        f"{self.name} exited with {self.proc.returncode} before printing "
                        f"{count} line(s) matching {pattern!r}:\n{self.output_locked()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name} did not print {count} line(s) matching {pattern!r} "
                        f"within {timeout}s:\n{self.output_locked()}"
                    )
                self.cond.wait(left)

    def output_locked(self) -> str:
        return "\n".join(f"[{self.name} {s}] {line}" for s, line in self.lines)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self.readers:
            reader.join(5)
        return self.proc.returncode


class Spawner:
    """Starts processes and stops them all at the end, printing their output
    (pytest shows it when a test fails)."""

    def __init__(self, tail=None):
        self.started = []
        self.tail = tail  # print only this many last lines of each

    def __call__(self, args, name):
        binary = pathlib.Path(args[0])
        if binary.is_absolute() and not binary.exists():
            pytest.fail(f"{binary} does not exist: build it first (cargo build) or set TORII_BIN")
        proc = Process(args, name, cwd=REPO)
        self.started.append(proc)
        return proc

    def stop_all(self):
        for proc in reversed(self.started):
            proc.stop()
            output = proc.output()
            if self.tail is not None:
                output = "\n".join(output.splitlines()[-self.tail :])
            print(output)


@pytest.fixture
def spawn():
    """Starts processes for one test and stops them all afterwards."""
    spawner = Spawner()
    yield spawner
    spawner.stop_all()


@pytest.fixture(scope="module")
def module_spawn():
    """Like `spawn`, for processes shared by every test of a module (the
    foreign peers' servers and the torii in front of them); tests show what
    they need of the output when they fail, so only its end is printed."""
    spawner = Spawner(tail=20)
    yield spawner
    spawner.stop_all()


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """grpcio stubs for proto/echo.proto, generated once per session."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    include = importlib.resources.files("grpc_tools") / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "echo.proto"),
        ]
    )
    assert rc == 0, "protoc failed on proto/echo.proto"
    sys.path.insert(0, str(out))
    try:
        echo_pb2 = importlib.import_module("echo_pb2")
        echo_pb2_grpc = importlib.import_module("echo_pb2_grpc")
    finally:
        sys.path.remove(str(out))

    class Stubs:
        pb2 = echo_pb2
        grpc = echo_pb2_grpc

    return Stubs


# --- certificates -----------------------------------------------------------


@dataclass
class Pair:
    cert: pathlib.Path
    key: pathlib.Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


@dataclass
class Pki:
    ca: pathlib.Path
    server: Pair  # localhost, 127.0.0.1
    client: Pair  # DNS client.example.com + SPIFFE URI SAN
    wrong_ca_client: Pair  # same names, issued by a CA nobody trusts

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(common_name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(ca, common_name, dns=(), ips=(), uris=(), server=False, client=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert, ca_key = ca
    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(directory, name, cert, key) -> Pair:
    from cryptography.hazmat.primitives import serialization

    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


@pytest.fixture
def pki(tmp_path) -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1, a client
    certificate with a SPIFFE URI SAN, and one from a CA nobody trusts."""
    return make_pki(tmp_path / "pki")


@pytest.fixture(scope="module")
def module_pki(tmp_path_factory) -> Pki:
    """`pki` made once for a module whose servers live as long as it does."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def make_pki(directory: pathlib.Path) -> Pki:
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(exist_ok=True)
    ca = _make_ca("torii blackbox CA")
    (directory / "ca.crt").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    server = _write(directory, "server", *_issue(ca, "localhost", dns=["localhost"], ips=["127.0.0.1"], server=True))
    client_names = dict(dns=["client.example.com"], uris=[SPIFFE_ID], client=True)
    client = _write(directory, "client", *_issue(ca, "client", **client_names))
    stranger = _make_ca("untrusted CA")
    wrong = _write(directory, "wrong-ca-client", *_issue(stranger, "client", **client_names))
    return Pki(directory / "ca.crt", server, client, wrong)


# --- torii processes -----------------------------------------------------------


@pytest.fixture
def echo_backend(spawn) -> str:
    """`torii echo` on h2c; returns its IP:PORT."""
    proc = spawn([torii_bin(), "echo", "--address", "127.0.0.1:0"], "echo")
    return proc.wait_for(ECHO_RE, streams=("stdout",))[0].group(1)


@dataclass
class Torii:
    proc: Process
    config: pathlib.Path
    listeners: dict  # name -> "IP:PORT"
    admin: str | None


@pytest.fixture
def start_torii(spawn, tmp_path):
    """Writes `config` (YAML text) and runs `torii serve -c FILE` (with
    `--workers N` if given: 1 is the single-threaded runtime); waits until
    every named listener (and the admin listener, if asked) is bound."""

    def start(config: str, listeners, admin=False, workers=None) -> Torii:
        return run_torii(spawn, tmp_path / "torii.yaml", config, listeners, admin, workers)

    return start


def run_torii(spawner, path: pathlib.Path, config: str, listeners, admin=False, workers=None) -> Torii:
    """Writes `config` to `path`, starts `torii serve` with `spawner` and
    waits for the named listeners (and the admin listener, if asked)."""
    path.write_text(config)
    argv = [torii_bin(), "serve", "-c", path]
    if workers is not None:
        argv += ["--workers", str(workers)]
    proc = spawner(argv, "torii")
    bound = {}
    while set(listeners) - set(bound):
        matches = proc.wait_for(LISTENER_RE, count=len(bound) + 1)
        bound = {m.group(1): m.group(2) for m in matches}
    admin_addr = proc.wait_for(ADMIN_RE)[0].group(1) if admin else None
    return Torii(proc, path, bound, admin_addr)


# --- clients ----------------------------------------------------------------

# Never let an http_proxy in the environment route test traffic elsewhere.
GRPC_OPTIONS = [("grpc.enable_http_proxy", 0)]


def grpc_channel(address, ca=None, client: Pair | None = None, server_name="localhost"):
    """A grpcio channel: insecure without `ca`; TLS (and mTLS with `client`)
    with it, SNI and certificate name `server_name`."""
    import grpc

    if ca is None:
        return grpc.insecure_channel(address, options=GRPC_OPTIONS)
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    options = GRPC_OPTIONS + [("grpc.ssl_target_name_override", server_name)]
    return grpc.secure_channel(address, creds, options=options)


def curl(*args, timeout=10):
    """Runs curl; returns (status code, HTTP version, body)."""
    result = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout), "-w", "\n%{http_code} %{http_version}", *args],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )
    body, _, last = result.stdout.rpartition("\n")
    code, _, version = last.partition(" ")
    assert result.returncode == 0, f"curl {args} failed ({result.returncode}): {result.stderr}"
    return int(code), version, body
