"""A read sees one snapshot of the database, however many statements it takes.

A conversation is read as its messages, then its clocks: under PostgreSQL's READ COMMITTED
a commit landing between the two showed a human response whose message was not there
(seen in an end-to-end run).
"""

from sqlalchemy import text

from shared.db import create_engine, read_engine, session_factory, transaction


async def test_a_read_transaction_does_not_see_a_commit_made_during_it(database_url: str) -> None:
    writer = create_engine(database_url)
    reader = session_factory(read_engine(database_url, writer))
    writes = session_factory(writer)
    try:
        async with transaction(writes) as session:
            await session.execute(text("CREATE TABLE probe (n integer)"))
            await session.execute(text("INSERT INTO probe VALUES (1)"))
        async with reader() as read, read.begin():
            before = (await read.execute(text("SELECT count(*) FROM probe"))).scalar_one()
            async with transaction(writes) as session:
                await session.execute(text("INSERT INTO probe VALUES (2)"))
            during = (await read.execute(text("SELECT count(*) FROM probe"))).scalar_one()
        async with reader() as read:
            after = (await read.execute(text("SELECT count(*) FROM probe"))).scalar_one()
    finally:
        await writer.dispose()
    assert (before, during, after) == (1, 1, 2)
