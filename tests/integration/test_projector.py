"""Projecting events into a real database (SQLite and PostgreSQL): idempotent, order-free."""

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import projector
from shared.db import create_engine, migrate, transaction
from shared.events import (
    Author,
    BotReply,
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    ConversationRef,
    Handoff,
    InboundMessage,
    MessageUpdate,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    Priority,
    RoutedMessage,
    RouteOutcome,
    StatusEvent,
    StatusKind,
    UpdateKind,
)
from shared.models import ActivityRow, ContactRow, ConversationRow, MessageRow, metadata
from tests.events import routed

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
REF = ConversationRef(channel=Channel.MESSENGER, account_id="page-1", contact_id="psid-1")


def inbound(mid: str, at: datetime = T0, *, echo: bool = False) -> InboundMessage:
    return InboundMessage(
        mid=mid,
        channel=Channel.MESSENGER,
        account_id="page-1",
        contact=Contact(platform_id="psid-1", name="Ana"),
        text="hello",
        is_echo=echo,
        platform_ts=at,
    )


def classified(
    mid: str, priority: Priority, category: Category = Category.INQUIRY
) -> ClassifiedMessage:
    return ClassifiedMessage(
        message=inbound(mid),
        classification=Classification(
            category=category,
            confidence=0.9,
            priority=priority,
            language="en",
            model_version="test",
        ),
    )


async def conversation(sessions: async_sessionmaker[AsyncSession]) -> ConversationRow:
    async with sessions() as session:
        return (await session.execute(select(ConversationRow))).scalar_one()


async def messages(sessions: async_sessionmaker[AsyncSession]) -> list[MessageRow]:
    async with sessions() as session:
        return list((await session.execute(select(MessageRow).order_by(MessageRow.id))).scalars())


async def test_migrations_match_the_models_and_run_twice(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        await migrate(engine)

        def diff(connection: Connection) -> list[object]:
            return compare_metadata(MigrationContext.configure(connection), metadata)

        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_duplicate_inbound_message_is_stored_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        assert await session.run_sync(projector.project_inbound, inbound("m-1")) is True
    async with transaction(sessions) as session:
        assert await session.run_sync(projector.project_inbound, inbound("m-1")) is False
    assert [m.mid for m in await messages(sessions)] == ["m-1"]


async def test_a_decision_after_its_early_projections_still_ends_in_one_routed_conversation(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The late-decision path projected the inbound message, then its classification;
    # the decision comes last, and once more (redelivered).
    decision = routed(inbound("m-1"), RouteOutcome.HANDOFF, priority=Priority.HIGH, at=T0)
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, inbound("m-1"))
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_classified, classified("m-1", Priority.HIGH))
    for _ in range(2):
        async with transaction(sessions) as session:
            await session.run_sync(projector.project_routed, decision)

    queued = await conversation(sessions)
    assert (queued.team, queued.priority) == ("billing", "high")
    assert [m.mid for m in await messages(sessions)] == ["m-1"]
    async with sessions() as session:
        counts = [
            (await session.execute(select(func.count()).select_from(table))).scalar()
            for table in (ConversationRow, ContactRow)
        ]
        handoffs = (
            await session.execute(
                select(func.count())
                .select_from(ActivityRow)
                .where(ActivityRow.kind == "bot.handoff")
            )
        ).scalar()
    assert counts == [1, 1]
    assert handoffs == 1


async def test_classification_raises_priority_and_never_lowers_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(
            projector.project_classified, classified("m-1", Priority.LOW, Category.FEEDBACK)
        )
    assert (await conversation(sessions)).priority == "low"
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_classified, classified("m-2", Priority.URGENT))
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_classified, classified("m-3", Priority.NORMAL))
    row = await conversation(sessions)
    assert (row.priority, row.priority_rank) == ("urgent", 0)
    assert row.sla_due_at == T0 + timedelta(minutes=15)


async def test_echo_counts_as_the_first_response(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, inbound("m-1", T0))
        await session.run_sync(
            projector.project_inbound, inbound("echo-1", T0 + timedelta(minutes=3), echo=True)
        )
    row = await conversation(sessions)
    assert row.first_response_at == T0 + timedelta(minutes=3)
    assert row.sla_due_at == T0 + timedelta(hours=72), "only the resolution clock still runs"
    echo = (await messages(sessions))[1]
    assert (echo.direction, echo.author, echo.status) == ("outbound", "page", "sent")


async def test_customer_message_reopens_a_resolved_conversation(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, inbound("m-1", T0))
    async with transaction(sessions) as session:
        row = (await session.execute(select(ConversationRow))).scalar_one()
        row.status = "resolved"
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, inbound("m-2", T0 + timedelta(days=1)))
    assert (await conversation(sessions)).status == "open"


async def test_reply_is_pending_then_sent_then_read_never_backwards(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    request = OutboundRequest(
        request_id="r-1", conversation=REF, text="On its way!", author=Author.AGENT, requested_at=T0
    )
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, inbound("m-1", T0 - timedelta(minutes=5)))
        await session.run_sync(projector.project_outbound_requested, request)
    assert (await messages(sessions))[1].status == "pending"

    result = OutboundResult(
        request_id="r-1",
        conversation=REF,
        status=OutboundStatus.SENT,
        mid="mid.sent",
        finished_at=T0,
    )
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_outbound_result, result)
    assert (await conversation(sessions)).first_response_at == T0

    read = StatusEvent(
        event_id="read-1", kind=StatusKind.READ, conversation=REF, watermark=T0, platform_ts=T0
    )
    delivered = StatusEvent(
        event_id="dlv-1", kind=StatusKind.DELIVERED, conversation=REF, watermark=T0, platform_ts=T0
    )
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_status, read)
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_status, delivered)
    assert [m.status for m in await messages(sessions)] == ["received", "read"]


async def test_reactions_edits_and_unsends_change_the_message_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    def update(kind: UpdateKind, event_id: str, **fields: object) -> MessageUpdate:
        return MessageUpdate(
            event_id=event_id,
            kind=kind,
            conversation=REF,
            mid="m-1",
            platform_ts=T0 + timedelta(minutes=1),
            **fields,  # type: ignore[arg-type]
        )

    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, inbound("m-1"))
    for change in (
        update(UpdateKind.REACT, "r1", emoji="❤️"),
        update(UpdateKind.REACT, "r2", emoji="👍", by_page=True),
        update(UpdateKind.UNREACT, "r3"),
        update(UpdateKind.EDIT, "e2", text="hello again", edit_count=2),
        update(UpdateKind.EDIT, "e1", text="stale edit", edit_count=1),
    ):
        async with transaction(sessions) as session:
            await session.run_sync(projector.project_update, change)
    [message] = await messages(sessions)
    assert message.reactions == {"page": "👍"}
    assert (message.text, message.edit_count) == ("hello again", 2)

    async with transaction(sessions) as session:
        await session.run_sync(projector.project_update, update(UpdateKind.DELETE, "d1"))
    [message] = await messages(sessions)
    assert (message.text, message.deleted_at) == (None, T0 + timedelta(minutes=1))


async def test_the_bots_hand_off_reason_and_the_opt_out_show_on_conversation_and_contact(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handoff = Handoff(
        conversation=REF,
        trigger_mid="m-1",
        team="complaints",
        priority=Priority.HIGH,
        reason="complaint",
        rule_id="complaint-flag",
        signals=["complaint"],
        faq_entry="opening-hours",
        faq_score=0.31,
        faq_settles=0.12,
    )
    decision = routed(inbound("m-1"), RouteOutcome.HANDOFF).model_copy(update={"handoff": handoff})
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_routed, decision)
    queued = await conversation(sessions)
    assert (queued.handoff_reason, queued.handoff_rule) == ("complaint", "complaint-flag")
    assert queued.handoff_signals == ["complaint"]
    assert (queued.faq_entry, queued.faq_score, queued.faq_settles) == ("opening-hours", 0.31, 0.12)
    assert queued.bot_opted_out is False

    def reply(mid: str, opt_out: str) -> BotReply:
        return BotReply.model_validate(
            {"conversation": REF, "trigger_mid": mid, "request_id": f"r-{mid}",
             "rule_id": "guard", "text": "ok", "opt_out": opt_out}
        )  # fmt: skip

    async def opted_out() -> tuple[bool, bool]:
        async with sessions() as session:
            contact = (await session.execute(select(ContactRow))).scalar_one()
        return (await conversation(sessions)).bot_opted_out, contact.bot_opted_out

    def answered(mid: str, opt_out: str) -> RoutedMessage:
        return routed(inbound(mid), RouteOutcome.BOT).model_copy(
            update={"replies": [reply(mid, opt_out)], "requests": []}
        )

    async with transaction(sessions) as session:
        await session.run_sync(projector.project_routed, answered("m-2", "out"))
    assert await opted_out() == (True, True)
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_routed, answered("m-3", "in"))
    assert await opted_out() == (False, False)
