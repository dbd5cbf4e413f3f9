"""The conversation lifecycle through the projector, on a real database (issue #16)."""

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import projector
from services.api.metrics import ApiMetrics
from shared.db import transaction
from shared.events import (
    Author,
    BotReply,
    Channel,
    Contact,
    ConversationClosed,
    ConversationRef,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
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


async def sent_reply(
    session: AsyncSession, ref: ConversationRef, request_id: str, at: datetime
) -> None:
    request = OutboundRequest(
        request_id=request_id, conversation=ref, text="hi!", author=Author.AGENT, requested_at=at
    )
    await session.run_sync(projector.project_outbound_requested, request)
    result = OutboundResult(
        request_id=request_id, conversation=ref, status=OutboundStatus.SENT, finished_at=at
    )
    await session.run_sync(projector.project_outbound_result, result)


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


def _sample(metrics: ApiMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_oldest_waiting_counts_only_customers_still_waiting_finding_3(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    billing = ConversationRef(channel=Channel.WHATSAPP, account_id="waba", contact_id="77")
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        await session.run_sync(
            projector.project_inbound, customer("m-2", T0 + timedelta(seconds=30))
        )
        await session.run_sync(
            projector.project_inbound,
            InboundMessage(
                mid="b-1",
                channel=Channel.WHATSAPP,
                account_id="waba",
                contact=Contact(platform_id="77"),
                text="invoice?",
                platform_ts=T0 - timedelta(minutes=5),
            ),
        )
        await sent_reply(session, billing, "agent-1", T0 - timedelta(minutes=4))
    metrics = ApiMetrics(CollectorRegistry())
    async with sessions() as session:
        await metrics.refresh_queue_gauges(session, T0 + timedelta(minutes=1))
    oldest = _sample(
        metrics, "dmdesk_queue_oldest_waiting_seconds", team="unassigned", priority="normal"
    )
    assert oldest == 60.0, (
        "since ana's first unanswered message; the answered customer waits no more"
    )


async def test_pending_customers_are_not_waiting_finding_3(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, customer("m-1", T0))
        reply = BotReply(
            conversation=REF, trigger_mid="m-1", request_id="b", rule_id="faq", text="x"
        )
        await session.run_sync(projector.project_bot_reply, reply)
    metrics = ApiMetrics(CollectorRegistry())
    async with sessions() as session:
        await metrics.refresh_queue_gauges(session, T0 + timedelta(minutes=1))
    assert (
        _sample(
            metrics, "dmdesk_queue_oldest_waiting_seconds", team="unassigned", priority="normal"
        )
        is None
    )
