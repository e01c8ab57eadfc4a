"""TLS to the broker, for real: stunnel terminates TLS in front of the embedded broker.

The broker advertises the TLS port, so every client (the worker's consumer, producer, catalog
reader and admin client; the test's own clients) talks TLS, verified against a CA made here.
tansu 0.6.0's own TLS options cannot be used: its command line refuses ``--cert`` together
with ``--key``. SASL: tests/integration/test_sasl.py (README, "Security").
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from needs import unavailable
from support import secured_round_trip, unique_settings

from streamrec.io.broker import broker_command, free_port, wait_for_port
from streamrec.ops.settings import Settings

pytestmark = pytest.mark.broker


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(root: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=streamrec test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=root)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=root)  # fmt: skip
    (root / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem",
             cwd=root)  # fmt: skip
    return root / "ca.pem", root / "server.pem", root / "server.key"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(bootstrap, ca file)`` of a broker reachable only through TLS."""
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    if stunnel is None or shutil.which("openssl") is None:
        unavailable("stunnel and openssl are needed (apt-get install stunnel4; make test does)")
    ca, cert, key = _certificates(tmp_path)
    tls_port, broker_port = free_port(), free_port()
    cmd = broker_command(broker_port)
    cmd[cmd.index("--advertised-listener-url") + 1] = f"tcp://127.0.0.1:{tls_port}"
    conf = tmp_path / "stunnel.conf"
    conf.write_text(
        f"foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\n"
        f"connect = 127.0.0.1:{broker_port}\ncert = {cert}\nkey = {key}\n"
    )
    with open(tmp_path / "tls.log", "ab") as log:
        broker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        tunnel = subprocess.Popen([stunnel, str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port("127.0.0.1", broker_port, 15), "broker did not start"
        assert wait_for_port("127.0.0.1", tls_port, 15), "stunnel did not start"
        yield f"127.0.0.1:{tls_port}", ca
    finally:
        for proc in (tunnel, broker):
            proc.terminate()
            proc.wait(timeout=10)


def _settings(bootstrap: str, ca: Path | None, model_dir: Path, tmp_path: Path) -> Settings:
    return unique_settings(bootstrap, model_dir, tmp_path, security_protocol="SSL", ssl_cafile=ca)


def test_the_worker_runs_over_tls(
    tls_broker: tuple[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    bootstrap, ca = tls_broker
    settings = _settings(bootstrap, ca, model_dir, tmp_path)
    tls = {"security_protocol": "SSL", "ssl_cafile": str(ca)}
    secured_round_trip(settings, bootstrap, tls, 60)


def test_the_listener_is_tls_and_needs_the_ca(tls_broker: tuple[str, Path]) -> None:
    bootstrap, ca = tls_broker
    host, port = bootstrap.split(":")
    untrusting = ssl.create_default_context()  # the system's CAs only
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection((host, int(port)), timeout=5) as raw,
    ):
        untrusting.wrap_socket(raw, server_hostname=host)
    trusting = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        trusting.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() is not None
