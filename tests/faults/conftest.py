"""Fault-injection fixtures: a Send API stub, stacks wired to it, a private PostgreSQL."""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dmdesk.bench import PAGE_ID, PAGE_TOKEN, SendApiStub
from dmdesk.natsserver import free_port
from tests.stack import Stack, started

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"


@pytest.fixture
async def send_stub() -> AsyncIterator[SendApiStub]:
    """Meta's Send API on loopback, recording every bot reply."""
    stub = SendApiStub()
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


def stub_env(stub: SendApiStub) -> dict[str, str]:
    """The responder sends through the Graph API adapter to ``stub``."""
    return {
        "DMDESK_SEND_ADAPTER": "meta",
        "DMDESK_GRAPH_API_URL": stub.url,
        "DMDESK_PAGE_ACCESS_TOKENS": json.dumps({PAGE_ID: PAGE_TOKEN}),
        "DMDESK_SEND_BACKOFF_SECONDS": "0.1",
    }


@contextlib.asynccontextmanager
async def running_stack(
    *,
    nats_url: str,
    database_url: str,
    workdir: Path,
    stub: SendApiStub,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """The four services against ``nats_url`` and ``database_url``; logs printed on failure."""
    stack = Stack(
        nats_url=nats_url,
        database_url=database_url,
        workdir=workdir,
        extra_env=stub_env(stub) | (extra_env or {}),
    )
    async with started(stack):
        yield stack


# --- A throw-away PostgreSQL cluster (never the machine's shared one) -----------------


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL binaries directory with initdb and pg_ctl, if any."""
    found = sorted(p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists())
    return found[-1] if found else None


class PrivatePostgres:
    """initdb + pg_ctl on a free loopback port with trust auth, as the postgres user if root."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="dmdesk-faults-pg-"))
        self.data = self.root / "data"
        self.as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``dmdesk`` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/dmdesk"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        result = subprocess.run(  # noqa: PLW1510
            [*prefix, *command], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}\n{result.stderr}")

    def init(self) -> None:
        """Create the cluster, start it and create the ``dmdesk`` database."""
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )
        self.start()
        self._run(
            str(self.bin_dir / "createdb"),
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "dmdesk",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "server.log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back and disconnect every client)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        """Stop if running and delete the cluster."""
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server this test may stop and start."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL server binaries under {POSTGRES_BIN_GLOB}")
    server = PrivatePostgres(bin_dir)
    try:
        server.init()
        yield server
    finally:
        server.destroy()
