"""The Kubernetes manifests parse and agree with the worker's settings, ports and probes."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from opsfiles import K8S, ROOT, load_yaml, load_yaml_documents
from prometheus_client import CollectorRegistry

from streamrec.ops.http import OpsServer
from streamrec.ops.settings import Settings, load_settings

pytest.importorskip("yaml", reason="PyYAML (dev extra) is needed to read the manifests")


def _manifests() -> dict[str, dict[str, Any]]:
    """{kind: manifest} of everything kustomization.yaml applies (one of each kind)."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    out: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in load_yaml_documents(K8S / name):
            assert doc["kind"] not in out, f"two {doc['kind']} manifests"
            out[doc["kind"]] = doc
    return out


MANIFESTS = _manifests()
SECRET = load_yaml(K8S / "secret.example.yaml")
CONFIG = MANIFESTS["ConfigMap"]["data"]
DEPLOYMENT = MANIFESTS["Deployment"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]


def _settings_from(env: dict[str, str]) -> Settings:
    fields = {}
    for key, value in env.items():
        assert key.startswith("STREAMREC_"), key
        fields[key.removeprefix("STREAMREC_").lower()] = value
    return load_settings(**fields)


def test_every_manifest_has_the_basics() -> None:
    assert set(MANIFESTS) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "ScaledObject",
        "TriggerAuthentication",
    }
    for kind, doc in {**MANIFESTS, "Secret": SECRET}.items():
        assert doc["apiVersion"] and doc["metadata"]["name"], kind
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "streamrec", kind


def test_configmap_holds_valid_settings_and_no_secrets() -> None:
    settings = _settings_from(CONFIG)
    assert settings.metrics_host == "0.0.0.0", "the kubelet probes the pod IP"
    assert settings.security_protocol == "SASL_SSL"
    assert not {"STREAMREC_DB_URL", "STREAMREC_SASL_PASSWORD"} & set(CONFIG)


def test_secret_example_completes_the_settings() -> None:
    worker_keys = {k: v for k, v in SECRET["stringData"].items() if k.startswith("STREAMREC_")}
    assert "STREAMREC_DB_URL" in worker_keys and "STREAMREC_SASL_PASSWORD" in worker_keys
    settings = _settings_from({**CONFIG, **worker_keys})
    assert settings.kafka_security()["sasl_plain_password"] == "CHANGE_ME"
    assert "CHANGE_ME" not in settings.safe_db_url()


def test_deployment_reads_the_configmap_and_secret() -> None:
    refs = CONTAINER["envFrom"]
    assert {"configMapRef": {"name": MANIFESTS["ConfigMap"]["metadata"]["name"]}} in refs
    assert {"secretRef": {"name": SECRET["metadata"]["name"]}} in refs
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _port_number(port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p for p in CONTAINER["ports"] if p["name"] == port]
    return int(match["containerPort"])


def test_ports_and_probes_match_the_worker_settings() -> None:
    metrics_port = _settings_from(CONFIG).metrics_port
    (port,) = CONTAINER["ports"]
    assert port["containerPort"] == metrics_port
    probes = {k: CONTAINER[k]["httpGet"] for k in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert CONTAINER["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (*probes.values(), CONTAINER["startupProbe"]["httpGet"]):
        assert _port_number(probe["port"]) == metrics_port


def test_the_probe_paths_exist_on_the_ops_server() -> None:
    paths = {CONTAINER[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe")}
    with OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (False, "no partitions")) as srv:
        codes = {}
        for path in [*paths, "/nope"]:
            try:
                codes[path] = urllib.request.urlopen(srv.url + path, timeout=5).status
            except urllib.error.HTTPError as exc:
                codes[path] = exc.code
    assert codes == {"/healthz": 200, "/readyz": 503, "/nope": 404}


def test_service_targets_the_metrics_port() -> None:
    service = MANIFESTS["Service"]
    pod_labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert _port_number(port["targetPort"]) == _settings_from(CONFIG).metrics_port
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(port["port"])


def test_resources_and_security_context() -> None:
    resources = CONTAINER["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["runAsUser"] == uid
    ctx = CONTAINER["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in CONTAINER["volumeMounts"]}
    assert {"/tmp", _settings_from(CONFIG).model_dir.as_posix()} <= mounts


def test_autoscaling_on_consumer_lag_with_keda() -> None:
    scaled = MANIFESTS["ScaledObject"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == DEPLOYMENT["metadata"]["name"]
    partitions = int(scaled["metadata"]["annotations"]["streamrec/events-topic-partitions"])
    assert spec["maxReplicaCount"] == partitions, "more workers than partitions sit idle"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    settings = _settings_from(CONFIG)
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == settings.bootstrap_servers
    assert meta["consumerGroup"] == settings.group_id
    assert meta["topic"] == settings.events_topic
    assert int(meta["lagThreshold"]) > 0
    auth = MANIFESTS["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == SECRET["metadata"]["name"]
        assert ref["key"] in SECRET["stringData"], ref
