"""docker-compose.yml and the Dockerfile: the whole stack, wired consistently."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
from opsfiles import GRAFANA, PROMETHEUS, ROOT, load_yaml

from streamrec.ops.settings import load_settings

pytest.importorskip("yaml", reason="PyYAML (dev extra) is needed to read docker-compose.yml")

COMPOSE = load_yaml(ROOT / "docker-compose.yml")
SERVICES: dict[str, Any] = COMPOSE["services"]


def _host_path(volume: str) -> str:
    return volume.split(":", 1)[0]


def test_the_stack_has_every_service() -> None:
    assert {"kafka", "postgres", "worker", "simulator", "prometheus", "grafana"} <= set(SERVICES)


def test_kafka_runs_in_kraft_mode() -> None:
    env = SERVICES["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"]


def test_worker_environment_is_valid_settings() -> None:
    env = SERVICES["worker"]["environment"]
    settings = load_settings(
        **{k.removeprefix("STREAMREC_").lower(): str(v) for k, v in env.items()}
    )
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.db_url.startswith("postgresql+psycopg://")
    (target,) = load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"][0]["static_configs"][0][
        "targets"
    ]
    assert target == f"worker:{settings.metrics_port}"


def test_host_ports_bind_to_loopback() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_mounted_deploy_files_exist_and_match_the_provisioning() -> None:
    for name in ("prometheus", "grafana"):
        for volume in SERVICES[name]["volumes"]:
            assert (ROOT / _host_path(volume)).exists(), volume
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "streamrec.yml")
    dashboards_path = provider["providers"][0]["options"]["path"]
    grafana_mounts = {v.split(":")[1]: _host_path(v) for v in SERVICES["grafana"]["volumes"]}
    assert grafana_mounts[dashboards_path] == "./deploy/grafana/dashboards"
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    prom_mounts = {v.split(":")[1]: _host_path(v) for v in SERVICES["prometheus"]["volumes"]}
    assert prom_mounts["/etc/prometheus"] == "./deploy/prometheus"


def test_simulator_and_topics_use_the_worker_image() -> None:
    for name in ("topics", "worker", "simulator"):
        assert SERVICES[name]["build"] == "."
    assert SERVICES["simulator"]["command"][0] == "simulate"


def test_dockerfile_is_slim_non_root_and_torch_free() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert bases and all(b.endswith("-slim") for b in bases), bases
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    instructions = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "torch" not in instructions and "train" not in instructions
    assert "HEALTHCHECK" in text and "/healthz" in text


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_validates() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("docker compose is not installed (neither the CLI plugin nor docker-compose)")
    result = subprocess.run(
        [*cli, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
