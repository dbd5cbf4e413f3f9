"""The api refuses, at start, a database that cannot hold what it writes."""

import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.api.app import build
from shared.db import UnfitDatabaseError, create_engine, prepare
from shared.service import service_app
from shared.settings import Settings
from tests.conftest import POSTGRES_ENV, _admin_execute

pytestmark = pytest.mark.postgres


@pytest.fixture
async def sql_ascii_url(postgres_admin_url: str | None) -> AsyncIterator[str]:
    if postgres_admin_url is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} or run a Docker engine")
    name = f"dmdesk_ascii_{uuid.uuid4().hex[:12]}"
    await _admin_execute(
        postgres_admin_url,
        f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
        " TEMPLATE template0",
    )
    yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    await _admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_the_api_refuses_a_sql_ascii_database_with_a_clear_message(
    settings_factory: Callable[..., Settings], sql_ascii_url: str
) -> None:
    app = service_app(build(settings_factory(database_url=sql_ascii_url)))
    with pytest.raises(UnfitDatabaseError, match="SQL_ASCII; dmdesk needs UTF8"):
        async with app.router.lifespan_context(app):
            pytest.fail("the api started on a SQL_ASCII database")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_api_warns_at_start_when_the_servers_autovacuum_is_off(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # This machine's server runs with autovacuum off, a testcontainers server with it on:
    # the warning follows the server's own setting.
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            setting = (await connection.execute(text("SHOW autovacuum"))).scalar_one()
        with caplog.at_level(logging.WARNING, logger="dmdesk.db"):
            await prepare(engine)
    finally:
        await engine.dispose()
    warned = [r for r in caplog.records if "autovacuum is off" in r.getMessage()]
    assert len(warned) == (1 if setting == "off" else 0)
