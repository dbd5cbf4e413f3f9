"""dmdesk's own replies projected (SQLite and PostgreSQL): one message under the platform's
mid, whatever order the request, its result, its echo and the receipts arrive in; and bot
containment decided once per conversation (issue #16)."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import projector
from services.api.housekeeping import Housekeeper
from services.api.metrics import ApiMetrics
from shared.bus import RetryLater
from shared.db import transaction
from shared.events import (
    Author,
    Channel,
    Contact,
    ConversationClosed,
    ConversationRef,
    InboundMessage,
    MessageUpdate,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    PlatformError,
    StatusEvent,
    StatusKind,
    UpdateKind,
    utcnow,
)
from shared.models import ContactRow, ConversationRow, MessageRow
from shared.settings import Settings, get_settings

# Recent: a reply requested more than an hour ago is no longer in flight.
T0 = utcnow().replace(microsecond=0) - timedelta(minutes=10)
OUR_APP = "1517924325178312"
METAS_INBOX = "263902037430900"
PLATFORM_MID = "m_platform-1"


@pytest.fixture(autouse=True)
def our_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DMDESK_META_APP_IDS", f'["{OUR_APP}"]')
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def ref(contact: str) -> ConversationRef:
    return ConversationRef(channel=Channel.MESSENGER, account_id="page-1", contact_id=contact)


def dm(contact: str, at: datetime = T0, mid: str | None = None) -> InboundMessage:
    return InboundMessage(
        mid=mid or f"m-{contact}",
        channel=Channel.MESSENGER,
        account_id="page-1",
        contact=Contact(platform_id=contact),
        text="where is my order?",
        is_request=True,
        platform_ts=at,
    )


def echo(contact: str, mid: str, app_id: str | None, at: datetime) -> InboundMessage:
    return InboundMessage(
        mid=mid,
        channel=Channel.MESSENGER,
        account_id="page-1",
        contact=Contact(platform_id=contact),
        text="Hello from the bot",
        is_echo=True,
        app_id=app_id,
        platform_ts=at,
    )


def request(contact: str, request_id: str, author: Author = Author.BOT) -> OutboundRequest:
    return OutboundRequest(
        request_id=request_id,
        conversation=ref(contact),
        text="Hello from the bot",
        author=author,
        requested_at=T0 + timedelta(seconds=1),
    )


def result(
    contact: str, request_id: str, mid: str, author: Author = Author.BOT, at: datetime | None = None
) -> OutboundResult:
    return OutboundResult(
        request_id=request_id,
        conversation=ref(contact),
        status=OutboundStatus.SENT,
        mid=mid,
        author=author,
        finished_at=at or T0 + timedelta(seconds=2),
    )


def receipt(contact: str, kind: StatusKind, **where: Any) -> StatusEvent:
    return StatusEvent(
        event_id=f"{kind.value}-{contact}",
        kind=kind,
        conversation=ref(contact),
        platform_ts=T0 + timedelta(seconds=5),
        **where,
    )


async def project(sessions: async_sessionmaker[AsyncSession], *events: Any, **kw: Any) -> None:
    functions = {
        InboundMessage: projector.project_inbound,
        OutboundRequest: projector.project_outbound_requested,
        OutboundResult: projector.project_outbound_result,
        StatusEvent: projector.project_status,
        MessageUpdate: projector.project_update,
        ConversationClosed: projector.project_closed,
    }
    for event in events:
        async with transaction(sessions) as session:
            await session.run_sync(functions[type(event)], event, **kw)  # type: ignore[arg-type]


async def state(
    sessions: async_sessionmaker[AsyncSession], contact: str
) -> tuple[ConversationRow, list[MessageRow]]:
    async with sessions() as session:
        conversation = (
            await session.execute(
                select(ConversationRow)
                .join(ContactRow, ContactRow.id == ConversationRow.contact_id)  # type: ignore[arg-type]
                .where(ContactRow.platform_id == contact)
            )
        ).scalar_one()
        found = await session.execute(
            select(MessageRow)
            .where(MessageRow.conversation_id == conversation.id)
            .where(MessageRow.direction == "outbound")
        )
        return conversation, list(found.scalars())


ORDERS = {
    "request_result_echo": ("request", "result", "echo"),
    "request_echo_result": ("request", "echo", "result"),
    "echo_result_request": ("echo", "result", "request"),
    "result_echo_request": ("result", "echo", "request"),
    "echo_request_result": ("echo", "request", "result"),
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
async def test_the_bots_reply_is_one_message_under_the_platforms_mid_in_any_order(
    sessions: async_sessionmaker[AsyncSession], order: tuple[str, ...]
) -> None:
    contact = "order-" + "-".join(order)
    events = {
        "request": request(contact, "bot-1"),
        "result": result(contact, "bot-1", PLATFORM_MID),
        "echo": echo(contact, PLATFORM_MID, OUR_APP, T0 + timedelta(seconds=2)),
    }
    await project(sessions, dm(contact))
    await project(sessions, *(events[name] for name in order))
    await project(
        sessions,
        receipt(contact, StatusKind.DELIVERED, mids=[PLATFORM_MID]),
        receipt(contact, StatusKind.READ, watermark=T0 + timedelta(seconds=5)),
        MessageUpdate(
            event_id=f"react-{contact}",
            kind=UpdateKind.REACT,
            conversation=ref(contact),
            mid=PLATFORM_MID,
            emoji="👍",
            platform_ts=T0 + timedelta(seconds=6),
        ),
    )
    conversation, [reply] = await state(sessions, contact)
    assert (reply.mid, reply.author, reply.status) == (PLATFORM_MID, "bot", "read")
    assert (reply.request_id, reply.text) == ("bot-1", "Hello from the bot")
    assert reply.reactions == {"customer": "👍"}
    assert conversation.first_response_at is None, "the bot's echo is not a person's response"
    assert not conversation.is_request, "the page answered"
    assert conversation.bot_replied_at is not None


async def test_a_recorded_mid_is_ours_whatever_app_the_echo_names(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await project(sessions, dm("ana"), request("ana", "bot-1"), result("ana", "bot-1", "m_1"))
    await project(sessions, echo("ana", "m_1", METAS_INBOX, T0 + timedelta(seconds=3)))
    conversation, [reply] = await state(sessions, "ana")
    assert reply.author == "bot"
    assert conversation.first_response_at is None


async def test_an_echo_from_another_app_is_a_persons_reply_and_response(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await project(sessions, dm("ben"), request("ben", "bot-1"))  # a send in flight
    await project(sessions, echo("ben", "m_inbox", METAS_INBOX, T0 + timedelta(seconds=3)))
    conversation, replies = await state(sessions, "ben")
    assert sorted((m.author, m.mid) for m in replies) == [
        ("bot", "request:bot-1"),
        ("page", "m_inbox"),
    ]
    assert conversation.first_response_at == T0 + timedelta(seconds=3)
    assert not conversation.is_request


async def test_an_agents_reply_and_its_early_echo_are_one_human_response(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await project(
        sessions,
        dm("cy"),
        request("cy", "agent-1", Author.AGENT),
        echo("cy", "m_agent", OUR_APP, T0 + timedelta(seconds=2)),
    )
    conversation, early = await state(sessions, "cy")
    assert sorted(m.mid for m in early) == ["m_agent", "request:agent-1"], "until the result"
    assert conversation.first_response_at is None, "an echo of ours is no response"
    await project(sessions, result("cy", "agent-1", "m_agent", Author.AGENT))
    await project(sessions, result("cy", "agent-1", "m_agent", Author.AGENT))  # redelivered
    conversation, [reply] = await state(sessions, "cy")
    assert (reply.mid, reply.author, reply.status) == ("m_agent", "agent", "sent")
    assert conversation.first_response_at == T0 + timedelta(seconds=2)


async def test_whatsapp_failed_status_marks_the_reply_failed_with_metas_error(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await project(sessions, dm("dee"), request("dee", "bot-1"), result("dee", "bot-1", "m_d"))
    error = PlatformError(code=131047, message="Re-engagement message")
    await project(sessions, receipt("dee", StatusKind.FAILED, mids=["m_d"], error=error))
    _, [reply] = await state(sessions, "dee")
    assert (reply.status, reply.error) == ("failed", "Re-engagement message")


async def test_bot_containment_is_decided_once_per_conversation(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A known sequence: contained by resolution, by idleness, escalated by a person;
    a conversation the bot never replied in counts nowhere."""
    metrics = ApiMetrics(CollectorRegistry())
    later = T0 + timedelta(minutes=5)
    # resolved after the bot's answer: contained
    await project(sessions, dm("res"), request("res", "b-res"), result("res", "b-res", "m_res"))
    closed = ConversationClosed(
        conversation=ref("res"), trigger_mid="m-res", reason="done", decided_at=later
    )
    await project(sessions, closed, metrics=metrics)
    # an agent replied after the bot: escalated, and resolving it later changes nothing
    await project(
        sessions,
        dm("esc"),
        request("esc", "b-esc"),
        result("esc", "b-esc", "m_esc"),
        request("esc", "a-esc", Author.AGENT),
        metrics=metrics,
    )
    await project(sessions, result("esc", "a-esc", "m_esc_agent", Author.AGENT), metrics=metrics)
    await project(
        sessions,
        ConversationClosed(
            conversation=ref("esc"), trigger_mid="m-esc", reason="done", decided_at=later
        ),
        metrics=metrics,
    )
    # the bot answered, then silence: contained once idle
    await project(sessions, dm("idle"), request("idle", "b-idle"), result("idle", "b-idle", "m_i"))
    # the bot never replied: an agent's answer decides nothing
    await project(
        sessions,
        dm("agent"),
        request("agent", "a-agent", Author.AGENT),
        result("agent", "a-agent", "m_a", Author.AGENT),
        metrics=metrics,
    )
    housekeeper = Housekeeper(
        sessions, Settings(bot_contained_after_hours=1), _no_send, metrics, interval_seconds=60
    )
    async with transaction(sessions) as session:
        await housekeeper.contain_idle(session, T0 + timedelta(minutes=30))  # not idle yet
    async with transaction(sessions) as session:
        await housekeeper.contain_idle(session, T0 + timedelta(hours=2))
    async with transaction(sessions) as session:
        await housekeeper.contain_idle(session, T0 + timedelta(hours=3))  # counted already

    outcomes = {c: (await state(sessions, c))[0].bot_outcome for c in ("res", "esc", "idle")}
    assert outcomes == {"res": "contained", "esc": "escalated", "idle": "contained"}
    assert (await state(sessions, "agent"))[0].bot_outcome is None
    counted = {
        outcome: metrics.registry.get_sample_value(
            "dmdesk_bot_containment_total", {"outcome": outcome}
        )
        for outcome in ("contained", "escalated")
    }
    assert counted == {"contained": 2.0, "escalated": 1.0}


async def _no_send(request: OutboundRequest) -> None:
    raise AssertionError("containment sends nothing")


async def test_a_status_before_the_send_apis_answer_waits_for_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await project(sessions, dm("eve"), request("eve", "bot-1"))
    early = receipt("eve", StatusKind.READ, mids=["m_e"])
    with pytest.raises(RetryLater):
        await project(sessions, early)
    # A watermark does not make a reply not sent yet read.
    await project(sessions, receipt("eve", StatusKind.READ, watermark=T0 + timedelta(hours=1)))
    _, [pending] = await state(sessions, "eve")
    assert pending.status == "pending"
    await project(sessions, result("eve", "bot-1", "m_e"), early)
    _, [reply] = await state(sessions, "eve")
    assert (reply.mid, reply.status) == ("m_e", "read")


async def test_a_status_for_an_unknown_mid_with_nothing_in_flight_changes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await project(sessions, dm("fay"), request("fay", "bot-1"), result("fay", "bot-1", "m_f"))
    await project(sessions, receipt("fay", StatusKind.DELIVERED, mids=["m_elsewhere"]))
    _, [reply] = await state(sessions, "fay")
    assert reply.status == "sent"


async def test_a_reaction_before_the_send_apis_answer_waits_for_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await project(sessions, dm("gus"), request("gus", "bot-1"))
    reaction = MessageUpdate(
        event_id="react-gus",
        kind=UpdateKind.REACT,
        conversation=ref("gus"),
        mid="m_g",
        emoji="❤️",
        platform_ts=T0 + timedelta(seconds=3),
    )
    with pytest.raises(RetryLater):
        await project(sessions, reaction)
    await project(sessions, result("gus", "bot-1", "m_g"), reaction)
    _, [reply] = await state(sessions, "gus")
    assert reply.reactions == {"customer": "❤️"}


async def test_a_reply_requested_long_ago_without_a_result_is_not_in_flight(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    stuck = request("hal", "bot-1").model_copy(update={"requested_at": T0 - timedelta(hours=2)})
    await project(sessions, dm("hal"), stuck)
    await project(sessions, receipt("hal", StatusKind.DELIVERED, mids=["m_elsewhere"]))
    _, [reply] = await state(sessions, "hal")
    assert reply.status == "pending"
