"""One DMDESK_DATABASE_URL opens the api's async engine (asyncpg) and its writer (psycopg)."""

import pytest
from sqlalchemy import make_url, text

from shared.db import create_engine, create_sync_engine, libpq_options

pytestmark = pytest.mark.postgres


def test_asyncpg_options_become_libpq_options() -> None:
    query = {
        "ssl": "verify-full",
        "sslrootcert": "/etc/ssl/ca.pem",
        "prepared_statement_cache_size": "0",
        "application_name": "dmdesk",
    }
    assert libpq_options(query) == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ssl/ca.pem",
        "application_name": "dmdesk",
    }


def with_query(url: str, query: str) -> str:
    return f"{make_url(url).render_as_string(hide_password=False)}?{query}"


@pytest.fixture
def postgres_url(postgres_admin_url: str | None) -> str:
    if postgres_admin_url is None:
        pytest.skip("no PostgreSQL: set DMDESK_TEST_POSTGRES_URL or run a Docker engine")
    return postgres_admin_url


async def test_both_drivers_take_the_tls_and_cache_options_of_one_url(postgres_url: str) -> None:
    url = with_query(postgres_url, "ssl=disable&prepared_statement_cache_size=0")
    engine, writer = create_engine(url), create_sync_engine(url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("select 1"))).scalar_one() == 1
        with writer.connect() as connection:
            assert connection.execute(text("select 1")).scalar_one() == 1
    finally:
        await engine.dispose()
        writer.dispose()


async def test_the_writer_insists_on_tls_when_the_url_does(postgres_url: str) -> None:
    # The test servers (this machine's, testcontainers') do not offer TLS: a URL that
    # requires it must fail on the writer's driver for that reason, not for a bad option.
    writer = create_sync_engine(with_query(postgres_url, "ssl=require"))
    try:
        with pytest.raises(Exception, match="SSL") as refused:
            writer.connect().close()
        assert "invalid connection option" not in str(refused.value)
    finally:
        writer.dispose()


async def test_both_drivers_plan_each_statement_for_its_own_parameters(postgres_url: str) -> None:
    # A generic plan cached while the tables were small scanned a whole channel per
    # lookup: every connection plans each statement anew. Options a URL gives libpq
    # (here a statement timeout; asyncpg takes no such option) still apply beside it.
    engine = create_engine(postgres_url)
    writer = create_sync_engine(with_query(postgres_url, "options=-c%20statement_timeout%3D4321"))
    try:
        async with engine.connect() as connection:
            mode = await connection.execute(text("show plan_cache_mode"))
            assert mode.scalar_one() == "force_custom_plan"
        with writer.connect() as connection:
            assert connection.execute(text("show plan_cache_mode")).scalar_one() == (
                "force_custom_plan"
            )
            assert connection.execute(text("show statement_timeout")).scalar_one() == "4321ms"
    finally:
        await engine.dispose()
        writer.dispose()
