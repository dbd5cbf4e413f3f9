"""The change feed: every committed change of a conversation, as ``dm.conversation.changed``.

Sessions note the conversations they flush (an ORM event). The projection writer
reads their states in its transaction, just before the commit (:func:`read_changes`),
and hands them to :meth:`ChangeFeed.publish_changes` once committed; the agent actions
and the housekeeper call :meth:`ChangeFeed.publish` with the ids after their commits,
which reads them. The events are stored in the stream,
so ``GET /v1/events`` can resume from a ``Last-Event-ID`` (the stream sequence).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from faststream.nats import NatsBroker
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter
from sqlalchemy import bindparam, event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlmodel import col

from services.api.auth import ReadKey
from services.api.schemas import KEYED
from shared.bus import EventBus
from shared.events import Channel, ConversationChanged, Priority, SlaEvent
from shared.models import ContactRow, ConversationRow
from shared.settings import Settings
from shared.streams import (
    CONVERSATION_CHANGED,
    CONVERSATION_CHANGED_EVENT,
    SLA_AT_RISK,
    SLA_BREACHED,
)

logger = logging.getLogger("dmdesk.api.changes")
CHANGED = "dmdesk.changed_conversations"
RECONNECT_MS = 3000
"""What the feed asks clients to wait before reconnecting (the SSE ``retry:`` field)."""


@event.listens_for(Session, "after_flush")
def _note_changed(session: Session, _context: Any) -> None:
    noted: set[int] = session.info.setdefault(CHANGED, set())
    for instance in (*session.new, *session.dirty):
        if isinstance(instance, ConversationRow) and instance.id is not None:
            noted.add(instance.id)


def changed_in(session: Session | AsyncSession) -> set[int]:
    """The conversations ``session`` changed (and forgets them)."""
    noted: set[int] = session.info.pop(CHANGED, set())
    return noted


# Built once: the columns of a change, read in the session that made it (no ORM rows).
_CHANGES = (
    select(
        col(ConversationRow.id),
        col(ConversationRow.channel),
        col(ConversationRow.account_id),
        col(ContactRow.platform_id),
        col(ConversationRow.status),
        col(ConversationRow.team),
        col(ConversationRow.assignee),
        col(ConversationRow.priority),
        col(ConversationRow.category),
        col(ConversationRow.sla_due_at),
        col(ConversationRow.updated_at),
    )
    .join(ContactRow, col(ContactRow.id) == col(ConversationRow.contact_id))
    .where(col(ConversationRow.id).in_(bindparam("ids", expanding=True)))
    .order_by(col(ConversationRow.id))
)


def read_changes(session: Session, conversation_ids: Iterable[int]) -> list[ConversationChanged]:
    """The conversations' states as ``session`` sees them (the projection writer reads them
    in the transaction that changed them, just before it commits)."""
    ids = sorted(set(conversation_ids))
    if not ids:
        return []
    return [
        ConversationChanged(
            conversation_id=row.id,
            channel=Channel(row.channel),
            account_id=row.account_id,
            contact_id=row.platform_id,
            status=row.status,
            team=row.team,
            assignee=row.assignee,
            priority=Priority(row.priority),
            category=row.category,
            sla_due_at=row.sla_due_at,
            updated_at=row.updated_at,
        )
        for row in session.execute(_CHANGES, {"ids": ids})
    ]


class ChangeFeed:
    """Publishes the current state of changed conversations, once they are committed.

    It counts what it published in ``dmdesk_conversation_changes_total`` (besides the
    EventBus's ``dmdesk_published_messages_total``).
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], bus: EventBus, counted: Counter
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.published = counted.labels("published")
        self.failed = counted.labels("failed")

    async def publish(self, conversation_ids: Iterable[int]) -> None:
        """Read each conversation's state as it is now and publish it (best effort)."""
        ids = set(conversation_ids)
        if not ids:
            return
        try:
            async with self.sessions() as session:
                changes = await session.run_sync(read_changes, ids)
        except Exception:
            logger.exception("conversation changes not read", extra={"count": len(ids)})
            return
        await self.publish_changes(changes)

    async def publish_changes(self, changes: list[ConversationChanged]) -> None:
        """Publish committed states (best effort: logged and counted on failure)."""
        outcomes = await asyncio.gather(
            *(self.bus.publish(CONVERSATION_CHANGED_EVENT, change) for change in changes),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        self.published.inc(len(outcomes) - len(failures))
        if failures:
            self.failed.inc(len(failures))
            logger.error(
                "conversation changes not published",
                exc_info=failures[0],
                extra={"count": len(failures)},
            )


router = APIRouter(prefix="/v1", tags=["events"], responses=KEYED)


@router.get("/events", response_class=EventSourceResponse)
async def conversation_events(
    request: Request,
    _key: ReadKey,
    team: str | None = None,
    last_event_id: str | None = Header(
        default=None,
        alias="Last-Event-ID",
        pattern=r"^[0-9]{1,18}$",
        description="The id of the last event received (a stream sequence): resume after it.",
    ),
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events of conversation changes (``conversation.changed``) and SLA events
    (``sla.at_risk``, ``sla.breached``); reconnect with Last-Event-ID to resume.

    The first message, sent once the feed is subscribed, is a ``: subscribed``
    comment with the reconnection delay: every change committed after it arrives.
    """
    broker: NatsBroker = request.app.state.broker
    settings: Settings = request.app.state.settings
    js = broker.connection.jetstream()
    # One ordered consumer over the changes and the SLA events: one sequence to resume from.
    subjects = [CONVERSATION_CHANGED, SLA_AT_RISK, SLA_BREACHED]
    if last_event_id is not None:
        start = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=int(last_event_id) + 1,
            filter_subjects=subjects,
        )
    else:
        start = ConsumerConfig(deliver_policy=DeliverPolicy.NEW, filter_subjects=subjects)
    subscription = await js.subscribe(
        CONVERSATION_CHANGED, stream=settings.stream_name, ordered_consumer=True, config=start
    )
    try:
        yield ServerSentEvent(comment="subscribed", retry=RECONNECT_MS)
        async for message in subscription.messages:
            data: ConversationChanged | SlaEvent
            if message.subject == CONVERSATION_CHANGED:
                data, name = (
                    ConversationChanged.model_validate_json(message.data),
                    "conversation.changed",
                )
            else:
                data = SlaEvent.model_validate_json(message.data)
                name = f"sla.{data.kind.value}"
            if team is not None and data.team != team:
                continue
            yield ServerSentEvent(id=str(message.metadata.sequence.stream), event=name, data=data)
    finally:
        await subscription.unsubscribe()
