"""Time-based rules: wake snoozed conversations, auto-assign, reassign, nudge and auto-close.

Runs in every api replica; rows are claimed with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (SQLite has one writer), so replicas never act on the same one twice.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.api import activity, assignment, clocks, containment
from services.api.changes import changed_in
from services.api.metrics import ApiMetrics
from services.api.routes import queue_order
from shared.db import transaction
from shared.events import Author, Channel, ConversationRef, OutboundRequest, utcnow
from shared.models import AgentRow, ContactRow, ConversationRow, SlaClockRow, TeamRow
from shared.settings import Settings
from shared.states import ClockState, ConversationStatus

logger = logging.getLogger("dmdesk.api.housekeeping")

SendOutbound = Callable[[OutboundRequest], Awaitable[None]]
Announce = Callable[[set[int]], Awaitable[None]]
BATCH = 200
OPEN = ConversationStatus.OPEN.value
# Sorts before any assignment: an agent never assigned is next in the round robin.
NEVER = datetime.min.replace(tzinfo=UTC)


class Housekeeper:
    """Applies the time-based rules every few seconds, or at once when poked."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        send: SendOutbound,
        metrics: ApiMetrics,
        announce: Announce | None = None,
        interval_seconds: float = 5.0,
        min_gap_seconds: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.send = send
        self.metrics = metrics
        self.announce = announce
        self.interval_seconds = interval_seconds
        self.min_gap_seconds = min_gap_seconds
        self._poke = asyncio.Event()

    def poke(self) -> None:
        """Something changed (a conversation entered a queue, an agent came online)."""
        self._poke.set()

    async def run(self) -> None:
        """Apply the rules until cancelled.

        Pokes coalesce: at most one tick per ``min_gap_seconds``. The projection writer
        pokes after every committed group, and each tick is four write transactions
        (on SQLite, four turns of the write lock taken from the writer).
        """
        loop = asyncio.get_running_loop()
        while True:
            self._poke.clear()
            started = loop.time()
            try:
                await self.tick(utcnow())
            except Exception:
                logger.exception("housekeeping failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval_seconds)
            rest = started + self.min_gap_seconds - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)

    async def tick(self, now: datetime) -> None:
        """Apply every rule once."""
        for rule in (
            self.wake_snoozed,
            self.reassign_stale,
            self.auto_assign,
            self.nudge_and_close,
            self.contain_idle,
        ):
            async with transaction(self.sessions) as session:
                await rule(session, now)
            if self.announce is not None:
                await self.announce(changed_in(session))

    async def wake_snoozed(self, session: AsyncSession, now: datetime) -> None:
        """Snoozed conversations whose time came are open again, their clocks running."""
        due = await session.execute(
            select(ConversationRow)
            .where(
                col(ConversationRow.status) == ConversationStatus.SNOOZED.value,
                col(ConversationRow.snoozed_until) <= now,
            )
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        for conversation in due.scalars():
            conversation.updated_at = now
            await session.run_sync(
                clocks.apply,
                conversation,
                lambda lifecycle: lifecycle.move(OPEN, now),
                "housekeeper",
            )

    async def reassign_stale(self, session: AsyncSession, now: datetime) -> None:
        """An assignee who left a customer waiting too long loses the conversation."""
        minutes = self.settings.reassign_after_minutes
        if minutes <= 0:
            return
        limit = now - timedelta(minutes=minutes)
        waiting = (
            select(col(SlaClockRow.conversation_id))
            .where(
                col(SlaClockRow.state) == ClockState.RUNNING.value,
                col(SlaClockRow.metric).in_(clocks.RESPONSE_METRICS),
                col(SlaClockRow.started_at) <= limit,
            )
            .scalar_subquery()
        )
        stale = await session.execute(
            select(ConversationRow)
            .where(
                col(ConversationRow.status) == OPEN,
                col(ConversationRow.assignee).is_not(None),
                col(ConversationRow.assigned_at) <= limit,
                col(ConversationRow.id).in_(waiting),
            )
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        for conversation in stale.scalars():
            logger.info(
                "conversation reassigned",
                extra={"conversation_id": conversation.id, "after_minutes": minutes},
            )
            assert conversation.id is not None
            activity.record(
                session,
                conversation.id,
                "assigned",
                "housekeeper",
                now,
                assignee=None,
                rule="reassign_after_minutes",
            )
            conversation.assignee = conversation.assigned_at = None
            conversation.updated_at = now

    async def auto_assign(self, session: AsyncSession, now: datetime) -> None:
        """Round robin: the online agent assigned least recently, within capacity."""
        teams = await session.execute(select(col(TeamRow.name)).where(col(TeamRow.auto_assign)))
        online = list(
            (await session.execute(select(AgentRow).where(col(AgentRow.online)))).scalars()
        )
        for team in teams.scalars():
            agents = sorted(
                (agent for agent in online if team in agent.teams),
                key=lambda agent: (agent.last_assigned_at or NEVER, agent.id or 0),
            )
            if not agents:
                continue
            loads = await assignment.loads(session, [a.name for a in agents])
            spare = sum(max(0, a.capacity - loads.get(a.name, 0)) for a in agents)
            if spare == 0:
                continue
            queue = await session.execute(
                select(ConversationRow)
                .where(
                    col(ConversationRow.team) == team,
                    col(ConversationRow.status) == OPEN,
                    col(ConversationRow.assignee).is_(None),
                )
                .order_by(*queue_order())
                .limit(spare)
                .with_for_update(skip_locked=True)
            )
            for conversation in queue.scalars():
                agent = next(
                    (a for a in agents if not assignment.refusal(a, loads.get(a.name, 0), team)),
                    None,
                )
                if agent is None:
                    break
                conversation.assignee, conversation.assigned_at = agent.name, now
                assert conversation.id is not None
                activity.record(
                    session,
                    conversation.id,
                    "assigned",
                    "round_robin",
                    now,
                    assignee=agent.name,
                    rule="round_robin",
                )
                conversation.updated_at = now
                loads[agent.name] = loads.get(agent.name, 0) + 1
                agent.last_assigned_at = now
                agents.remove(agent)
                agents.append(agent)

    async def nudge_and_close(self, session: AsyncSession, now: datetime) -> None:
        """Nudge, then resolve, conversations whose customer stopped answering."""
        close_after = self.settings.auto_close_after_hours
        if close_after <= 0:
            return
        nudge_after = self.settings.nudge_after_hours
        # Without a nudge (or one not before closing), only conversations due to close qualify.
        earliest = nudge_after if 0 < nudge_after < close_after else close_after
        silent = await session.execute(
            select(ConversationRow, ContactRow)
            .join(ContactRow, col(ContactRow.id) == col(ConversationRow.contact_id))
            .where(
                col(ConversationRow.status).in_(
                    [ConversationStatus.WAITING.value, ConversationStatus.PENDING.value]
                ),
                col(ConversationRow.last_message_at) <= now - timedelta(hours=earliest),
            )
            .limit(BATCH)
            .with_for_update(skip_locked=True, of=ConversationRow)
        )
        for conversation, contact in silent.all():
            assert conversation.last_message_at is not None
            silence = now - conversation.last_message_at
            if silence >= timedelta(hours=close_after):
                stopped = await session.run_sync(
                    clocks.apply,
                    conversation,
                    lambda lifecycle: lifecycle.resolve(now, "bot"),
                    "housekeeper",
                )
                self.metrics.observe(conversation, stopped)
            elif conversation.nudged_at is None:
                await self.send(self._nudge(conversation, contact))
                conversation.nudged_at = now
            conversation.updated_at = now

    async def contain_idle(self, session: AsyncSession, now: datetime) -> None:
        """Conversations the bot replied in, idle with no person's reply since: contained."""
        after = timedelta(hours=self.settings.bot_contained_after_hours)
        idle = await session.execute(
            select(ConversationRow)
            .where(
                col(ConversationRow.bot_outcome).is_(None),
                col(ConversationRow.bot_replied_at).is_not(None),
                col(ConversationRow.last_message_at) <= now - after,
            )
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        for conversation in idle.scalars():
            if not containment.idle(conversation.last_message_at, now, after):
                continue
            outcome = containment.settle(conversation, containment.CONTAINED)
            if outcome is not None:
                self.metrics.containment.labels(outcome).inc()

    def _nudge(self, conversation: ConversationRow, contact: ContactRow) -> OutboundRequest:
        return OutboundRequest(
            request_id=f"nudge-{conversation.id}-{uuid.uuid4().hex[:12]}",
            conversation=ConversationRef(
                channel=Channel(conversation.channel),
                account_id=conversation.account_id,
                contact_id=contact.platform_id,
            ),
            text=self.settings.nudge_text,
            author=Author.BOT,
        )
