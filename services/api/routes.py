"""The queue and conversations, as other internal systems see them."""

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import Field, TypeAdapter
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.api import lifecycle
from services.api.auth import ReadKey
from services.api.deps import ReadSessionDep, RowId
from services.api.schemas import (
    KEYED,
    ActivityOut,
    BotHandoffOut,
    ContactOut,
    ConversationDetail,
    MessageOut,
    NoteOut,
    Problem,
    QueueItem,
    QueuePage,
    SlaClockOut,
    SlaState,
    UtcTime,
)
from shared.events import Category, Channel, Priority, utcnow
from shared.models import (
    ActivityRow,
    ContactRow,
    ConversationRow,
    MessageRow,
    NoteRow,
    SlaClockRow,
    unresolved,
)
from shared.states import ClockState, ConversationStatus

router = APIRouter(prefix="/v1", tags=["queue"], responses=KEYED)

UNASSIGNED = "none"


def queue_order() -> tuple[Any, ...]:
    """Priority, then the nearest deadline (none last), then age: the queue's order."""
    return (
        col(ConversationRow.priority_rank),
        col(ConversationRow.queue_due_at),
        col(ConversationRow.id),
    )


RowIdValue = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]
QueueCursor = TypeAdapter(tuple[RowIdValue, UtcTime, RowIdValue])
"""A queue position: priority rank, queue due time, conversation id (JSON, base64url)."""

CURSOR_MAX_LENGTH = 512


def _encode_cursor(row: ConversationRow) -> str:
    assert row.id is not None  # a row read from the database
    raw = QueueCursor.dump_json((row.priority_rank, row.queue_due_at, row.id))
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[int, datetime, int]:
    try:
        return QueueCursor.validate_json(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error) as exc:  # pydantic's ValidationError is a ValueError
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="invalid cursor") from exc


def queue_item(
    conversation: ConversationRow, contact: ContactRow, clocks: list[SlaClockRow], now: datetime
) -> QueueItem:
    """A conversation as the queue shows it, with its live SLA state among ``clocks``."""
    live = lifecycle.live_state(clocks, now)  # type: ignore[arg-type]  # SlaClockRow is a Clock
    clock = live.clock
    return QueueItem(
        **conversation.model_dump(exclude={"contact_id"}),
        contact=ContactOut.model_validate(contact, from_attributes=True),
        sla_state=SlaState(
            state=live.state,
            metric=clock.metric if clock else None,
            due_at=clock.due_at if clock else None,
            at_risk_at=clock.at_risk_at if clock else None,
            paused=clock is not None and clock.state == ClockState.PAUSED.value,
        ),
    )


async def _active_clocks(session: AsyncSession, ids: list[int]) -> dict[int, list[SlaClockRow]]:
    """The active clocks of the conversations ``ids`` (one query for a page)."""
    found: dict[int, list[SlaClockRow]] = {i: [] for i in ids}
    if ids:
        rows = await session.execute(
            select(SlaClockRow).where(
                col(SlaClockRow.conversation_id).in_(ids),
                col(SlaClockRow.state).in_(lifecycle.ACTIVE),
            )
        )
        for clock in rows.scalars():
            found[clock.conversation_id].append(clock)
    return found


@router.get("/queue", responses={400: {"model": Problem}})
async def get_queue(
    session: ReadSessionDep,
    _key: ReadKey,
    team: str | None = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    category: Annotated[list[Category] | None, Query()] = None,
    channel: Annotated[list[Channel] | None, Query()] = None,
    status_: Annotated[
        list[ConversationStatus] | None,
        Query(alias="status", description="Default: every status but resolved."),
    ] = None,
    assignee: Annotated[
        str | None, Query(description=f"An agent, or '{UNASSIGNED}' for unassigned.")
    ] = None,
    is_request: Annotated[
        bool | None, Query(description="Message requests only (or none).")
    ] = None,
    language: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_LENGTH)] = None,
) -> QueuePage:
    """Conversations by priority, then by the nearest SLA deadline; filtered; paged."""
    query = (
        select(ConversationRow, ContactRow)
        .join(ContactRow, col(ContactRow.id) == col(ConversationRow.contact_id))
        .order_by(*queue_order())
        .limit(limit + 1)
    )
    if status_:
        query = query.where(col(ConversationRow.status).in_([s.value for s in status_]))
    else:
        query = query.where(unresolved())
    if team is not None:
        query = query.where(col(ConversationRow.team) == team)
    if priority:
        query = query.where(col(ConversationRow.priority_rank).in_([p.rank for p in priority]))
    if category:
        query = query.where(col(ConversationRow.category).in_([c.value for c in category]))
    if channel:
        query = query.where(col(ConversationRow.channel).in_([c.value for c in channel]))
    if assignee == UNASSIGNED:
        query = query.where(col(ConversationRow.assignee).is_(None))
    elif assignee is not None:
        query = query.where(col(ConversationRow.assignee) == assignee)
    if is_request is not None:
        query = query.where(col(ConversationRow.is_request) == is_request)
    if language is not None:
        query = query.where(col(ConversationRow.language) == language)
    if cursor is not None:
        query = query.where(tuple_(*queue_order()) > tuple_(*_decode_cursor(cursor)))
    rows = (await session.execute(query)).all()
    page = rows[:limit]
    clocks = await _active_clocks(session, [c.id for c, _ in page if c.id is not None])
    now = utcnow()
    items = [
        queue_item(conversation, contact, clocks.get(conversation.id or 0, []), now)
        for conversation, contact in page
    ]
    next_cursor = _encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return QueuePage(items=items, next_cursor=next_cursor)


async def conversation_detail(session: AsyncSession, conversation_id: int) -> ConversationDetail:
    """One conversation with its messages, clocks and notes (404 when there is none)."""
    found = (
        await session.execute(
            select(ConversationRow, ContactRow)
            .join(ContactRow, col(ContactRow.id) == col(ConversationRow.contact_id))
            .where(col(ConversationRow.id) == conversation_id)
        )
    ).first()
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such conversation")
    conversation, contact = found
    messages = await session.execute(
        select(MessageRow)
        .where(col(MessageRow.conversation_id) == conversation_id)
        .order_by(col(MessageRow.platform_ts), col(MessageRow.id))
    )
    clocks = list(
        (
            await session.execute(
                select(SlaClockRow)
                .where(col(SlaClockRow.conversation_id) == conversation_id)
                .order_by(col(SlaClockRow.id))
            )
        ).scalars()
    )
    notes = await session.execute(
        select(NoteRow)
        .where(col(NoteRow.conversation_id) == conversation_id)
        .order_by(col(NoteRow.id))
    )
    return ConversationDetail(
        **queue_item(conversation, contact, clocks, utcnow()).model_dump(),
        first_response_at=conversation.first_response_at,
        bot_opted_out=conversation.bot_opted_out,
        bot_handoff=None
        if conversation.handoff_reason is None
        else BotHandoffOut(
            reason=conversation.handoff_reason,
            rule_id=conversation.handoff_rule,
            signals=conversation.handoff_signals,
            faq_entry=conversation.faq_entry,
            faq_score=conversation.faq_score,
            faq_settles=conversation.faq_settles,
        ),
        messages=[MessageOut.model_validate(m, from_attributes=True) for m in messages.scalars()],
        sla=[SlaClockOut.model_validate(c, from_attributes=True) for c in clocks],
        notes=[NoteOut.model_validate(n, from_attributes=True) for n in notes.scalars()],
    )


@router.get("/conversations/{conversation_id}/activity", responses={404: {"model": Problem}})
async def get_activity(
    conversation_id: RowId, session: ReadSessionDep, _key: ReadKey
) -> list[ActivityOut]:
    """Every status change, assignment, transfer, SLA event and bot decision, oldest first."""
    if await session.get(ConversationRow, conversation_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such conversation")
    rows = await session.execute(
        select(ActivityRow)
        .where(col(ActivityRow.conversation_id) == conversation_id)
        .order_by(col(ActivityRow.at), col(ActivityRow.id))
    )
    return [ActivityOut.model_validate(row, from_attributes=True) for row in rows.scalars()]


@router.get("/conversations/{conversation_id}", responses={404: {"model": Problem}})
async def get_conversation(
    conversation_id: RowId, session: ReadSessionDep, _key: ReadKey
) -> ConversationDetail:
    """One conversation with its messages, SLA clocks and notes."""
    return await conversation_detail(session, conversation_id)
