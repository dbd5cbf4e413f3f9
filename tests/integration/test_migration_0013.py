"""Migration 0013 rebuilds the keys of tables other rows point at (on SQLite, the tables
themselves): the rows, the references between them and the keys' uniqueness survive."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import Connection, func, select, text

from services.api import projector
from shared.db import (
    alembic_config,
    create_engine,
    in_migration_transaction,
    migrate,
    session_factory,
    transaction,
)
from shared.events import Channel, Contact, InboundMessage
from shared.models import ContactRow, ConversationRow, MessageRow

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def downgrade_to(revision: str) -> Callable[[Connection], None]:
    """Down to ``revision``, in one transaction as ``shared.db.migrate`` upgrades."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    return run


def inbound(index: int, contact: str) -> InboundMessage:
    return InboundMessage(
        mid=f"m-{index}",
        channel=Channel.MESSENGER,
        account_id="page-1",
        contact=Contact(platform_id=contact),
        text="hello",
        platform_ts=T0 + timedelta(seconds=index),
    )


async def test_the_rows_and_their_keys_survive_migration_0013(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        # Rows projected by today's code (which reads and writes every column the latest schema
        # has), then the schema taken back to 0012 with them in it.
        await migrate(engine)
        for index in range(6):
            async with transaction(sessions) as session:
                dm = inbound(index, f"psid-{index % 2}")
                await session.run_sync(projector.project_inbound, dm)
        async with engine.connect() as connection:
            await connection.run_sync(in_migration_transaction, downgrade_to("0012"))

        await migrate(engine)

        async with sessions() as session:
            count = func.count()
            assert (await session.execute(select(count).select_from(ContactRow))).scalar() == 2
            assert (await session.execute(select(count).select_from(ConversationRow))).scalar() == 2
            rows = (await session.execute(select(MessageRow.mid, MessageRow.conversation_id))).all()
            conversations = set((await session.execute(select(ConversationRow.id))).scalars())
        assert sorted(mid for mid, _ in rows) == [f"m-{index}" for index in range(6)]
        assert {conversation for _, conversation in rows} == conversations
        if engine.dialect.name == "sqlite":
            async with engine.connect() as connection:
                broken = await connection.execute(text("PRAGMA foreign_key_check"))
                assert broken.all() == []
                # Turned off for the migration only: on again for the connection's next user.
                assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        # The keys still hold: the same DM again is not stored twice.
        async with transaction(sessions) as session:
            assert await session.run_sync(projector.project_inbound, inbound(3, "psid-1")) is False
    finally:
        await engine.dispose()
