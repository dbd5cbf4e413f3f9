"""The conversation lifecycle through the projector, on a real database (issue #16)."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import projector
from shared.db import transaction
from shared.events import (
    BotReply,
    Channel,
    Contact,
    ConversationClosed,
    ConversationRef,
    InboundMessage,
)
from shared.models import ConversationRow, SlaClockRow

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


def closed(mid: str, at: datetime) -> ConversationClosed:
    return ConversationClosed(conversation=REF, trigger_mid=mid, reason="done", decided_at=at)


async def clock_rows(sessions: async_sessionmaker[AsyncSession]) -> list[SlaClockRow]:
    async with sessions() as session:
        return list((await session.execute(select(SlaClockRow).order_by(SlaClockRow.id))).scalars())


async def test_a_bot_answer_pauses_every_clock_finding_2(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        reply = BotReply(
            conversation=REF,
            trigger_mid="m-1",
            request_id="b",
            rule_id="faq",
            text="x",
            decided_at=T0 + timedelta(seconds=0.4),
        )
        await session.run_sync(projector.project_bot_reply, reply)
    states = {(c.metric, c.state) for c in await clock_rows(sessions)}
    assert states == {("first_response", "paused"), ("resolution", "paused")}
    async with sessions() as session:
        conversation = (await session.execute(select(ConversationRow))).scalar_one()
    assert conversation.sla_due_at is None, "nothing runs: no deadline in the queue"


async def test_a_bot_answer_that_arrives_first_still_pauses_the_clocks(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        reply = BotReply(
            conversation=REF,
            trigger_mid="m-1",
            request_id="b",
            rule_id="faq",
            text="x",
            decided_at=T0 + timedelta(seconds=1),
        )
        await session.run_sync(projector.project_bot_reply, reply)
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
    async with sessions() as session:
        conversation = (await session.execute(select(ConversationRow))).scalar_one()
    assert conversation.status == "pending"
    states = {(c.metric, c.state) for c in await clock_rows(sessions)}
    assert states == {("first_response", "paused"), ("resolution", "paused")}


async def test_writing_after_an_unanswered_resolve_starts_a_response_clock_finding_4(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        await session.run_sync(projector.project_closed, closed("m-1", T0 + timedelta(minutes=1)))
        await session.run_sync(projector.project_inbound, customer("m-2", T0 + timedelta(hours=1)))
    running = [(c.metric, c.state) for c in await clock_rows(sessions) if c.state == "running"]
    assert ("first_response", "running") in running


async def test_an_unanswered_resolve_is_not_met_and_reopens_keep_one_measure_finding_6(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        await session.run_sync(projector.project_closed, closed("m-1", T0 + timedelta(minutes=1)))
    resolution = [c for c in await clock_rows(sessions) if c.metric == "resolution"]
    assert [(c.state, c.responder) for c in resolution] == [("unanswered", None)]
    for hour in (1, 2):
        async with transaction(sessions) as session:
            at = T0 + timedelta(hours=hour)
            await session.run_sync(projector.project_inbound, customer(f"m-{hour + 1}", at))
            await session.run_sync(
                projector.project_closed, closed(f"m-{hour + 1}", at + timedelta(minutes=1))
            )
    resolution = [c for c in await clock_rows(sessions) if c.metric == "resolution"]
    assert len(resolution) == 1, "a reopen continues the conversation's resolution measure"
    assert resolution[0].elapsed_seconds == 3 * 60, "three minutes open, in three stretches"
