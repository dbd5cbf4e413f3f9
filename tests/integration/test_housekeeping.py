"""Time-based rules on a real database: snooze wake-up, round robin, reassignment, auto-close."""

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import clocks, projector
from services.api.housekeeping import Housekeeper
from services.api.metrics import ApiMetrics
from shared.db import transaction
from shared.events import (
    Channel,
    Contact,
    ConversationRef,
    Handoff,
    InboundMessage,
    OutboundRequest,
    Priority,
)
from shared.models import AgentRow, ConversationRow, TeamRow
from shared.settings import Settings
from tests.stack import eventually

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def customer(contact: str, at: datetime = T0) -> InboundMessage:
    return InboundMessage(
        mid=f"m-{contact}-{at.timestamp()}",
        channel=Channel.INSTAGRAM,
        account_id="ig",
        contact=Contact(platform_id=contact),
        text="hi",
        platform_ts=at,
    )


@pytest.fixture
def housekeeper(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[..., tuple[Housekeeper, list[OutboundRequest]]]:
    def make(**settings: float) -> tuple[Housekeeper, list[OutboundRequest]]:
        sent: list[OutboundRequest] = []

        async def send(request: OutboundRequest) -> None:
            sent.append(request)

        keeper = Housekeeper(sessions, Settings(**settings), send, ApiMetrics(CollectorRegistry()))
        return keeper, sent

    return make


async def conversations(sessions: async_sessionmaker[AsyncSession]) -> dict[str, ConversationRow]:
    async with sessions() as session:
        rows = await session.execute(select(ConversationRow).order_by(ConversationRow.id))
        return {f"c{row.contact_id}": row for row in rows.scalars()}


async def test_snoozed_conversation_wakes_up_with_its_clocks_running(
    sessions: async_sessionmaker[AsyncSession],
    housekeeper: Callable[..., tuple[Housekeeper, list[OutboundRequest]]],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("ana"))
        row = (await session.execute(select(ConversationRow))).scalar_one()
        until = T0 + timedelta(hours=1)
        await session.run_sync(
            clocks.apply, row, lambda lifecycle: lifecycle.move("snoozed", T0, until=until)
        )
    keeper, _ = housekeeper()
    await keeper.tick(T0 + timedelta(minutes=30))
    assert (await conversations(sessions))["c1"].status == "snoozed"
    await keeper.tick(T0 + timedelta(hours=1))
    woken = (await conversations(sessions))["c1"]
    assert (woken.status, woken.snoozed_until) == ("open", None)
    assert woken.sla_due_at == T0 + timedelta(hours=1 + 4), "first response, paused one hour"


async def test_auto_assignment_is_round_robin_within_capacity(
    sessions: async_sessionmaker[AsyncSession],
    housekeeper: Callable[..., tuple[Housekeeper, list[OutboundRequest]]],
) -> None:
    async with transaction(sessions) as session:
        session.add(TeamRow(name="care", auto_assign=True))
        session.add(AgentRow(name="ana", teams=["care"], online=True, capacity=2))
        session.add(AgentRow(name="ben", teams=["care"], online=True, capacity=1))
        session.add(AgentRow(name="off", teams=["care"], online=False, capacity=9))
        session.add(AgentRow(name="else", teams=["billing"], online=True, capacity=9))
        for index, contact in enumerate(["c-a", "c-b", "c-c", "c-d", "c-e"]):
            await session.run_sync(
                projector.project_inbound, customer(contact, T0 + timedelta(minutes=index))
            )
            await session.run_sync(
                projector.project_handoff,
                Handoff(
                    conversation=ConversationRef(
                        channel=Channel.INSTAGRAM, account_id="ig", contact_id=contact
                    ),
                    trigger_mid="x",
                    team="care",
                    priority=Priority.NORMAL,
                    reason="test",
                ),
            )
    keeper, _ = housekeeper()
    await keeper.tick(T0 + timedelta(minutes=10))
    assigned = [row.assignee for row in (await conversations(sessions)).values()]
    assert assigned == ["ana", "ben", "ana", None, None]


async def test_a_customer_left_waiting_on_an_assignee_goes_back_to_the_queue(
    sessions: async_sessionmaker[AsyncSession],
    housekeeper: Callable[..., tuple[Housekeeper, list[OutboundRequest]]],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("ana"))
        row = (await session.execute(select(ConversationRow))).scalar_one()
        row.assignee, row.assigned_at = "ben", T0
    keeper, _ = housekeeper(reassign_after_minutes=30)
    await keeper.tick(T0 + timedelta(minutes=20))
    assert (await conversations(sessions))["c1"].assignee == "ben"
    await keeper.tick(T0 + timedelta(minutes=31))
    assert (await conversations(sessions))["c1"].assignee is None


async def test_silent_customer_is_nudged_then_the_conversation_closes(
    sessions: async_sessionmaker[AsyncSession],
    housekeeper: Callable[..., tuple[Housekeeper, list[OutboundRequest]]],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("ana"))
        row = (await session.execute(select(ConversationRow))).scalar_one()
        row.status = "waiting"
    keeper, sent = housekeeper(auto_close_after_hours=24, nudge_after_hours=12)
    await keeper.tick(T0 + timedelta(hours=11))
    assert sent == []
    await keeper.tick(T0 + timedelta(hours=12))
    await keeper.tick(T0 + timedelta(hours=13))
    assert [request.text for request in sent] == [Settings().nudge_text]
    assert sent[0].conversation.contact_id == "ana"
    assert (await conversations(sessions))["c1"].status == "waiting"
    await keeper.tick(T0 + timedelta(hours=24))
    closed = (await conversations(sessions))["c1"]
    assert (closed.status, closed.resolved_at) == ("resolved", T0 + timedelta(hours=24))


async def test_pokes_coalesce_into_at_most_one_tick_per_gap(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ticks: list[datetime] = []

    class Counting(Housekeeper):
        async def tick(self, now: datetime) -> None:
            ticks.append(now)

    async def send(request: OutboundRequest) -> None:
        raise AssertionError("nothing to send")

    keeper = Counting(
        sessions,
        Settings(),
        send,
        ApiMetrics(CollectorRegistry()),
        interval_seconds=600,
        min_gap_seconds=600,
    )
    runner = asyncio.create_task(keeper.run())
    try:
        await eventually(lambda: asyncio.sleep(0, len(ticks)), lambda count: count == 1)
        for _ in range(20):  # one per committed group
            keeper.poke()
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert len(ticks) == 1, "the pokes wait for the gap to pass"
