"""FastAPI dependencies, so route signatures read like sentences."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.read_sessions
    async with sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]
# For endpoints that only read: on SQLite they then never wait for the writer.
ReadSessionDep = Annotated[AsyncSession, Depends(_read_session)]
# Ids are PostgreSQL integers: anything outside their range names no row.
RowId = Annotated[int, Path(ge=1, le=2_147_483_647, description="A row id.")]


@asynccontextmanager
async def committing(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """Commit what the block did, or roll it back on an error."""
    try:
        yield session
    except BaseException:
        await session.rollback()
        raise
    await session.commit()
