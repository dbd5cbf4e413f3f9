"""Group commit: concurrent projections share transactions, and fail alone or together."""

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlmodel import col

from services.api import projector
from services.api.writer import (
    Group,
    Load,
    ProjectionWriter,
    Work,
    after_commit,
    writer_sessions,
)
from shared.db import create_sync_engine
from shared.events import (
    Author,
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    ConversationChanged,
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
from shared.models import ContactRow, ConversationRow, MessageRow, SlaClockRow
from tests.events import routed, sent_result

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def message(mid: str, contact: str | None = None, at: datetime = T0) -> InboundMessage:
    return InboundMessage(
        mid=mid,
        channel=Channel.MESSENGER,
        account_id="page-1",
        contact=Contact(platform_id=contact or f"psid-{mid}", name="Ana"),
        text=f"hello {mid}",
        platform_ts=at,
    )


class Recorder:
    """What the writer reports after each commit."""

    def __init__(self) -> None:
        self.groups: list[set[int]] = []
        self.changes: list[ConversationChanged] = []

    async def __call__(self, group: Group) -> None:
        self.groups.append({change.conversation_id for change in group.changed})
        self.changes.extend(group.changed)


@pytest.fixture
async def writer(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> AsyncIterator[tuple[ProjectionWriter, Recorder]]:
    """A writer on the database ``sessions`` migrated, with the api's blocking driver."""
    engine = create_sync_engine(database_url)
    recorder = Recorder()
    running = ProjectionWriter(writer_sessions(engine), recorder)
    yield running, recorder
    await running.stop()
    engine.dispose()


async def stored_mids(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(select(MessageRow.mid).order_by(MessageRow.mid))
        return list(rows.scalars())


def project(mid: str) -> Work:
    def work(session: Session) -> object:
        return projector.project_inbound(session, message(mid))

    return work


async def test_concurrent_projections_are_committed_in_shared_transactions(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, recorder = writer
    mids = [f"m-{index:03d}" for index in range(100)]
    await asyncio.gather(*(running.apply(project(mid)) for mid in mids))

    assert await stored_mids(sessions) == mids
    assert len(recorder.groups) < len(mids), "every projection had a transaction of its own"
    assert sum(len(group) for group in recorder.groups) == len(mids)  # one conversation each


async def test_a_failing_projection_rolls_back_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, recorder = writer

    def half_done_then_fails(session: Session) -> object:
        projector.project_inbound(session, message("m-bad"))
        raise ValueError("a bug in this projection")

    outcomes = await asyncio.gather(
        running.apply(project("m-1")),
        running.apply(half_done_then_fails),
        running.apply(project("m-2")),
        return_exceptions=True,
    )

    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], ValueError)
    assert await stored_mids(sessions) == ["m-1", "m-2"]
    # The change feed hears of what was committed, not of the rolled-back conversation.
    assert {change.contact_id for change in recorder.changes} == {"psid-m-1", "psid-m-2"}


async def test_a_pull_handed_over_in_one_call_gets_each_outcome_in_order(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    engine = create_sync_engine(database_url)
    recorder = Recorder()
    running = ProjectionWriter(writer_sessions(engine), recorder, max_group=2)

    def fails(session: Session) -> object:
        projector.project_inbound(session, message("m-bad"))
        raise ValueError("a bug in this projection")

    pulls = [[project("m-1"), fails, project("m-2")], [project("m-3")], []]
    try:
        first, second, third = await asyncio.gather(*(running.apply_all(p) for p in pulls))
    finally:
        await running.stop()
        engine.dispose()

    assert first[0] is None
    assert isinstance(first[1], ValueError)
    assert first[2] is None
    assert second == [None]
    assert third == []
    assert await stored_mids(sessions) == ["m-1", "m-2", "m-3"]
    # A pull is never split, even when it is larger than a group.
    conversations = {change.contact_id: change.conversation_id for change in recorder.changes}
    assert any(
        {conversations["psid-m-1"], conversations["psid-m-2"]} <= group for group in recorder.groups
    )


async def test_a_database_outage_fails_the_whole_group_and_commits_nothing(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, recorder = writer

    starting_up = psycopg.OperationalError("the database system is starting up")

    def database_gone(session: Session) -> object:
        raise OperationalError("SELECT 1", None, starting_up)

    outcomes = await asyncio.gather(
        running.apply(project("m-1")),
        running.apply(database_gone),
        running.apply(project("m-2")),
        return_exceptions=True,
    )

    assert all(
        isinstance(outcome, OperationalError) and outcome.orig is starting_up
        for outcome in outcomes
    )
    assert await stored_mids(sessions) == []
    assert recorder.groups == []

    # The writer carries on with the next group (the redeliveries).
    await asyncio.gather(running.apply(project("m-1")), running.apply(project("m-2")))
    assert await stored_mids(sessions) == ["m-1", "m-2"]


async def test_stopping_cancels_waiting_handlers_and_lets_the_running_group_finish(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    started, release = threading.Event(), threading.Event()

    def slow(session: Session) -> object:
        started.set()
        release.wait(30)
        return None

    waiting = asyncio.create_task(running.apply(slow))
    assert await asyncio.to_thread(started.wait, 30)
    queued = asyncio.create_task(running.apply(project("m-1")))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(running.stop())
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(asyncio.CancelledError):
        await queued
    await asyncio.sleep(0.1)
    assert not stopping.done(), "stop() returned while a group was still on the thread"
    release.set()
    await stopping
    assert await stored_mids(sessions) == []


async def test_metrics_count_once_when_a_failure_makes_the_group_apply_again(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    counted: list[str] = []

    def counting(mid: str) -> Work:
        def work(session: Session) -> object:
            projector.project_inbound(session, message(mid))
            after_commit(session, lambda: counted.append(mid))
            assert counted == [], "an effect ran before its transaction committed"
            return None

        return work

    def fails_after_counting(session: Session) -> object:
        after_commit(session, lambda: counted.append("m-bad"))
        raise ValueError("a bug in this projection")

    outcomes = await asyncio.gather(
        running.apply(counting("m-1")),
        running.apply(fails_after_counting),
        running.apply(counting("m-2")),
        return_exceptions=True,
    )

    assert isinstance(outcomes[1], ValueError)
    assert sorted(counted) == ["m-1", "m-2"]
    assert await stored_mids(sessions) == ["m-1", "m-2"]


async def test_no_metric_counts_for_a_group_the_database_refused(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    counted: list[str] = []

    def counts_then_database_gone(session: Session) -> object:
        after_commit(session, lambda: counted.append("lost"))
        raise OperationalError("SELECT 1", None, psycopg.OperationalError("server closed"))

    with pytest.raises(OperationalError):
        await running.apply(counts_then_database_gone)
    await running.apply(project("m-1"))
    assert counted == []


def conversation_life(contact: str) -> list[Work]:
    """Every kind of event a conversation goes through, in an order the bus may deliver."""
    ref = ConversationRef(channel=Channel.MESSENGER, account_id="page-1", contact_id=contact)
    first, second = (
        message(f"{contact}-1", contact),
        message(f"{contact}-2", contact, T0 + timedelta(minutes=30)),
    )
    classification = Classification(
        category=Category.ORDER_SHIPPING,
        confidence=0.9,
        priority=Priority.HIGH,
        language="en",
        model_version="test",
    )
    requested = OutboundRequest(
        request_id=f"{contact}-r1",
        conversation=ref,
        text="on its way",
        author=Author.AGENT,
        requested_at=T0 + timedelta(minutes=5),
    )
    events: list[tuple[Callable[[Session, Any], object], Any]] = [
        (
            projector.project_handoff,
            Handoff(
                conversation=ref,
                trigger_mid=first.mid,
                team="support",
                priority=Priority.NORMAL,
                reason="no rule",
            ),
        ),
        (projector.project_inbound, first),
        (
            projector.project_classified,
            ClassifiedMessage(message=first, classification=classification),
        ),
        (
            projector.project_outbound_result,
            OutboundResult(
                request_id=requested.request_id,
                conversation=ref,
                status=OutboundStatus.SENT,
                mid=f"{contact}-o1",
                author=Author.AGENT,
                finished_at=T0 + timedelta(minutes=6),
            ),
        ),
        (projector.project_outbound_requested, requested),
        (
            projector.project_status,
            StatusEvent(
                event_id=f"{contact}-read",
                kind=StatusKind.READ,
                conversation=ref,
                watermark=T0 + timedelta(minutes=7),
                platform_ts=T0 + timedelta(minutes=7),
            ),
        ),
        (projector.project_inbound, second),
        (
            projector.project_update,
            MessageUpdate(
                event_id=f"{contact}-edit",
                kind=UpdateKind.EDIT,
                conversation=ref,
                mid=second.mid,
                text="hello again",
                platform_ts=T0 + timedelta(minutes=31),
            ),
        ),
        (projector.project_inbound, first),  # redelivered
    ]
    return [applying(projection, event) for projection, event in events]


def applying(projection: Callable[[Session, Any], object], event: Any) -> Work:
    def work(session: Session) -> object:
        return projection(session, event)

    return work


async def state_of(sessions: async_sessionmaker[AsyncSession], contact: str) -> dict[str, Any]:
    """The conversation, its messages and clocks, without ids, names or the times of writing
    (a conversation first seen in a hand-off is created "now")."""
    async with sessions() as session:
        conversation = (
            await session.execute(
                select(ConversationRow)
                .join(ContactRow, col(ContactRow.id) == col(ConversationRow.contact_id))
                .where(col(ContactRow.platform_id) == contact)
            )
        ).scalar_one()
        messages = await session.execute(
            select(MessageRow)
            .where(col(MessageRow.conversation_id) == conversation.id)
            .order_by(col(MessageRow.platform_ts))
        )
        clocks = await session.execute(
            select(SlaClockRow)
            .where(col(SlaClockRow.conversation_id) == conversation.id)
            .order_by(col(SlaClockRow.started_at), col(SlaClockRow.metric))
        )
        unnamed = {
            "id",
            "conversation_id",
            "contact_id",
            "mid",
            "policy_id",
            "updated_at",
            "request_id",
        }
        return {
            "conversation": conversation.model_dump(exclude=unnamed | {"created_at"}),
            "messages": [
                row.model_dump(exclude=unnamed | {"received_at", "classification"})
                | {"text": (row.text or "").replace(contact, "<contact>")}
                for row in messages.scalars()
            ],
            "clocks": [row.model_dump(exclude=unnamed) for row in clocks.scalars()],
        }


async def test_a_conversation_projected_in_one_group_ends_as_one_event_per_transaction(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, recorder = writer

    def whole_life(session: Session) -> object:
        for work in conversation_life("grouped"):
            work(session)
        return None

    await running.apply(whole_life)
    for work in conversation_life("alone"):
        await running.apply(work)

    grouped, alone = await state_of(sessions, "grouped"), await state_of(sessions, "alone")
    assert grouped == alone
    # The change feed gets the state the group committed, once for the group.
    [change] = [change for change in recorder.changes if change.contact_id == "grouped"]
    committed = grouped["conversation"]
    assert (change.status, change.team, change.priority, change.category) == (
        committed["status"],
        committed["team"],
        committed["priority"],
        committed["category"],
    )
    assert change.sla_due_at == committed["sla_due_at"]
    # And the life did happen: a high-priority order issue, answered, then asked again.
    assert grouped["conversation"]["priority"] == Priority.HIGH.value
    assert grouped["conversation"]["team"] == "support"
    assert [m["status"] for m in grouped["messages"]] == ["received", "read", "received"]
    assert grouped["messages"][2]["text"] == "hello again"
    assert {(c["metric"], c["state"]) for c in grouped["clocks"]} >= {
        ("first_response", "met"),
        ("next_response", "running"),
    }


def routed_life(contact: str) -> list[RoutedMessage]:
    """A bot answer, the customer writing again and handed to a team, the first DM again."""
    first, second = (
        message(f"{contact}-1", contact),
        message(f"{contact}-2", contact, T0 + timedelta(minutes=30)),
    )
    return [
        routed(first, RouteOutcome.BOT, at=T0 + timedelta(seconds=1)),
        routed(second, RouteOutcome.HANDOFF, priority=Priority.HIGH, at=T0 + timedelta(minutes=31)),
        routed(first, RouteOutcome.BOT, at=T0 + timedelta(seconds=1)),  # redelivered, same pull
    ]


async def test_a_pull_of_routed_dms_applied_set_based_ends_as_each_applied_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    pull = [*routed_life("set"), *routed_life("set-other")]
    works = [applying(projector.project_routed, event) for event in pull]
    outcomes = await running.apply_all(
        works,
        [Load(projector.prefetch_routed, pull)],  # one prefetch for the pull
    )
    assert outcomes == [None] * len(works)
    for event in routed_life("alone"):
        await running.apply(applying(projector.project_routed, event))

    grouped, alone = await state_of(sessions, "set"), await state_of(sessions, "alone")
    assert grouped == alone
    assert grouped["conversation"]["team"] == "billing"
    assert [m["author"] for m in grouped["messages"]].count("bot") == 1
    assert len(grouped["messages"]) == 3, "two DMs and the bot's reply, each once"


async def test_two_pulls_in_one_group_load_once_over_both_and_end_as_each_applied_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, recorder = writer
    loaded: list[int] = []

    def prefetch_routed(session: Session, events: list[RoutedMessage]) -> None:
        loaded.append(len(events))
        projector.prefetch_routed(session, events)

    pulls = [routed_life("two-a"), routed_life("two-b")]
    # Handed over at once, as two pulls in hand are: both wait for the same group.
    outcomes = await asyncio.gather(
        *(
            running.apply_all(
                [applying(projector.project_routed, event) for event in pull],
                [Load(prefetch_routed, pull)],
            )
            for pull in pulls
        )
    )
    assert outcomes == [[None] * 3, [None] * 3]
    assert len(recorder.groups) == 1, "one group"
    assert loaded == [6], "one load over both pulls' events"
    for event in routed_life("alone"):
        await running.apply(applying(projector.project_routed, event))

    alone = await state_of(sessions, "alone")
    for contact in ("two-a", "two-b"):
        assert await state_of(sessions, contact) == alone


def results_of(contact: str) -> list[OutboundResult]:
    """The Send API's answers to the bot's replies of :func:`routed_life`, and a redelivery."""
    bot = next(event for event in routed_life(contact) if event.outcome == RouteOutcome.BOT)
    sent = sent_result(bot, f"{contact}-sent", T0 + timedelta(seconds=2))
    return [sent, sent]


async def test_a_pull_of_outbound_results_applied_with_its_prefetch_ends_as_each_applied_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    for contact in ("set", "set-other", "alone"):
        for event in routed_life(contact):
            await running.apply(applying(projector.project_routed, event))
    pull = [*results_of("set"), *results_of("set-other")]
    works = [applying(projector.project_outbound_result, event) for event in pull]
    outcomes = await running.apply_all(works, [Load(projector.prefetch_results, pull)])
    assert outcomes == [None] * len(works)
    for event in results_of("alone"):
        await running.apply(applying(projector.project_outbound_result, event))

    grouped, alone = await state_of(sessions, "set"), await state_of(sessions, "alone")
    assert grouped == alone
    [reply] = [m for m in grouped["messages"] if m["author"] == "bot"]
    assert reply["status"] == "sent"
    assert grouped["conversation"]["bot_replied_at"] is not None
    async with sessions() as session:
        mids = set((await session.execute(select(col(MessageRow.mid)))).scalars())
    assert {"set-sent", "set-other-sent", "alone-sent"} <= mids, "under the platform's ids"


async def test_a_routed_dm_stored_before_its_pull_is_classified_once_like_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    # The late-decision path stored the message first; the pull's prefetch then inserts
    # only the messages that are new, and this one is classified by its projection.
    running, _ = writer
    for contact in ("late", "late-alone"):
        first = routed_life(contact)[0]
        await running.apply(applying(projector.project_inbound, first.message))
    pull = routed_life("late")
    outcomes = await running.apply_all(
        [applying(projector.project_routed, event) for event in pull],
        [Load(projector.prefetch_routed, pull)],
    )
    assert outcomes == [None] * len(pull)
    for event in routed_life("late-alone"):
        await running.apply(applying(projector.project_routed, event))

    grouped, alone = await state_of(sessions, "late"), await state_of(sessions, "late-alone")
    assert grouped == alone
    customer = [m for m in grouped["messages"] if m["author"] == "customer"]
    assert len(customer) == 2
    assert all(m["category"] is not None for m in customer), "each DM classified"


def routed_pull(running: ProjectionWriter, pull: list[RoutedMessage]) -> Any:
    """Hand ``pull`` to the writer as the api's routed consumer does: with its prefetch."""
    works = [applying(projector.project_routed, event) for event in pull]
    return running.apply_all(works, [Load(projector.prefetch_routed, pull)])


async def one_at_a_time(running: ProjectionWriter, projection: Any, events: list[Any]) -> None:
    """Each event in a transaction of its own, without prefetch: the reference."""
    for event in events:
        await running.apply(applying(projection, event))


@contextlib.contextmanager
def statements(running: ProjectionWriter, prefix: str) -> Iterator[list[str]]:
    """The statements starting with ``prefix`` that the writer runs meanwhile."""
    engine = running.sessions.kw["bind"]
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(prefix):
            seen.append(statement)

    sqlalchemy_event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", count)


def by_contact(selects: list[str]) -> list[str]:
    """The look-ups of conversations by their contacts (not the change feed's reads)."""
    return [statement for statement in selects if "conversations.contact_id IN" in statement]


def customer_dm(contact: str, n: int = 1) -> RoutedMessage:
    """The ``n``-th DM of ``contact``, answered by the bot."""
    at = T0 + timedelta(minutes=n)
    return routed(message(f"{contact}-{n}", contact, at), RouteOutcome.BOT, at=at)


async def test_dms_of_new_contacts_look_up_no_conversation_nor_clocks_and_known_ones_do(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    new = [customer_dm(f"first-{n}") for n in range(6)]
    with (
        statements(running, "SELECT conversations") as conversations,
        statements(running, "SELECT sla_clocks") as clocks,
    ):
        assert await routed_pull(running, new) == [None] * len(new)
    # The conversations created are read back (locked): one look-up by contact; none
    # before the insert, and no clocks (a contact created in this transaction has neither).
    assert len(by_contact(conversations)) == 1
    assert clocks == []
    again = [customer_dm(f"first-{n}", 2) for n in range(3)]
    with (
        statements(running, "SELECT conversations") as conversations,
        statements(running, "SELECT sla_clocks") as clocks,
    ):
        assert await routed_pull(running, again) == [None] * len(again)
    assert len(by_contact(conversations)) == 1
    assert len(clocks) == 1
    # The same rows as one DM at a time, without the prefetch.
    for n in range(2):
        await one_at_a_time(
            running,
            projector.project_routed,
            [customer_dm(f"first-alone-{n}"), customer_dm(f"first-alone-{n}", 2)],
        )
    grouped = await state_of(sessions, "first-0")
    assert grouped == await state_of(sessions, "first-alone-0")
    assert len(grouped["clocks"]) > 0, "the clocks the DMs started are stored"


async def test_a_pull_inserts_its_messages_and_requests_with_one_statement_each(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    pull = [customer_dm(f"count-{n}") for n in range(20)]
    with statements(running, "INSERT INTO messages") as inserts:
        assert await routed_pull(running, pull) == [None] * len(pull)
    # 20 DMs and their 20 replies: a multi-row INSERT for each kind, not one per DM.
    assert len(inserts) == 2
    async with sessions() as session:
        rows = (await session.execute(select(MessageRow))).scalars().all()
    assert sorted(row.author for row in rows) == ["bot"] * 20 + ["customer"] * 20
    assert all(row.category is not None for row in rows if row.author == "customer")
    assert all(row.text == "It ships today." for row in rows if row.author == "bot")


async def test_conversations_changed_differently_in_a_pull_are_updated_with_one_statement(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    # Known conversations (their first DM applied before), then a pull in which the bot
    # answers every other one (status) and a team takes the rest (team, priority).
    contacts = [f"alike-{n}" for n in range(12)]
    await routed_pull(running, [customer_dm(contact) for contact in contacts])
    pull = [
        routed(
            message(f"{contact}-2", contact, T0 + timedelta(minutes=5)),
            RouteOutcome.BOT if n % 2 else RouteOutcome.HANDOFF,
            priority=Priority.HIGH,
            at=T0 + timedelta(minutes=5),
        )
        for n, contact in enumerate(contacts)
    ]
    with statements(running, "UPDATE conversations") as updates:
        assert await routed_pull(running, pull) == [None] * len(pull)
    assert len(updates) == 1, "one executemany for the pull's conversations, not one each"
    for n, contact in enumerate(contacts[:2]):
        alone = f"alike-alone-{n}"
        await one_at_a_time(
            running,
            projector.project_routed,
            [
                customer_dm(alone),
                routed(
                    message(f"{alone}-2", alone, T0 + timedelta(minutes=5)),
                    RouteOutcome.BOT if n % 2 else RouteOutcome.HANDOFF,
                    priority=Priority.HIGH,
                    at=T0 + timedelta(minutes=5),
                ),
            ],
        )
        assert await state_of(sessions, contact) == await state_of(sessions, alone)


async def test_the_same_dm_in_two_pulls_of_one_group_is_stored_once_like_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, recorder = writer
    pull = [*routed_life("twice"), *routed_life("twice-other")]
    # Handed over together: one group, two prefetches that both find the DMs new.
    with statements(running, "SAVEPOINT") as savepoints:
        first, second = await asyncio.gather(routed_pull(running, pull), routed_pull(running, pull))
    assert first == second == [None] * len(pull)
    assert savepoints == [], "applied with the prefetches, not retried one by one"
    assert len(recorder.groups) == 1, "the two pulls shared a transaction"
    await one_at_a_time(running, projector.project_routed, routed_life("twice-alone"))

    grouped, reference = await state_of(sessions, "twice"), await state_of(sessions, "twice-alone")
    assert grouped == reference
    assert len(grouped["messages"]) == 3, "two DMs and the bot's reply, each once"


async def test_a_redelivered_pull_changes_nothing(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    pull = routed_life("again")
    assert await routed_pull(running, pull) == [None] * len(pull)
    before = await state_of(sessions, "again")
    assert await routed_pull(running, pull) == [None] * len(pull)
    assert await state_of(sessions, "again") == before


async def test_a_failing_projection_in_a_prefetched_pull_fails_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    # The group is applied again without prefetches, each projection in a savepoint: the
    # others store their DMs (once), the failing one nothing.
    running, _ = writer
    pull = [*routed_life("good"), customer_dm("bad")]
    works = [applying(projector.project_routed, event) for event in pull]

    def half_done_then_fails(session: Session) -> object:
        works[-1](session)
        raise ValueError("a bug in this projection")

    outcomes = await running.apply_all(
        [*works[:-1], half_done_then_fails], [Load(projector.prefetch_routed, pull)]
    )
    assert outcomes[:-1] == [None] * (len(pull) - 1)
    assert isinstance(outcomes[-1], ValueError)
    await one_at_a_time(running, projector.project_routed, routed_life("good-alone"))

    assert await state_of(sessions, "good") == await state_of(sessions, "good-alone")
    assert not [mid for mid in await stored_mids(sessions) if mid.startswith("bad")]
    # Redelivered, the failed DM is projected in full.
    assert await routed_pull(running, [customer_dm("bad")]) == [None]
    await one_at_a_time(running, projector.project_routed, [customer_dm("bad-alone")])
    assert await state_of(sessions, "bad") == await state_of(sessions, "bad-alone")


async def test_a_dm_projected_early_in_the_same_group_as_its_decision_ends_as_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    # The late-decision path: dm.classified projected early, dm.routed in another pull of
    # the same group (whose prefetch runs before either projection).
    running, recorder = writer

    def early(contact: str) -> ClassifiedMessage:
        decision = customer_dm(contact)
        return ClassifiedMessage(message=decision.message, classification=decision.classification)

    with statements(running, "SAVEPOINT") as savepoints:
        classified, decided = await asyncio.gather(
            running.apply_all([applying(projector.project_classified, early("early"))]),
            routed_pull(running, [customer_dm("early")]),
        )
    assert classified == decided == [None]
    assert savepoints == []
    assert len(recorder.groups) == 1
    await one_at_a_time(running, projector.project_classified, [early("early-alone")])
    await one_at_a_time(running, projector.project_routed, [customer_dm("early-alone")])

    grouped, reference = await state_of(sessions, "early"), await state_of(sessions, "early-alone")
    assert grouped == reference
    assert {(c["metric"], c["state"]) for c in grouped["clocks"]}, "the DM's clocks started"


def result_of(decision: RoutedMessage) -> OutboundResult:
    """The Send API's answer to the bot's reply of ``decision``."""
    [request] = decision.requests
    return OutboundResult(
        request_id=request.request_id,
        conversation=request.conversation,
        status=OutboundStatus.SENT,
        mid=f"{request.request_id}-sent",
        author=Author.BOT,
        finished_at=request.requested_at + timedelta(seconds=2),
    )


def results_pull(running: ProjectionWriter, results: list[OutboundResult]) -> Any:
    works = [applying(projector.project_outbound_result, result) for result in results]
    return running.apply_all(works, [Load(projector.prefetch_results, results)])


async def test_a_result_before_its_request_ends_as_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    # The result stores the reply; the request's row, upserted by its pull's prefetch,
    # gets the text and stays as the result left it.
    running, _ = writer
    for contact, apply in (("result-first", "pulls"), ("result-first-alone", "alone")):
        earlier, later = customer_dm(contact, 1), customer_dm(contact, 2)
        if apply == "pulls":
            assert await routed_pull(running, [earlier]) == [None]
            assert await results_pull(running, [result_of(later)]) == [None]
            assert await routed_pull(running, [later]) == [None]
        else:
            await one_at_a_time(running, projector.project_routed, [earlier])
            await one_at_a_time(running, projector.project_outbound_result, [result_of(later)])
            await one_at_a_time(running, projector.project_routed, [later])

    grouped = await state_of(sessions, "result-first")
    assert grouped == await state_of(sessions, "result-first-alone")
    replies = [(m["status"], m["text"]) for m in grouped["messages"] if m["author"] == "bot"]
    assert replies == [("pending", "It ships today."), ("sent", "It ships today.")]


async def test_a_flush_earlier_in_the_group_leaves_the_prefetched_dms_news(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    # A result whose request is not projected yet stores its reply and flushes, before the
    # routed pull's projections run (every prefetch of a group runs first): what the
    # prefetch inserted is still told to them as inserted (their clocks start).
    running, recorder = writer
    for contact in ("flushing", "prefetched", "prefetched-alone"):
        await one_at_a_time(running, projector.project_routed, [customer_dm(contact, 1)])
    groups = len(recorder.groups)
    with statements(running, "SAVEPOINT") as savepoints:
        outcomes = await asyncio.gather(
            results_pull(running, [result_of(customer_dm("flushing", 2))]),
            routed_pull(running, [customer_dm("prefetched", 2)]),
        )
    assert outcomes == [[None], [None]]
    assert savepoints == []
    assert len(recorder.groups) == groups + 1, "one group"
    await one_at_a_time(running, projector.project_routed, [customer_dm("prefetched-alone", 2)])

    grouped = await state_of(sessions, "prefetched")
    assert grouped == await state_of(sessions, "prefetched-alone")
    assert grouped["conversation"]["last_message_at"] == customer_dm("x", 2).message.platform_ts


async def test_a_pull_of_results_marks_its_replies_with_one_update(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    running, _ = writer
    decisions = [customer_dm(f"marked-{n}") for n in range(10)]
    assert await routed_pull(running, decisions) == [None] * 10
    with statements(running, "UPDATE messages") as updates:
        assert await results_pull(running, [result_of(d) for d in decisions]) == [None] * 10
    assert len(updates) == 1, "one executemany, not an UPDATE per result"
    async with sessions() as session:
        replies = (
            await session.execute(select(MessageRow).where(col(MessageRow.author) == "bot"))
        ).scalars()
        assert sorted((m.status, m.mid) for m in replies) == sorted(
            ("sent", f"{result_of(d).request_id}-sent") for d in decisions
        )


async def test_results_the_prefetch_leaves_end_as_alone(
    sessions: async_sessionmaker[AsyncSession], writer: tuple[ProjectionWriter, Recorder]
) -> None:
    # In one pull: a failed send then its retry's success, a redelivery, a result whose
    # echo was stored first under its mid, a result before its request.
    running, _ = writer

    def life(contact: str) -> tuple[list[RoutedMessage], Any, list[OutboundResult]]:
        retried, redelivered, echoed, early = (customer_dm(contact, n) for n in range(1, 5))
        failed = result_of(retried).model_copy(
            update={"status": OutboundStatus.FAILED, "mid": None}
        )
        sent = result_of(echoed)
        assert sent.mid is not None
        echo = InboundMessage(
            mid=sent.mid,
            channel=Channel.MESSENGER,
            account_id="page-1",
            contact=Contact(platform_id=contact),
            text="It ships today.",
            is_echo=True,
            platform_ts=sent.finished_at,
        )
        results = [
            failed,
            result_of(retried),
            result_of(redelivered),
            result_of(redelivered),
            sent,
            result_of(early),
        ]
        return [retried, redelivered, echoed], echo, [*results, *results]

    async def apply(contact: str, together: bool) -> None:
        decisions, echo, results = life(contact)
        if together:
            assert await routed_pull(running, decisions) == [None] * 3
            await running.apply(applying(projector.project_own_echo, echo))
            with statements(running, "SAVEPOINT") as savepoints:
                assert await results_pull(running, results) == [None] * len(results)
            assert savepoints == [], "applied with its prefetch, not retried one by one"
            assert await routed_pull(running, [customer_dm(contact, 4)]) == [None]
        else:
            await one_at_a_time(running, projector.project_routed, decisions)
            await running.apply(applying(projector.project_own_echo, echo))
            await one_at_a_time(running, projector.project_outbound_result, results)
            await one_at_a_time(running, projector.project_routed, [customer_dm(contact, 4)])

    await apply("settled", together=True)
    await apply("settled-alone", together=False)
    grouped = await state_of(sessions, "settled")
    assert grouped == await state_of(sessions, "settled-alone")
    replies = [m["status"] for m in grouped["messages"] if m["author"] != "customer"]
    assert replies == ["sent"] * 4, "each reply once, sent"
