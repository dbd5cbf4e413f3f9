"""The api projects a customer DM from its one ``dm.routed.*`` event, and echoes from ``dm.echo.*``.

The api service runs in-process on a real NATS server and a real database (SQLite and
PostgreSQL); the events are published as the responder and ingest publish them.
"""

import asyncio
from collections.abc import Callable
from typing import TypeVar

import nats
import pytest
from nats.js import JetStreamContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel

from services.api.app import build
from shared.events import (
    Author,
    Channel,
    OutboundResult,
    OutboundStatus,
    Priority,
    RoutedMessage,
    RouteOutcome,
)
from shared.models import ActivityRow, ContactRow, ConversationRow, MessageRow
from shared.service import service_app
from shared.settings import Settings
from shared.streams import (
    API_ROUTED,
    CLASSIFIED,
    CLASSIFIER,
    MSG_ID_HEADER,
    OUTBOUND_RESULT,
    RESPONDER,
    echo_subject,
    inbound_subject,
    provision,
    routed_msg_id,
    routed_subject,
)
from tests.events import generic_inbound, routed
from tests.stack import eventually

RowT = TypeVar("RowT", bound=SQLModel)


async def publish(js: JetStreamContext, decision: RoutedMessage, *, msg_id: str) -> None:
    await js.publish(
        routed_subject(decision),
        decision.model_dump_json().encode(),
        headers={MSG_ID_HEADER: msg_id},
    )


async def rows(sessions: async_sessionmaker[AsyncSession], entity: type[RowT]) -> list[RowT]:
    async with sessions() as session:
        return list((await session.execute(select(entity))).scalars())


async def test_each_routed_dm_and_echo_is_projected_once_with_its_decision(
    settings_factory: Callable[..., Settings], database_url: str
) -> None:
    settings = settings_factory(database_url=database_url)
    handed = generic_inbound("m-handoff", contact="ana")
    answered = generic_inbound("m-bot", contact="ben")
    spam = generic_inbound("m-spam", contact="cat")
    ignored = generic_inbound("m-ignored", contact="dan")
    echo = generic_inbound("m-echo", contact="ana", echo=True)
    decisions = [
        routed(handed, RouteOutcome.HANDOFF, priority=Priority.HIGH),
        routed(answered, RouteOutcome.BOT),
        routed(spam, RouteOutcome.CLOSED),
        routed(ignored, RouteOutcome.IGNORED),
    ]
    # The bot's reply was sent before the api saw its decision (separate consumers).
    sent = OutboundResult(
        request_id="bot:m-bot",
        conversation=answered.conversation,
        status=OutboundStatus.SENT,
        mid="mid.sent",
        author=Author.BOT,
    )
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    try:
        app = service_app(build(settings))
        async with app.router.lifespan_context(app):
            await js.publish(
                OUTBOUND_RESULT,
                sent.model_dump_json().encode(),
                headers={MSG_ID_HEADER: "result:bot:m-bot"},
            )
            for decision in decisions:
                await publish(js, decision, msg_id=routed_msg_id(decision.message))
                # Again after the dedupe window (another id): stored once all the same.
                await publish(js, decision, msg_id=f"again:{decision.message.mid}")
            await js.publish(
                echo_subject(Channel.GENERIC),
                echo.model_dump_json().encode(),
                headers={MSG_ID_HEADER: "generic:m-echo"},
            )
            sessions = app.state.sessions

            async def settled() -> tuple[int, int]:
                info = await js.consumer_info(settings.stream_name, API_ROUTED.durable)
                return info.num_pending, info.num_ack_pending

            await eventually(settled, lambda counts: counts == (0, 0), timeout=30)
            stored: list[MessageRow] = await eventually(
                lambda: rows(sessions, MessageRow),
                lambda found: len(found) == 6 and all(m.status != "pending" for m in found),
                timeout=30,
            )
            conversations: list[ConversationRow] = await rows(sessions, ConversationRow)
            contacts: list[ContactRow] = await rows(sessions, ContactRow)
            activity: list[ActivityRow] = await rows(sessions, ActivityRow)
    finally:
        await client.close()

    by_mid = {message.mid: message for message in stored}
    assert sorted(by_mid) == sorted(
        ["m-handoff", "m-bot", "m-spam", "m-ignored", "m-echo", "mid.sent"]
    ), "the bot's reply is stored under the platform's id its result gave"
    assert by_mid["m-handoff"].category == "order_shipping"
    request = by_mid["mid.sent"]
    assert (request.author, request.text, request.status) == ("bot", "It ships today.", "sent")
    assert request.request_id == "bot:m-bot"
    assert (by_mid["m-echo"].direction, by_mid["m-echo"].author) == ("outbound", "page")
    assert len(contacts) == 4
    contact_of = {contact.id: contact.platform_id for contact in contacts}
    by_contact = {contact_of[row.contact_id]: row for row in conversations}
    assert len(by_contact) == 4
    ana, ben, cat, dan = (by_contact[name] for name in ("ana", "ben", "cat", "dan"))
    assert (ana.status, ana.team, ana.priority) == ("open", "billing", "high")
    assert (ana.handoff_rule, ana.handoff_signals) == ("complaints", ["complaint"])
    assert ana.first_response_at is not None, "the echo is a human's response"
    assert (ben.status, ben.team) == ("pending", None)
    assert (cat.status, cat.tags) == ("resolved", ["spam"])
    assert (dan.status, dan.team, dan.category) == ("open", None, "order_shipping")
    decided = sorted((row.conversation_id, row.kind) for row in activity if "bot." in row.kind)
    assert decided == sorted(
        [(ana.id, "bot.handoff"), (ben.id, "bot.answered"), (cat.id, "bot.closed")]
    )
    [handoff] = [row for row in activity if row.kind == "bot.handoff"]
    assert "projected_at" in handoff.detail, "when it entered the queue (dmdesk bench)"


async def _conversation_of(
    sessions: async_sessionmaker[AsyncSession], done: Callable[[ConversationRow], bool]
) -> ConversationRow:
    async def found() -> list[ConversationRow]:
        return await rows(sessions, ConversationRow)

    [row] = await eventually(found, lambda found: len(found) == 1 and done(found[0]), timeout=30)
    return row


@pytest.mark.parametrize("behind", ["responder", "classifier", "responder never started"])
async def test_a_dm_whose_decision_is_late_is_queued_then_completed_once(
    settings_factory: Callable[..., Settings], database_url: str, behind: str
) -> None:
    settings = settings_factory(database_url=database_url, decision_late_seconds=1)
    message = generic_inbound("m-late", contact="eve")
    decision = routed(message, RouteOutcome.HANDOFF, priority=Priority.HIGH)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    try:
        # The stage that is behind has its durable, and nobody reads it (it is stopped).
        if behind.startswith("responder"):
            upstream = RESPONDER
            subject, body = CLASSIFIED, decision.classified.model_dump_json().encode()
        else:
            upstream = CLASSIFIER
            subject, body = inbound_subject(Channel.GENERIC), message.model_dump_json().encode()
        if behind != "responder never started":  # else the api creates its durable
            await provision(js, settings, upstream)
        else:
            await provision(js, settings)  # the stream only
        await js.publish(subject, body, headers={MSG_ID_HEADER: f"{behind}:m-late"})
        app = service_app(build(settings))
        async with app.router.lifespan_context(app):
            sessions = app.state.sessions
            queued = await _conversation_of(sessions, lambda row: row.status == "open")
            # The stage comes back: it takes its message, and its decision follows.
            pulled = await js.pull_subscribe_bind(upstream.durable, settings.stream_name)
            for msg in await pulled.fetch(1, timeout=5):
                await msg.ack()
            await publish(js, decision, msg_id=routed_msg_id(message))
            decided = await _conversation_of(sessions, lambda row: row.team is not None)
            stored: list[MessageRow] = await rows(sessions, MessageRow)
            activity: list[ActivityRow] = await rows(sessions, ActivityRow)
            late = app.state.metrics.registry.get_sample_value(
                "dmdesk_late_projections_total", {"upstream": upstream.durable}
            )
    finally:
        await client.close()

    assert queued.team is None, "in the queue before its decision"
    if behind.startswith("responder"):
        assert queued.category == "order_shipping", "from its classification"
    assert (decided.id, decided.team, decided.priority) == (queued.id, "billing", "high")
    assert [m.mid for m in stored] == ["m-late"]
    assert stored[0].category == "order_shipping"
    assert [row.kind for row in activity].count("bot.handoff") == 1
    assert late == 1


async def test_a_stage_that_is_only_behind_is_not_projected_early_a_stalled_one_is(
    settings_factory: Callable[..., Settings], database_url: str
) -> None:
    """A spike (the responder takes and acknowledges messages, but later than the bound) is
    left to the responder's decisions; the same backlog is projected once the responder
    stops taking messages."""
    # The held DM must not come back to the busy "responder" below (which would acknowledge
    # it): its ack wait outlasts the test however slow the machine (a 5 s wait did not).
    settings = settings_factory(
        database_url=database_url, decision_late_seconds=1, ack_wait_seconds=600
    )
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()

    async def classified(name: str) -> None:
        decision = routed(generic_inbound(f"m-{name}", contact=name), RouteOutcome.HANDOFF)
        body = decision.classified.model_dump_json().encode()
        await js.publish(CLASSIFIED, body, headers={MSG_ID_HEADER: f"behind:{name}"})

    try:
        await provision(js, settings, RESPONDER)
        await classified("held")
        pulled = await js.pull_subscribe_bind(RESPONDER.durable, settings.stream_name)
        (held,) = await pulled.fetch(1, timeout=5)  # taken, never acknowledged: the floor stays
        app = service_app(build(settings))
        async with app.router.lifespan_context(app):
            metrics = app.state.metrics.registry
            # Four bounds of a responder that keeps taking and deciding later DMs.
            for index in range(20):
                await classified(f"busy-{index}")
                for msg in await pulled.fetch(1, timeout=5):
                    await msg.ack()
                await asyncio.sleep(0.2)
            behind = metrics.get_sample_value(
                "dmdesk_late_projections_total", {"upstream": RESPONDER.durable}
            )
            assert await rows(app.state.sessions, ConversationRow) == []

            # The responder stops: the held DM (late by seconds now) reaches the queue.
            async def messages() -> list[MessageRow]:
                return await rows(app.state.sessions, MessageRow)

            stored = await eventually(
                messages, lambda found: "m-held" in {m.mid for m in found}, timeout=30
            )
        assert held.data  # (it was never acknowledged)
    finally:
        await client.close()

    assert behind is None, "no early projection while the responder moves"
    assert [m.direction for m in stored if m.mid == "m-held"] == ["inbound"]
