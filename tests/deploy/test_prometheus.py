"""The Prometheus config and alert rules pass promtool, and a real Prometheus scrapes a worker.

promtool and prometheus come from the distribution package (`apt-get install prometheus`,
which `make test` attempts); without them these tests skip and say so.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from opsfiles import PROMETHEUS
from support import read_topic, running_worker, send_events

from streamrec.core.events import Event
from streamrec.io.clients import ensure_topics
from streamrec.ops.settings import Settings
from streamrec.ranking.modelfiles import read_model_dir

PROMTOOL = shutil.which("promtool")
PROMETHEUS_BIN = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS
    )


@needs_promtool
def test_promtool_check_config() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule files found" in result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    rules = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "rules").glob("*.yml"))
    assert rules
    result = _promtool("check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "tests").glob("*.yml"))
    assert tests, "no promtool unit tests in deploy/prometheus/tests"
    result = _promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """A wrong expectation must make promtool fail (so the test above means something)."""
    bad = tmp_path / "bad_test.yml"
    bad.write_text(
        f"rule_files: [{PROMETHEUS / 'rules' / 'streamrec.yml'}]\n"
        "evaluation_interval: 1m\n"
        "tests:\n"
        "  - interval: 1m\n"
        "    input_series:\n"
        '      - series: \'up{job="streamrec", instance="w1"}\'\n'
        "        values: '1x10'\n"
        "    alert_rule_test:\n"
        "      - eval_time: 5m\n"
        "        alertname: StreamrecWorkerDown\n"
        "        exp_alerts: [{exp_labels: {severity: page, instance: w1, job: streamrec}}]\n"
    )
    result = _promtool("test", "rules", str(bad))
    assert result.returncode != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.broker
@pytest.mark.skipif(
    PROMETHEUS_BIN is None, reason="prometheus not installed (apt-get install prometheus)"
)
def test_real_prometheus_scrapes_a_running_worker(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings, partitions=2)
    items = read_model_dir(settings.model_dir).item_ids
    events = [
        Event(f"prom-{i}", f"user-{i % 7}", items[i % 20], "click", 1_700_000_000_000 + i)
        for i in range(12)
    ]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with running_worker(settings) as running:
        send_events(settings, events, linger_ms=0)
        assert len(read_topic(settings.bootstrap_servers, settings.recs_topic, 12)) == 12
        target = running.url.removeprefix("http://")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: streamrec\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        log = (tmp_path / "prometheus.log").open("w")
        server = subprocess.Popen(
            [
                str(PROMETHEUS_BIN),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            result: list[dict] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert server.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                try:
                    result = _query(base, "streamrec_recommendations_published_total")
                except OSError:
                    result = []  # not listening yet
                if result and float(result[0]["value"][1]) == 12:
                    break
                time.sleep(0.5)
            assert result, "Prometheus never stored the worker's series"
            assert float(result[0]["value"][1]) == 12
            assert result[0]["metric"]["job"] == "streamrec"
            up = _query(base, 'up{job="streamrec"}')
            assert up and float(up[0]["value"][1]) == 1
            lag = _query(base, "streamrec_consumer_lag_records")
            assert all(float(s["value"][1]) >= 0 for s in lag)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
            log.close()
