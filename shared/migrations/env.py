"""Alembic environment: migrations run on a connection handed over by shared.db.migrate."""

from alembic import context
from sqlalchemy import Connection

from shared.models import metadata


def run_migrations(connection: Connection) -> None:
    """Run the migrations on ``connection`` inside the caller's transaction."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()


def run_offline() -> None:
    """Emit SQL for ``alembic upgrade --sql`` without a database."""
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if context.is_offline_mode():
    run_offline()
elif connection is None:
    raise RuntimeError("run migrations through shared.db.migrate(engine)")
else:
    run_migrations(connection)
