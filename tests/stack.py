"""The four services as real processes, for end-to-end tests."""

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nats.js import JetStreamContext

from dmdesk.natsserver import free_port
from services.api.auth import create_key
from shared.db import create_engine, session_factory, transaction
from shared.models import Scope
from shared.rules import ROUND_THE_CLOCK, load_rule_set_document, with_calendar_hours

SERVICES = ("api", "ingest", "classifier", "responder")
META_APP_SECRET = "test-app-secret"
META_VERIFY_TOKEN = "test-verify-token"
READY_TIMEOUT_SECONDS = 60.0
# free_port() only says a port was free when asked: a parallel test may take it before
# the service binds it. A service that lost that race is started again on another port.
PORT_ATTEMPTS = 3
LOST_PORT = b"address already in use"
T = TypeVar("T")


def rules_with_calendars(hours: dict[str, list[str]]) -> dict[str, Any]:
    """The default rule set with every calendar set to ``hours`` and no holidays."""
    return with_calendar_hours(load_rule_set_document(), hours)


def docker_available(image: str) -> bool:
    """Whether a Docker engine answers and has ``image`` or can pull it (testcontainers).

    An engine with no registry in reach (this project's CI starts one for the compose
    test) is no use to testcontainers unless the image is already there.
    """
    try:
        import docker

        client = docker.from_env()
        client.ping()
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            client.images.pull(image)
    except Exception:
        return False
    return True


async def stored(
    js: JetStreamContext, subject: str, stream: str = "DMDESK", count: int = 200
) -> list[bytes]:
    """The payloads stored on ``subject`` (up to ``count``), read by a throw-away consumer."""
    subscription = await js.pull_subscribe(subject, stream=stream)
    try:
        return [message.data for message in await subscription.fetch(count, timeout=0.5)]
    except TimeoutError:  # nats-py raises its own or asyncio's: both are TimeoutError
        return []
    finally:
        await subscription.unsubscribe()


async def bucket_keys(js: JetStreamContext, bucket: str) -> set[str]:
    """The keys a KV bucket holds a value or marker for, from its stream's subjects.

    Read from the stream's state rather than ``KeyValue.keys()``, whose watcher can signal
    "no more" before the entry it already received (nats-py checks the consumer's pending
    count and its delivered count at different moments), answering ``NoKeysError``.
    """
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return {subject.removeprefix(prefix) for subject in info.state.subjects or {}}


class ServiceProcess:
    """One service, ``python -m services.<name>``, logging to a file, on ``port``."""

    def __init__(self, name: str, port: int, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.port = port
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._log_start = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self._log_start = log.tell()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"services.{self.name}",
                env=self.env | {f"DMDESK_{self.name.upper()}_PORT": str(self.port)},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()

    async def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        attempts = 1
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    if attempts < PORT_ATTEMPTS and self._lost_its_port():
                        attempts += 1
                        self.port = free_port()
                        await self.start()
                        continue
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    ready = (await client.get(f"{self.url}/readyz")).status_code == 200
                    # Another test's service may have taken the port meanwhile and be the one
                    # answering: ready only once the port is this process's.
                    if (
                        ready
                        and self.process is not None
                        and listens_on(self.process.pid, self.port)
                    ):
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s")

    def _lost_its_port(self) -> bool:
        """Whether the last start failed because another process had taken its port."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return LOST_PORT in log.read()

    async def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` (Linux's /proc;
    True where there is no /proc to ask)."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return True
    listening = set()
    for table in tables:
        with contextlib.suppress(OSError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    listening.add(f"socket:[{inode}]")
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if str(fd.readlink()) in listening:
                    return True
    return False


async def issue_api_key(database_url: str, scope: Scope) -> str:
    """A new API key in the stack's database (after the api has migrated it)."""
    engine = create_engine(database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            return (await create_key(session, "tests", scope)).secret
    finally:
        await engine.dispose()


class Stack:
    """ingest, classifier, responder and api against one NATS server and one database."""

    def __init__(
        self,
        *,
        nats_url: str,
        database_url: str,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.database_url = database_url
        ports = {name: free_port() for name in SERVICES}
        # The default rules answer "we are away" outside office hours; tests must not
        # depend on the hour they run at, so the stack's team is always at work.
        rules_path = workdir / "rules.json"
        rules_path.write_text(json.dumps(rules_with_calendars(ROUND_THE_CLOCK)))
        env = {
            **os.environ,
            "DMDESK_NATS_URL": nats_url,
            "DMDESK_DATABASE_URL": database_url,
            "DMDESK_DATA_DIR": str(workdir / "data"),
            "DMDESK_RULES_PATH": str(rules_path),
            "DMDESK_META_APP_SECRET": META_APP_SECRET,
            "DMDESK_META_VERIFY_TOKEN": META_VERIFY_TOKEN,
            # Tests post to the generic endpoint as `dmdesk up` lets a developer: open, on
            # loopback, and as fast as they like.
            "DMDESK_INGEST_OPEN": "true",
            "DMDESK_INGEST_RATE_LIMIT": "1000000/second",
            "DMDESK_MAX_DELIVERIES": "3",
            "DMDESK_ACK_WAIT_SECONDS": "5",
            "DMDESK_GRACEFUL_TIMEOUT_SECONDS": "10",
            **(extra_env or {}),
        }
        self.services = {
            name: ServiceProcess(name, port, env, workdir / f"{name}.log")
            for name, port in ports.items()
        }
        self.client = httpx.AsyncClient(timeout=10)
        # Ingest is open (see env): its keys are not the API's, so it gets none.
        self.ingest_client = httpx.AsyncClient(timeout=10)

    @property
    def api_url(self) -> str:
        return self.services["api"].url

    @property
    def ingest_url(self) -> str:
        return self.services["ingest"].url

    async def start(self) -> None:
        for service in self.services.values():
            await service.start()
        await asyncio.gather(*(service.wait_ready() for service in self.services.values()))
        self.client.headers["X-API-Key"] = await issue_api_key(self.database_url, Scope.ADMIN)

    async def stop(self) -> None:
        await asyncio.gather(*(service.terminate() for service in self.services.values()))
        await self.client.aclose()
        await self.ingest_client.aclose()

    async def restart(self, name: str) -> None:
        service = self.services[name]
        await service.start()
        await service.wait_ready()

    def logs(self) -> str:
        parts = []
        for name, service in self.services.items():
            text = service.log_path.read_text(errors="replace") if service.log_path.exists() else ""
            parts.append(f"----- {name} -----\n{text[-20_000:]}")
        return "\n".join(parts)

    async def post_dm(self, message: dict[str, Any] | list[dict[str, Any]]) -> httpx.Response:
        return await self.ingest_client.post(f"{self.ingest_url}/v1/messages", json=message)

    async def queue(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get(
            f"{self.api_url}/v1/queue", params={"limit": 200, **params}
        )
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def conversation(self, conversation_id: int) -> dict[str, Any]:
        response = await self.client.get(f"{self.api_url}/v1/conversations/{conversation_id}")
        response.raise_for_status()
        detail: dict[str, Any] = response.json()
        return detail

    async def full_queue(self) -> list[dict[str, Any]]:
        """Every queued conversation, following cursors."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = (await self.client.get(f"{self.api_url}/v1/queue", params=params)).json()
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Call ``probe`` until ``done(result)``; return the last result (the caller asserts).

    The timeout only bounds a wait that has already failed: it is generous so a loaded
    machine does not turn a slow pass into a failure.
    """
    deadline = time.monotonic() + timeout
    result = await probe()
    while not done(result) and time.monotonic() < deadline:
        await asyncio.sleep(interval)
        result = await probe()
    return result


@contextlib.asynccontextmanager
async def started(
    stack: Stack, request: pytest.FixtureRequest | None = None
) -> AsyncIterator[Stack]:
    """Start ``stack`` and stop it after the block; print its logs if the test failed.

    A fixture passes its ``request``: the test's failure does not pass through the
    fixture, so its report says (no report: the test never ran).
    """
    failed = True
    try:
        await stack.start()
        yield stack
        failed = False
    finally:
        await stack.stop()
        if request is not None:
            report = getattr(request.node, "report_call", None)
            failed = failed or report is None or report.failed
        if failed:
            print(stack.logs())
