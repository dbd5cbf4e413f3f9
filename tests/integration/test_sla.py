"""SLA clocks on a real database: responses, pauses, policies, and breaches on time."""

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import clocks, projector
from services.api.metrics import ApiMetrics
from services.api.sla_scheduler import SlaScheduler
from shared.db import transaction
from shared.events import (
    Author,
    BotReply,
    Channel,
    Contact,
    ConversationRef,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    SlaEvent,
    SlaEventKind,
    utcnow,
)
from shared.models import ConversationRow, SlaClockRow, SlaPolicyRow
from tests.stack import eventually

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
REF = ConversationRef(channel=Channel.WHATSAPP, account_id="waba", contact_id="4915")


def customer(mid: str, at: datetime) -> InboundMessage:
    return InboundMessage(
        mid=mid,
        channel=Channel.WHATSAPP,
        account_id="waba",
        contact=Contact(platform_id="4915"),
        text="hello?",
        platform_ts=at,
    )


async def sent_reply(session: AsyncSession, request_id: str, author: Author, at: datetime) -> None:
    request = OutboundRequest(
        request_id=request_id, conversation=REF, text="hi!", author=author, requested_at=at
    )
    await session.run_sync(projector.project_outbound_requested, request)
    await session.run_sync(
        projector.project_outbound_result,
        OutboundResult(
            request_id=request_id, conversation=REF, status=OutboundStatus.SENT, finished_at=at
        ),
    )


async def clock_rows(sessions: async_sessionmaker[AsyncSession]) -> list[SlaClockRow]:
    async with sessions() as session:
        return list((await session.execute(select(SlaClockRow).order_by(SlaClockRow.id))).scalars())


async def test_bot_reply_does_not_stop_a_human_only_clock_but_a_human_reply_does(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        await sent_reply(session, "bot-1", Author.BOT, T0 + timedelta(seconds=5))
    first = (await clock_rows(sessions))[0]
    assert (first.metric, first.state) == ("first_response", "running")

    async with transaction(sessions) as session:
        await sent_reply(session, "agent-1", Author.AGENT, T0 + timedelta(minutes=20))
    first = (await clock_rows(sessions))[0]
    assert (first.state, first.responder, first.elapsed_seconds) == ("met", "human", 1200.0)


async def test_a_policy_that_counts_the_bot_is_met_by_the_bot(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.execute(update(SlaPolicyRow).values(counts_bot=True))
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        await sent_reply(session, "bot-1", Author.BOT, T0 + timedelta(seconds=5))
    first = (await clock_rows(sessions))[0]
    assert (first.state, first.responder) == ("met", "bot")


async def test_next_response_clock_starts_when_the_customer_writes_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        await sent_reply(session, "agent-1", Author.AGENT, T0 + timedelta(minutes=1))
        await session.run_sync(projector.project_inbound, customer("m-2", T0 + timedelta(hours=1)))
    metrics = [(clock.metric, clock.state) for clock in await clock_rows(sessions)]
    assert metrics == [
        ("first_response", "met"),
        ("resolution", "running"),
        ("next_response", "running"),
    ]


async def test_waiting_on_the_customer_pauses_and_moves_the_deadline(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
    async with transaction(sessions) as session:
        row = (await session.execute(select(ConversationRow))).scalar_one()
        paused = T0 + timedelta(hours=1)
        await session.run_sync(
            clocks.apply, row, lambda lifecycle: lifecycle.move("waiting", paused)
        )
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-2", T0 + timedelta(hours=3)))
    resolution = next(c for c in await clock_rows(sessions) if c.metric == "resolution")
    assert resolution.state == "running"
    assert resolution.due_at == T0 + timedelta(hours=72 + 2), "paused for two hours"


async def test_changing_a_policy_does_not_rewrite_history(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        await sent_reply(session, "agent-1", Author.AGENT, T0 + timedelta(minutes=1))
    before = (await clock_rows(sessions))[0]
    async with transaction(sessions) as session:
        old = (
            await session.execute(select(SlaPolicyRow).where(SlaPolicyRow.name == "normal"))
        ).scalar_one()
        old.archived_at = utcnow()
        session.add(SlaPolicyRow(name="normal", priority="normal", first_response_seconds=60))
    after = (await clock_rows(sessions))[0]
    assert (after.policy_id, after.due_at, after.state) == (
        before.policy_id,
        before.due_at,
        before.state,
    )


async def test_bot_reply_marks_the_conversation_pending_unless_a_team_has_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        await session.run_sync(
            projector.project_bot_reply,
            BotReply(conversation=REF, trigger_mid="m-1", request_id="b", rule_id="r", text="x"),
        )
    async with sessions() as session:
        assert (await session.execute(select(ConversationRow.status))).scalar_one() == "pending"


async def test_breach_is_published_within_seconds_of_the_deadline_with_no_request(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            update(SlaPolicyRow)
            .where(SlaPolicyRow.name == "normal")
            .values(first_response_seconds=2, at_risk_share=0.5)
        )
    published: list[SlaEvent] = []

    async def publish(event: SlaEvent) -> None:
        published.append(event)

    metrics = ApiMetrics(CollectorRegistry())
    scheduler = SlaScheduler(sessions, publish, metrics, poll_seconds=30)
    runner = asyncio.create_task(scheduler.run())
    try:
        written = utcnow()
        async with transaction(sessions) as session:
            await session.run_sync(projector.project_inbound, customer("m-1", written))
        scheduler.deadline_changed()
        # Until the scheduler's transaction, which commits after it publishes, is in.
        for _ in range(100):
            breached = any(e.kind == SlaEventKind.BREACHED for e in published)
            if breached and (await clock_rows(sessions))[0].breached_at is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    kinds = [(event.kind, event.metric) for event in published]
    assert kinds == [
        (SlaEventKind.AT_RISK, "first_response"),
        (SlaEventKind.BREACHED, "first_response"),
    ]
    breach = published[1]
    assert breach.due_at == written + timedelta(seconds=2)
    assert timedelta(0) <= breach.at - breach.due_at < timedelta(seconds=5)
    first = (await clock_rows(sessions))[0]
    assert first.breached_at == first.due_at
    assert metrics.breaches.labels("first_response", "normal", "whatsapp")._value.get() == 1


async def test_the_scheduler_looks_again_only_for_a_deadline_before_its_next_look(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    looks: list[datetime] = []

    class Counting(SlaScheduler):
        async def fire_due(self, now: datetime) -> datetime | None:
            looks.append(now)
            return await super().fire_due(now)

    async def publish(event: SlaEvent) -> None:
        raise AssertionError("nothing is due")

    scheduler = Counting(sessions, publish, ApiMetrics(CollectorRegistry()), poll_seconds=60)
    runner = asyncio.create_task(scheduler.run())
    try:

        async def next_look() -> datetime | None:
            return scheduler._next_look

        async def looked() -> int:
            return len(looks)

        # The first look is over: it sleeps until the next.
        await eventually(next_look, lambda when: when is not None)
        scheduler.deadline_changed(utcnow() + timedelta(minutes=5))  # after the next look
        await asyncio.sleep(0.2)
        later_only = len(looks)
        scheduler.deadline_changed(utcnow() + timedelta(seconds=1))  # before it
        await eventually(looked, lambda count: count > later_only)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert later_only == 1
    assert len(looks) == 2
