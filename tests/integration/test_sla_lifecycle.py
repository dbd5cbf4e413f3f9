"""The conversation lifecycle through the projector, on a real database (issue #16)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import admin, projector
from services.api.metrics import ApiMetrics
from services.api.sla_scheduler import SlaScheduler
from shared.db import transaction
from shared.events import (
    Author,
    BotReply,
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    ConversationClosed,
    ConversationRef,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    Priority,
    SlaEvent,
)
from shared.models import ConversationRow, MessageRow, SlaClockRow, SlaPolicyRow

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
    session: AsyncSession,
    ref: ConversationRef,
    request_id: str,
    at: datetime,
    metrics: ApiMetrics | None = None,
    author: Author = Author.AGENT,
) -> None:
    request = OutboundRequest(
        request_id=request_id, conversation=ref, text="hi!", author=author, requested_at=at
    )
    await session.run_sync(projector.project_outbound_requested, request)
    result = OutboundResult(
        request_id=request_id, conversation=ref, status=OutboundStatus.SENT, finished_at=at
    )
    await session.run_sync(projector.project_outbound_result, result, metrics)


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


def _counter_total(metrics: ApiMetrics, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_the_summary_and_the_metrics_count_the_same_breaches_findings_1_and_4(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """One sequence of events; the summary and /metrics must agree, dated by outcome."""
    async with transaction(sessions) as session:
        await session.execute(
            update(SlaPolicyRow)
            .where(SlaPolicyRow.name == "normal")
            .values(first_response_seconds=60, next_response_seconds=120, resolution_seconds=3600)
        )
    metrics = ApiMetrics(CollectorRegistry())
    published: list[SlaEvent] = []

    async def publish(event: SlaEvent) -> None:
        published.append(event)

    scheduler = SlaScheduler(sessions, publish, metrics)

    def ref(contact: str) -> ConversationRef:
        return ConversationRef(channel=Channel.WHATSAPP, account_id="waba", contact_id=contact)

    def message(contact: str, mid: str, at: datetime) -> InboundMessage:
        return InboundMessage(
            mid=mid,
            channel=Channel.WHATSAPP,
            account_id="waba",
            contact=Contact(platform_id=contact),
            text="help",
            platform_ts=at,
        )

    async with transaction(sessions) as session:
        for contact in ("a", "b", "d"):
            await session.run_sync(
                projector.project_inbound, message(contact, contact, T0), metrics
            )
        await session.run_sync(
            projector.project_inbound, message("c", "c", T0 + timedelta(seconds=30)), metrics
        )
        await sent_reply(session, ref("b"), "reply-b", T0 + timedelta(seconds=10), metrics)
    await scheduler.fire_due(T0 + timedelta(seconds=61))  # a and d breach on the scheduler
    async with transaction(sessions) as session:
        await sent_reply(session, ref("a"), "reply-a", T0 + timedelta(seconds=70), metrics)
        # c's reply comes late before the scheduler saw its deadline: breached all the same.
        await sent_reply(session, ref("c"), "reply-c", T0 + timedelta(seconds=95), metrics)

    async with sessions() as session:
        summary = await admin.sla_summary(
            session,
            None,  # type: ignore[arg-type]  # the key only guards the route
            by=admin.SummaryGroup.CHANNEL,
            since=T0 + timedelta(seconds=50),
            until=T0 + timedelta(hours=1),
        )
    first = next(row for row in summary if row.metric == "first_response")
    breaches = _counter_total(metrics, "dmdesk_sla_breaches_total", sla="first_response")
    assert (first.group, first.breached, first.met) == ("whatsapp", 3, 0), "b's met was before"
    assert breaches == first.breached
    assert first.breached_now == 1, "d is past its deadline and still unanswered"
    observed = _counter_total(metrics, "dmdesk_first_response_seconds_count")
    assert observed == 3, "a, b and c stopped; the histogram and the clocks agree"


def classified(mid: str, at: datetime, category: str, priority: str, language: str) -> Any:
    return ClassifiedMessage(
        message=customer(mid, at),
        classification=Classification(
            category=Category(category),
            priority=Priority(priority),
            language=language,
            confidence=0.9,
            model_version="t",
        ),
    )


async def test_conversation_fields_tell_the_truth_finding_9(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(
            projector.project_classified, classified("m-1", T0, "complaint", "high", "en")
        )
        await sent_reply(session, REF, "bot-ack", T0 + timedelta(seconds=0.16), author=Author.BOT)
        # A later message about something smaller does not rewrite what the conversation is.
        later = T0 + timedelta(seconds=20)
        await session.run_sync(
            projector.project_classified, classified("m-2", later, "private_info", "high", "it")
        )
        await session.run_sync(
            projector.project_classified,
            classified("m-3", later + timedelta(seconds=1), "feedback", "low", "it"),
        )
        await sent_reply(session, REF, "agent-1", T0 + timedelta(seconds=65))
    async with sessions() as session:
        conversation = (await session.execute(select(ConversationRow))).scalar_one()
        messages = {
            row.mid: (row.category, row.language)
            for row in (await session.execute(select(MessageRow))).scalars()
        }
    assert conversation.first_response_at == T0 + timedelta(seconds=65), "the bot's ack is not"
    assert conversation.last_message_at == T0 + timedelta(seconds=65), "replies move it too"
    assert (conversation.category, conversation.priority, conversation.language) == (
        "complaint",
        "high",
        "en",
    )
    assert messages["m-2"] == ("private_info", "it"), "each message keeps its own"
