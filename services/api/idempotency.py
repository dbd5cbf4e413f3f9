"""Idempotency-Key: a retried request gets the first answer again instead of acting twice.

Keys are per API key. The first answer is stored in the same transaction as the
action, so a key is either unused or bound to one request and its answer; a key
reused for a different request is refused with 409.
"""

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

from fastapi import Header, HTTPException, Request, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.api.auth import Principal
from services.api.deps import committing
from shared.models import IdempotencyRow

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Makes a retried request harmless: the first answer is returned again.",
    ),
]
ModelT = TypeVar("ModelT", bound=BaseModel)


async def idempotent(
    session: AsyncSession,
    principal: Principal,
    key: str | None,
    request: Request,
    body: BaseModel | None,
    model: type[ModelT],
    run: Callable[[], Awaitable[ModelT]],
) -> ModelT:
    """``run()``'s answer, or the answer stored for ``key`` when this request came before."""
    if key is None:
        return await run()
    fingerprint = hashlib.sha256(
        json.dumps(
            [request.method, request.url.path, body.model_dump(mode="json") if body else None]
        ).encode()
    ).hexdigest()
    stored = (
        await session.execute(
            select(IdempotencyRow).where(
                col(IdempotencyRow.api_key_id) == principal.key_id, col(IdempotencyRow.key) == key
            )
        )
    ).scalar_one_or_none()
    if stored is not None:
        if stored.request_hash != fingerprint:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail="this Idempotency-Key was used for a different request",
            )
        return model.model_validate(stored.body)
    result = await run()
    session.add(
        IdempotencyRow(
            api_key_id=principal.key_id,
            key=key,
            request_hash=fingerprint,
            status_code=200,
            body=result.model_dump(mode="json"),
        )
    )
    return result


@asynccontextmanager
async def committing_once(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """:func:`committing`, where a concurrent request with the same key is refused with 409."""
    try:
        async with committing(session):
            yield session
    except IntegrityError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="a request with this Idempotency-Key is in progress"
        ) from exc
