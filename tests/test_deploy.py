"""deploy/ is checked, not just shipped: promtool, Kubernetes schemas, hadolint, and every metric
name a dashboard or alert uses must be one the running gateway really exports."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestServer

from tests.conftest import MakeGateway, make_config

DEPLOY = Path(__file__).parent.parent / "deploy"
METRIC_RE = re.compile(r"\bgateway_[a-z_]+")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run installs it")
        pytest.skip(f"{name} not installed (CI installs it)")
    return path


def _extra(name: str) -> str:
    """A tool the test extras install beside this interpreter (not PATH: the venv may not be activated)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable} (it is in the test extras)")
    return str(path)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_promtool_checks_rules_and_config() -> None:
    promtool = _tool("promtool")
    _run(promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    _run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))


def test_kubernetes_manifests_validate() -> None:
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.fail("kubernetes-validate is not installed (it is in the test extras)")
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert manifests
    kinds = {doc["kind"] for m in manifests for doc in yaml.safe_load_all(m.read_text()) if doc}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    } <= kinds
    _run(sys.executable, "-m", "kubernetes_validate", "--strict", *map(str, manifests))


def test_kubernetes_deployment_probes_and_security() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "gateway.yaml").read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "preStop" in container["lifecycle"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]
    # The rules in the ConfigMap are a valid gateway config.
    from gateway.config import load_config

    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    rules = Path(os.environ.get("TMPDIR", "/tmp")) / f"k8s-rules-{os.getpid()}.yaml"
    rules.write_text(config_map["data"]["gateway.yaml"])
    try:
        load_config(rules, {})
    finally:
        rules.unlink()


def test_kubernetes_admin_port_is_fenced() -> None:
    """No Service carries the admin port; the NetworkPolicy admits it only from Prometheus and operators."""
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "gateway.yaml").read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    admin_port, proxy_port = ports["admin"], ports["http"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GATEWAY_ADMIN_LISTEN"].endswith(f":{admin_port}") and env["GATEWAY_ADMIN_PROTECT_READS"] == "true"
    for service in (d for d in docs if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] not in ("admin", admin_port), service["metadata"]["name"]

    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()  # it selects the gateway pods
    assert "Ingress" in spec["policyTypes"]
    admin_rules = []
    for rule in spec["ingress"]:
        assert rule.get("ports"), "a rule without ports admits every port, the admin port included"
        port_numbers = {p["port"] for p in rule["ports"]}
        if admin_port in port_numbers or "admin" in port_numbers:
            admin_rules.append(rule)
        else:
            assert port_numbers == {proxy_port}
    assert len(admin_rules) == 1 and admin_rules[0].get("from"), "the admin port must name who may connect"
    peers = admin_rules[0]["from"]
    assert all("ipBlock" not in peer for peer in peers)
    assert any("prometheus" in str(peer.get("podSelector", {}).get("matchLabels", {})).lower() for peer in peers), peers
    assert any("operator" in str(peer.get("podSelector", {}).get("matchLabels", {})) for peer in peers), peers
    assert all(peer.get("podSelector", {}).get("matchLabels") for peer in peers)  # never "every pod"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(admin_port)  # Prometheus scrapes the pods, not a Service


def test_hadolint_dockerfile() -> None:
    hadolint = _extra("hadolint")
    _run(hadolint, str(DEPLOY / "Dockerfile"))
    text = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/healthz" in text


def _used_metric_names() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "cutover.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    names = set()
    for expr in exprs:
        for name in METRIC_RE.findall(expr):
            for suffix in ("_bucket", "_count", "_sum"):
                if name.endswith(suffix):
                    name = name.removesuffix(suffix)
            names.add(name)
    return names


async def test_every_metric_used_by_dashboard_and_alerts_is_exported(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    used = _used_metric_names()
    assert "gateway_requests_total" in used and "gateway_flag_percent" in used
    gw = await make_gateway(make_config(upstreams))
    async with gw.get("/api/v1/users") as resp:
        assert resp.status == 200
    async with gw.admin("GET", "/metrics", token=None) as resp:
        text = await resp.text()
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    exported |= {name + "_total" for name in exported}  # counters are declared without _total in TYPE lines
    missing = sorted(used - exported)
    assert not missing, f"dashboard/alerts use metrics the gateway does not export: {missing}"


def test_compose_sample_upstreams_answer() -> None:
    """The compose stack's two sample upstreams run the demo's sample API (its entrypoint, on a free port)."""
    import sys
    import time
    import urllib.request

    from tests.conftest import free_port

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for side in ("legacy", "candidate"):
        code = compose["services"][side]["entrypoint"][2]
        port = free_port()
        code = re.sub(r"port=\d+", f"port={port},host='127.0.0.1',print=None", code)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                        body = json.loads(resp.read())
                    break
                except OSError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert body["database"] == "connected" and body["servedBy"] == side
        finally:
            proc.kill()
            proc.wait(5)
            if proc.stderr is not None:
                proc.stderr.close()
