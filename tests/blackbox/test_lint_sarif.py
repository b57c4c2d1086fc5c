"""`torii lint --format sarif` validated against the published SARIF 2.1.0
JSON schema (scripts/test.sh puts it in the venv), and `--format json`
checked field by field, for every fixture directory: findings, a clean
run, and unreadable inputs."""

import json
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO, torii_bin

FIXTURES = REPO / "tests" / "lint_fixtures"
SCHEMA = pathlib.Path(sys.prefix) / "sarif-schema-2.1.0.json"


def lint(*args):
    proc = subprocess.run(
        [str(torii_bin()), "lint", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="SKIPPED: jsonschema not installed: run scripts/test.sh")
    if not SCHEMA.exists():
        pytest.skip(f"SKIPPED: {SCHEMA} missing: run scripts/test.sh (it fetches the SARIF 2.1.0 schema)")
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize(
    "inputs,exit_code",
    [
        (["incidents"], 1),
        (["envoy", "kube", "istio", "mixed"], 1),
        (["incidents/mesh-service-fixed.yaml"], 0),
        (["malformed"], 2),
    ],
)
def test_sarif_is_valid_against_the_schema(validator, inputs, exit_code):
    code, out, err = lint("--format", "sarif", *[FIXTURES / i for i in inputs])
    assert code == exit_code, out + err
    log = json.loads(out)
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        region = result["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
    if exit_code == 2:
        assert run["invocations"][0]["executionSuccessful"] is False
        assert len(run["invocations"][0]["toolExecutionNotifications"]) == 2


def test_sarif_points_at_the_incident_keys(validator):
    code, out, _ = lint("--format", "sarif", "tests/lint_fixtures/incidents/envoy-front-proxy.yaml")
    assert code == 1
    results = json.loads(out)["runs"][0]["results"]
    where = [
        (
            r["ruleId"],
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
            r["locations"][0]["physicalLocation"]["region"]["startColumn"],
        )
        for r in results
    ]
    f = "tests/lint_fixtures/incidents/envoy-front-proxy.yaml"
    assert where == [
        ("tls-no-alpn", f, 15, 15),
        ("stream-timeout", f, 37, 27),
        ("grpc-upstream-http1", f, 46, 7),
    ]


def test_json_has_one_object_per_finding():
    code, out, err = lint("--format", "json", FIXTURES / "incidents")
    assert code == 1
    findings = json.loads(out)
    assert len(findings) == 8, out
    for f in findings:
        assert set(f) == {"file", "line", "column", "level", "code", "message", "help"}
        assert f["level"] in ("error", "warning")
    codes = sorted({f["code"] for f in findings})
    assert codes == ["grpc-upstream-http1", "h2c-probe", "port-name-protocol", "stream-timeout", "tls-no-alpn"]
    assert "8 findings" in err
