"""Fires SLA at-risk and breach events at their deadlines, not on a slow sweep.

The scheduler sleeps until the nearest deadline it knows of; a projection that
sets an earlier deadline than the scheduler's next look wakes it (the projection
writer says the earliest one each committed group set, so a group that sets none,
or only later ones, costs the scheduler nothing). Deadlines set by another api
replica are picked up by a short re-check (``poll_seconds``). Several replicas may run it: rows are
claimed with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite has one writer) and
events carry a ``Nats-Msg-Id``, so each fires once.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.api import activity
from services.api.metrics import ApiMetrics
from shared.db import as_utc, transaction
from shared.events import Priority, SlaEvent, SlaEventKind, utcnow
from shared.models import ConversationRow, SlaClockRow, SlaPolicyRow
from shared.states import ClockState

logger = logging.getLogger("dmdesk.api.sla")

Publish = Callable[[SlaEvent], Awaitable[None]]
BATCH = 200


class SlaScheduler:
    """Publishes ``dm.sla.at_risk`` and ``dm.sla.breached`` when their time comes."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publish: Publish,
        metrics: ApiMetrics,
        poll_seconds: float = 2.0,
    ) -> None:
        self.sessions = sessions
        self.publish = publish
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._next_look: datetime | None = None

    def deadline_changed(self, earliest: datetime | None = None) -> None:
        """A deadline was set or moved: look again now, unless ``earliest`` (the earliest
        deadline or at-risk time set, when known) comes after the next look anyway."""
        if earliest is not None and self._next_look is not None and earliest >= self._next_look:
            return
        self._wake.set()

    async def run(self) -> None:
        """Fire what is due, then sleep until the next deadline (or a wake-up)."""
        while True:
            self._wake.clear()
            self._next_look = None  # a deadline set while it looks may be missed: wake again
            try:
                upcoming = await self.fire_due(utcnow())
            except Exception:
                logger.exception("SLA deadlines not checked; retrying")
                upcoming = None
            timeout = self.poll_seconds
            if upcoming is not None:
                timeout = min(max((upcoming - utcnow()).total_seconds(), 0.01), timeout)
            self._next_look = utcnow() + timedelta(seconds=timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def fire_due(self, now: datetime) -> datetime | None:
        """Publish every event due by ``now``; return when the next one is due."""
        async with transaction(self.sessions) as session:
            await self._fire(session, now, SlaEventKind.AT_RISK)
            await self._fire(session, now, SlaEventKind.BREACHED)
            return await self._next_deadline(session)

    async def _fire(self, session: AsyncSession, now: datetime, kind: SlaEventKind) -> None:
        at_risk = kind == SlaEventKind.AT_RISK
        when = col(SlaClockRow.at_risk_at) if at_risk else col(SlaClockRow.due_at)
        pending = (
            col(SlaClockRow.at_risk_fired).is_(False)
            if at_risk
            else col(SlaClockRow.breached_at).is_(None)
        )
        query = (
            select(SlaClockRow, ConversationRow, SlaPolicyRow)
            .join(ConversationRow, col(ConversationRow.id) == col(SlaClockRow.conversation_id))
            .join(SlaPolicyRow, col(SlaPolicyRow.id) == col(SlaClockRow.policy_id))
            .where(col(SlaClockRow.state) == ClockState.RUNNING.value, pending, when <= now)
            .order_by(when)
            .limit(BATCH)
            .with_for_update(skip_locked=True, of=SlaClockRow)
        )
        for clock, conversation, policy in (await session.execute(query)).all():
            assert clock.id is not None
            assert conversation.id is not None
            await self.publish(
                SlaEvent(
                    kind=kind,
                    clock_id=clock.id,
                    conversation_id=conversation.id,
                    metric=clock.metric,
                    policy=policy.name,
                    priority=Priority(conversation.priority),
                    team=conversation.team,
                    due_at=clock.due_at,
                    at=now,
                )
            )
            activity.record(
                session, conversation.id, f"sla.{kind.value}", "sla", now, metric=clock.metric
            )
            counter = self.metrics.at_risk if at_risk else self.metrics.breaches
            counter.labels(clock.metric, conversation.priority, conversation.channel).inc()
            if at_risk:
                clock.at_risk_fired = True
            else:
                clock.breached_at = clock.due_at
            logger.info(
                "SLA event",
                extra={"kind": kind.value, "clock_id": clock.id, "metric": clock.metric},
            )

    async def _next_deadline(self, session: AsyncSession) -> datetime | None:
        running = col(SlaClockRow.state) == ClockState.RUNNING.value
        due = await session.scalar(
            select(func.min(col(SlaClockRow.due_at))).where(
                running, col(SlaClockRow.breached_at).is_(None)
            )
        )
        risk = await session.scalar(
            select(func.min(col(SlaClockRow.at_risk_at))).where(
                running, col(SlaClockRow.at_risk_fired).is_(False)
            )
        )
        candidates = [as_utc(value) for value in (due, risk) if value is not None]
        return min(candidates, default=None)
