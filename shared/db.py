"""Async database access: engines for SQLite and PostgreSQL, sessions and migrations."""

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event, make_url, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction, SessionTransactionOrigin

logger = logging.getLogger("dmdesk.db")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Serialises migrations when several api replicas start at once on PostgreSQL.
MIGRATION_LOCK_ID = 0x646D6465736B


def as_utc(value: datetime | str) -> datetime:
    """A timestamp from an aggregate query (SQLite returns text there), aware in UTC."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return url.startswith("sqlite")


def create_engine(url: str, *, exclusive_writes: bool = True, **kwargs: Any) -> AsyncEngine:
    """An async engine; on SQLite, WAL mode and write transactions that start exclusive.

    SQLite allows one writer: ``BEGIN IMMEDIATE`` takes the write lock up front, so
    concurrent transactions queue on the busy timeout instead of deadlocking. An engine
    for reads only (``exclusive_writes=False``) begins plainly: WAL lets its readers
    run beside the writer.
    """
    if not is_sqlite(url):
        return create_async_engine(url, **_pool_options(make_url(url), kwargs))
    engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
    _set_up_sqlite(engine.sync_engine, exclusive_writes=exclusive_writes)
    return engine


# The blocking driver for each async URL's database (see create_sync_engine).
SYNC_DRIVERS = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+psycopg"}


def create_sync_engine(url: str, **kwargs: Any) -> Engine:
    """A blocking engine on the same database as the async ``url``, for a worker thread.

    The api's projections run a whole group of events in one call on a thread of
    their own (see ``services/api/writer.py``): through an async driver every
    statement would be a round trip through the event loop (aiosqlite runs each
    statement on its own thread and wakes the loop for its result). The drivers
    are the standard library's ``sqlite3`` and psycopg.
    """
    async_url = make_url(url)
    driver = SYNC_DRIVERS.get(async_url.get_backend_name(), async_url.drivername)
    sync_url = async_url.set(drivername=driver)
    if async_url.drivername == "postgresql+asyncpg":
        sync_url = sync_url.set(query=libpq_options(async_url.query))
    if not is_sqlite(url):
        return sqlalchemy.create_engine(sync_url, **_pool_options(sync_url, kwargs))
    engine = sqlalchemy.create_engine(sync_url, connect_args={"timeout": 30}, **kwargs)
    _set_up_sqlite(engine, exclusive_writes=True)
    return engine


# Options of SQLAlchemy's asyncpg dialect that mean something else, or nothing, to libpq.
ASYNCPG_ONLY = frozenset(
    {"prepared_statement_cache_size", "prepared_statement_name_func", "command_timeout"}
)


def libpq_options(query: Mapping[str, str | tuple[str, ...]]) -> dict[str, str | tuple[str, ...]]:
    """An asyncpg URL's query options as psycopg (libpq) takes them.

    asyncpg's TLS option is ``ssl`` (``disable`` ... ``verify-full``), libpq's the
    same values as ``sslmode``; asyncpg's cache and timeout options are dropped.
    Anything else (``application_name``, ``sslrootcert``...) passes through.
    """
    options = {key: value for key, value in query.items() if key not in ASYNCPG_ONLY}
    if "ssl" in options:
        options["sslmode"] = options.pop("ssl")
    return options


# Every statement planned for its own parameters and the tables as they are now. A cached
# generic plan is made once, often while the tables are still small (a new database, or
# one whose statistics autovacuum has not refreshed yet), and then kept: an index chosen
# for the channel alone scanned every message of the channel for each outbound result,
# and halved a PostgreSQL stack's throughput (docs/benchmarks.md). dmdesk's statements
# are short key lookups: planning them each time costs far less than one such plan.
PLAN_CACHE_MODE = "force_custom_plan"


def _pool_options(url: sqlalchemy.URL, kwargs: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "pool_size": 10,
        "max_overflow": 10,
        "pool_pre_ping": True,
        "connect_args": _postgres_settings(url),
    }
    if url.get_driver_name() == "psycopg":
        # psycopg's own cursors take `%(name)s` placeholders and parse every statement
        # into PostgreSQL's `$n` (caching only statements under 4 KB with at most 50
        # parameters), so each of the writer's multi-row statements was parsed again on
        # every call: an eighth of the api's CPU. Its RawCursor takes `$n` as PostgreSQL
        # does, and SQLAlchemy renders them (`numeric_dollar`, as for asyncpg).
        options["paramstyle"] = "numeric_dollar"
        options["connect_args"] |= {"cursor_factory": psycopg.RawCursor}
    return options | kwargs


def _postgres_settings(url: sqlalchemy.URL) -> dict[str, Any]:
    """Connection arguments that set dmdesk's session settings (``PLAN_CACHE_MODE``) as
    the connection starts, without a statement of their own, for asyncpg or libpq."""
    if url.get_driver_name() == "asyncpg":
        return {"server_settings": {"plan_cache_mode": PLAN_CACHE_MODE}}
    given = url.query.get("options", "")
    options = " ".join(given) if isinstance(given, tuple) else given
    return {"options": f"{options} -c plan_cache_mode={PLAN_CACHE_MODE}".strip()}


def _set_up_sqlite(engine: Engine, *, exclusive_writes: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if exclusive_writes else "BEGIN")


TRANSACTION_CACHES = "dmdesk.transaction_caches"


def transaction_cache(session: Session, name: str) -> dict[Any, Any]:
    """A dict named ``name`` that lives until ``session``'s transaction (or savepoint) ends.

    For rows a transaction holds locked, or changes only itself, and looks up again
    and again: after a commit other writers may change them, and a rolled-back
    savepoint takes the rows it added along.
    """
    caches: dict[str, dict[Any, Any]] = session.info.setdefault(TRANSACTION_CACHES, {})
    return caches.setdefault(name, {})


@event.listens_for(Session, "after_transaction_end")
def _forget_transaction_caches(session: Session, transaction: SessionTransaction) -> None:
    # A flush runs in a subtransaction of its own: its end ends neither the transaction
    # nor a savepoint (the caches were dropped at every flush).
    if transaction.origin is not SessionTransactionOrigin.SUBTRANSACTION:
        session.info.pop(TRANSACTION_CACHES, None)


def read_engine(url: str, writer: AsyncEngine) -> AsyncEngine:
    """The engine for reads, each transaction on one snapshot of the database.

    On SQLite one that does not take the write lock (a WAL read transaction keeps its
    snapshot). On PostgreSQL ``writer``'s pool in REPEATABLE READ: under READ COMMITTED each
    statement sees the latest commit, so a conversation read as messages, then clocks,
    could show a response whose message it had not seen.
    """
    if is_sqlite(url):
        return create_engine(url, exclusive_writes=False)
    return writer.execution_options(isolation_level="REPEATABLE READ")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in one transaction, committed on success and rolled back on error."""
    async with sessions() as session, session.begin():
        yield session


def alembic_config() -> Config:
    """Alembic's config pointing at the migrations shipped in the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (safe to run from several replicas)."""
    database = engine.url.database
    if is_sqlite(str(engine.url)) and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    async with engine.connect() as connection:
        await connection.run_sync(in_migration_transaction, _upgrade)


def in_migration_transaction(connection: Connection, step: Callable[[Connection], None]) -> None:
    """Run ``step`` (an Alembic command on ``connection``) in one transaction; on SQLite,
    with foreign keys off while it runs.

    A migration in batch mode rebuilds a SQLite table (copy, drop, rename): dropping a
    table that rows of others point at fails while foreign keys are on, and SQLite only
    turns them off outside a transaction. They are checked before the commit instead.
    """
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        with connection.begin():
            step(connection)
            if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
                raise RuntimeError(f"a migration broke {len(broken)} foreign keys: {broken[:5]}")
    finally:
        if sqlite:
            _pragma(connection, "PRAGMA foreign_keys=ON")


def _pragma(connection: Connection, statement: str) -> None:
    """Run ``statement`` on the driver's connection, outside any transaction."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


class UnfitDatabaseError(RuntimeError):
    """The database cannot hold what dmdesk writes; the message says what to do."""


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def prepare(engine: AsyncEngine) -> None:
    """Check the database can hold what dmdesk writes, migrate it, and check it is current.

    PostgreSQL must store text as UTF8: in SQL_ASCII a driver hands back bytes, and every
    projection would fail. Raises :class:`UnfitDatabaseError` with what to do.
    """
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            encoding = str((await connection.execute(text("SHOW server_encoding"))).scalar_one())
            autovacuum = str((await connection.execute(text("SHOW autovacuum"))).scalar_one())
        if autovacuum.lower() != "on":
            # dmdesk's lookups by key do not depend on statistics (docs/architecture.md),
            # but the queue's pages and the gauges' aggregates are planned with them.
            logger.warning(
                "PostgreSQL's autovacuum is off: table statistics are never refreshed and"
                " the plans of the queue's and the gauges' queries degrade as the tables"
                " grow; turn autovacuum on, or run ANALYZE regularly",
                extra={"database": engine.url.database},
            )
        if encoding.upper() not in {"UTF8", "UTF-8"}:
            raise UnfitDatabaseError(
                f"the database {engine.url.database} has the encoding {encoding}; dmdesk"
                " needs UTF8 (CREATE DATABASE ... ENCODING UTF8 TEMPLATE template0)"
            )
    await migrate(engine)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_revision)
    if current != head:
        raise UnfitDatabaseError(
            f"the database schema is at migration {current}, not {head}: is a newer dmdesk"
            " writing to it? Run one version of the api per database."
        )


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
