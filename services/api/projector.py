"""Project bus events into the queue database.

Every function here is idempotent and order-insensitive: events of one DM arrive
on separate consumers, in any order, possibly more than once. Rows are keyed by
the platform's ids, so a second projection of the same event changes nothing.
"""

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import Table, bindparam, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Result
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.base import Executable
from sqlmodel import SQLModel, col

from services.api import activity, clocks, containment, lifecycle
from services.api.metrics import ApiMetrics
from services.api.writer import after_commit
from shared.bus import RetryLater
from shared.db import transaction_cache
from shared.echoes import EchoAttribution, attribute_echo
from shared.events import (
    AttachmentCopied,
    AttachmentCopyState,
    Author,
    BotReply,
    Classification,
    ClassifiedMessage,
    Contact,
    ContactProfile,
    ConversationClosed,
    ConversationRef,
    DeadLetter,
    Handoff,
    InboundMessage,
    MessageUpdate,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    Priority,
    RoutedMessage,
    StatusEvent,
    StatusKind,
    UpdateKind,
    utcnow,
)
from shared.models import (
    NO_DEADLINE,
    ContactRow,
    ConversationRow,
    DeadLetterRow,
    Direction,
    MessageRow,
    MessageStatus,
    SlaClockRow,
)
from shared.priority_policy import PolicyStore, contact_priority
from shared.settings import get_settings
from shared.states import ConversationStatus

# A reply whose outcome is not known yet: a result settles it (a failed send may be retried).
_UNSETTLED = (MessageStatus.PENDING.value, MessageStatus.FAILED.value)

_STATUS_ORDER = {
    MessageStatus.PENDING.value: 0,
    MessageStatus.SENT.value: 1,
    MessageStatus.DELIVERED.value: 2,
    MessageStatus.READ.value: 3,
}


def _dialect_insert(dialect: str, table: Any) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _upsert(
    session: Session,
    table: type[SQLModel],
    values: dict[str, Any] | list[dict[str, Any]],
    keys: tuple[str, ...],
    *,
    refresh: tuple[str, ...] = (),
    fill: tuple[str, ...] = (),
    returning: tuple[str, ...] = (),
) -> Result[Any]:
    """Insert ``values`` (a row, or a list of rows: ``executemany``) unless a row with the
    same ``keys`` exists; then set its ``refresh`` columns to these values, and its
    ``fill`` columns where they are null (neither: ``DO NOTHING``). RETURNING ``returning``.

    Many rows with RETURNING go as few multi-row INSERTs (SQLAlchemy's "insertmanyvalues")
    on both databases; the rows come back in no particular order (asking for the order
    makes SQLite insert one row at a time), so return their keys.

    The statement is built once per shape, with bound parameters: building and hashing
    a statement per event was a quarter of the projections' CPU.
    """
    dialect = session.get_bind().dialect.name
    columns = tuple(values if isinstance(values, dict) else values[0])
    statement = _upsert_statement(dialect, table, columns, keys, refresh, fill, returning)
    return session.execute(statement, values)


@functools.cache
def _upsert_statement(
    dialect: str,
    table: type[SQLModel],
    columns: tuple[str, ...],
    keys: tuple[str, ...],
    refresh: tuple[str, ...],
    fill: tuple[str, ...],
    returning: tuple[str, ...],
) -> Executable:
    # On the Core table, not the ORM entity: the ORM's bulk-insert path (and the
    # autoflush before it) cost as much as the statement, and these rows are not
    # loaded as objects anyway.
    core = _table(table)
    insert = _dialect_insert(dialect, core).values(
        {column: bindparam(column) for column in columns}
    )
    updates: dict[str, Any] = {column: insert.excluded[column] for column in refresh}
    updates |= {column: func.coalesce(core.c[column], insert.excluded[column]) for column in fill}
    statement = (
        insert.on_conflict_do_update(index_elements=list(keys), set_=updates)
        if updates
        else insert.on_conflict_do_nothing(index_elements=list(keys))
    )
    if not returning:
        return statement
    return statement.returning(*(core.c[column] for column in returning))


def _table(entity: type[SQLModel]) -> Table:
    table = entity.__table__  # type: ignore[attr-defined]  # set on table models only
    assert isinstance(table, Table)
    return table


# Statements whose columns are the ORM entity's attributes go through the ORM
# (and autoflush) even when built on the table: the fixed ones name the table's columns.
_MESSAGES = _table(MessageRow)
_MESSAGES_ECHO = _MESSAGES.alias("echo")
_CONTACTS = _table(ContactRow)
_CONVERSATIONS = _table(ConversationRow)


def _contact_id(session: Session, channel: str, contact: Contact | None, platform_id: str) -> int:
    """The contact's id, created on first sight; the details the platform sent are kept."""
    values = _new_contact(channel, platform_id, contact, utcnow())
    refreshed: tuple[str, ...] = ()
    if contact is not None:
        refreshed = tuple(k for k in ("name", "followers") if values[k] is not None)
        if contact.tags or contact.vip:
            refreshed += ("tags", "vip")
    upserted = _upsert(
        session,
        ContactRow,
        values,
        keys=("channel", "platform_id"),
        refresh=refreshed,
        returning=("id",),
    )
    inserted: int | None = upserted.scalar_one_or_none()
    if inserted is not None:
        return inserted
    found = session.execute(_CONTACT_BY_KEY, {"channel": channel, "platform_id": platform_id})
    contact_id = found.scalar_one()
    assert contact_id is not None
    return contact_id


_CONTACT_BY_KEY = select(col(ContactRow.id)).where(
    col(ContactRow.channel) == bindparam("channel"),
    col(ContactRow.platform_id) == bindparam("platform_id"),
)


# Built once: the lookup runs for nearly every event (bound parameters, no per-call
# statement building). The contact is a scalar subquery, not a join: with a join
# PostgreSQL may scan every conversation of the page (its statistics of a young table
# say it is small) instead of using the unique key.
_BY_CONTACT = (
    select(ConversationRow)
    .where(
        col(ConversationRow.channel) == bindparam("channel"),
        col(ConversationRow.account_id) == bindparam("account_id"),
        col(ConversationRow.contact_id)
        == select(col(ContactRow.id))
        .where(
            col(ContactRow.channel) == bindparam("channel"),
            col(ContactRow.platform_id) == bindparam("platform_id"),
        )
        .scalar_subquery(),
    )
    .with_for_update()
)


def _conversation_key(ref: ConversationRef) -> tuple[str, str, str]:
    """A conversation's key in the transaction's cache: channel, account, contact."""
    return (ref.channel.value, ref.account_id, ref.contact_id)


def _conversation(
    session: Session,
    ref: ConversationRef,
    contact: Contact | None,
    *,
    is_request: bool = False,
    at: datetime | None = None,
) -> ConversationRow:
    """The conversation ``ref`` names, created on first sight, locked for update.

    Found once per transaction (it stays locked until the end): a group holds several
    events of each conversation. A message's contact details are stored every time.
    """
    known: dict[tuple[str, str, str], ConversationRow] = transaction_cache(session, "conversations")
    key = _conversation_key(ref)
    conversation = known.get(key)
    if conversation is None:
        conversation = known[key] = _find_conversation(
            session, ref, contact, is_request=is_request, at=at
        )
    elif contact is not None:
        _store_contact(session, ref.channel.value, contact, ref.contact_id)
    return conversation


def _store_contact(session: Session, channel: str, contact: Contact, platform_id: str) -> None:
    """Keep the details a message carries: on the contact's row when the group loaded it
    (:func:`prefetch`; written at the flush, and only if something changed), else with
    an upsert."""
    known: dict[tuple[str, str], ContactRow] = transaction_cache(session, "contacts")
    row = known.get((channel, platform_id))
    if row is None:
        _contact_id(session, channel, contact, platform_id)
        return
    if contact.name is not None and row.name != contact.name:
        row.name = contact.name
    if contact.followers is not None and row.followers != contact.followers:
        row.followers = contact.followers
    if (contact.tags or contact.vip) and (row.tags, row.vip) != (contact.tags, contact.vip):
        row.tags, row.vip = list(contact.tags), contact.vip


def _find_conversation(
    session: Session,
    ref: ConversationRef,
    contact: Contact | None,
    *,
    is_request: bool = False,
    at: datetime | None = None,
) -> ConversationRow:
    """The conversation ``ref`` names, from the database: created on first sight, locked.

    Without contact details to store (every event but the message itself), a
    conversation that exists is found with one query (``_BY_CONTACT``).
    """
    if contact is None:
        found = session.execute(
            _BY_CONTACT,
            {
                "channel": ref.channel.value,
                "account_id": ref.account_id,
                "platform_id": ref.contact_id,
            },
        )
        existing = found.scalar_one_or_none()
        if existing is not None:
            return existing
    contact_id = _contact_id(session, ref.channel.value, contact, ref.contact_id)
    key = _conversation_key(ref)
    _upsert(
        session,
        ConversationRow,
        _new_conversation(key, contact_id, is_request=is_request, at=at or utcnow()),
        keys=("channel", "account_id", "contact_id"),
    )
    result = session.execute(
        _BY_KEY,
        {"channel": ref.channel.value, "account_id": ref.account_id, "contact_id": contact_id},
    )
    return result.scalar_one()


_BY_KEY = (
    select(ConversationRow)
    .where(
        col(ConversationRow.channel) == bindparam("channel"),
        col(ConversationRow.account_id) == bindparam("account_id"),
        col(ConversationRow.contact_id) == bindparam("contact_id"),
    )
    .with_for_update()
)


def _stored(
    session: Session,
    conversation: ConversationRow,
    message: InboundMessage,
    classification: Classification | None = None,
) -> bool:
    """Store a platform message (a customer's, or an echo of the page's) in
    ``conversation``, with its ``classification`` when it is known, and move its last
    message time; False if it was already stored (its classification left as it was).

    A message its pull's prefetch tried to insert (:func:`prefetch_routed`) is not
    inserted again: the first projection of it takes the prefetch's outcome."""
    inserted = _prefetched(session, _MESSAGE_KEY, (message.channel.value, message.mid))
    if inserted is None:
        upserted = _upsert(
            session,
            MessageRow,
            _message_values(conversation, message, classification),
            keys=_MESSAGE_KEY,
            returning=("id",),
        )
        inserted = upserted.scalar_one_or_none() is not None
    if not inserted:
        return False
    ts = message.platform_ts
    conversation.last_message_at = max(filter(None, (conversation.last_message_at, ts)))
    return True


_MESSAGE_KEY = ("channel", "mid")
_REQUEST_KEY = ("channel", "request_id")


def _message_values(
    conversation: ConversationRow, message: InboundMessage, classification: Classification | None
) -> dict[str, Any]:
    """The row of a platform message in ``conversation``, with its classification if known."""
    assert conversation.id is not None
    echo = message.is_echo
    classified = {} if classification is None else _classification_values(classification)
    return classified | {
        "conversation_id": conversation.id,
        "channel": message.channel.value,
        "mid": message.mid,
        "direction": (Direction.OUTBOUND if echo else Direction.INBOUND).value,
        "author": "page" if echo else "customer",
        "text": message.text,
        "attachments": [a.model_dump(mode="json") for a in message.attachments],
        "status": (MessageStatus.SENT if echo else MessageStatus.RECEIVED).value,
        "platform_ts": message.platform_ts,
        "received_at": message.received_at,
    }


def _prefetched(session: Session, keys: tuple[str, ...], key: tuple[str, str]) -> bool | None:
    """Whether the group's prefetch inserted the message with ``key`` (its ``keys``
    columns' values; False: it was stored already), told once: to the first projection
    that asks. None when no prefetch tried it (the projection runs its statement)."""
    outcomes: dict[tuple[str, str], bool] = transaction_cache(session, _prefetch_cache(keys))
    return outcomes.pop(key, None)


def _prefetch_cache(keys: tuple[str, ...]) -> str:
    return f"prefetched_messages:{','.join(keys)}"


def _prefetch_messages(
    session: Session,
    rows: dict[tuple[str, str], dict[str, Any]],
    keys: tuple[str, ...],
    *,
    refresh: tuple[str, ...] = (),
    fill: tuple[str, ...] = (),
) -> list[tuple[Any, ...]]:
    """Upsert the message ``rows`` (by their ``keys`` values) with one ``executemany`` of
    the statement their projections would each run, and note which were inserted for
    :func:`_prefetched`. Rows an earlier prefetch of the group wrote are left: what it
    noted is for their first projection. The rows inserted or updated, with their ids."""
    outcomes: dict[tuple[str, str], bool] = transaction_cache(session, _prefetch_cache(keys))
    new = [values for key, values in rows.items() if key not in outcomes]
    if not new:
        return []
    upserted = _upsert(
        session, MessageRow, new, keys, refresh=refresh, fill=fill, returning=(*keys, "id")
    )
    returned: list[tuple[Any, ...]] = [tuple(row) for row in upserted]
    written = {(row[0], row[1]) for row in returned}
    outcomes.update({key: key in written for key in rows if key not in outcomes})
    return returned


def project_inbound(
    session: Session,
    message: InboundMessage,
    metrics: ApiMetrics | None = None,
    classification: Classification | None = None,
) -> bool:
    """Store a platform message in its conversation (with its ``classification``, when
    known); False if it was already stored."""
    if message.is_echo and echo_attribution(session, message).ours:
        return project_own_echo(session, message)
    conversation = _conversation(
        session,
        message.conversation,
        message.contact,
        is_request=message.is_request,
        at=message.platform_ts,
    )
    echo = message.is_echo
    if not _stored(session, conversation, message, classification):
        return False
    ts = message.platform_ts
    if echo:
        # A reply sent from Meta's own inbox is a human's response.
        _responded(session, conversation, ts, "human", metrics)
    else:
        clocks.apply(session, conversation, lambda lc: lc.customer_wrote(ts), "customer")
    conversation.updated_at = utcnow()
    return True


def _responded(
    session: Session,
    conversation: ConversationRow,
    ts: datetime,
    responder: str,
    metrics: ApiMetrics | None,
) -> None:
    stopped = clocks.apply(session, conversation, lambda lc: lc.responded(ts, responder), responder)
    # The page answered: no longer a message request (as Facebook shows it).
    conversation.is_request = False
    if responder == "bot":
        containment.bot_replied(conversation, ts)
    elif (outcome := containment.settle(conversation, containment.ESCALATED)) is not None:
        stopped.contained.append(outcome)
    if metrics is not None:
        after_commit(session, functools.partial(metrics.observe, conversation, stopped))


def _raise_priority(conversation: ConversationRow, priority: Priority) -> bool:
    """Set the priority unless a more urgent one is set (before classification, any);
    True when it changed, so running SLA clocks must be re-targeted."""
    if conversation.category is None or priority.rank < conversation.priority_rank:
        conversation.priority = priority.value
        conversation.priority_rank = priority.rank
        return True
    return False


def _set_priority(
    session: Session, conversation: ConversationRow, priority: Priority, at: datetime
) -> None:
    """Raise the priority (see _raise_priority) and re-target the SLA clocks."""
    if _raise_priority(conversation, priority):
        clocks.retarget(session, conversation, at)


def project_classified(
    session: Session, classified: ClassifiedMessage, metrics: ApiMetrics | None = None
) -> None:
    """Record a message's classification on it and on its conversation."""
    message, classification = classified.message, classified.classification
    if not _classify_message(session, message, classification):
        # The classification arrived before the message itself: store the message first.
        project_inbound(session, message, metrics)
        _classify_message(session, message, classification)
    _classify_conversation(session, message, classification)


def _classify_conversation(
    session: Session, message: InboundMessage, classification: Classification
) -> None:
    """The conversation's side of a message's classification (the message is stored)."""
    # The message's projection stored the contact's details.
    conversation = _conversation(session, message.conversation, None)
    # The conversation's category and language stay stable (see lifecycle.classification_wins);
    # the message keeps its own classification.
    first_classification = conversation.category is None
    wins = lifecycle.classification_wins(
        conversation.category, conversation.priority_rank, classification.priority.rank
    )
    retarget = False
    if wins:
        retarget = conversation.category != classification.category.value
        retarget = _raise_priority(conversation, classification.priority) or retarget
        conversation.category = classification.category.value
    if first_classification:  # the contact's profile may have arrived first
        retarget = _contact_raises_priority(session, conversation) or retarget
    conversation.language = conversation.language or classification.language
    conversation.updated_at = utcnow()
    if retarget:
        clocks.retarget(session, conversation, message.platform_ts)


def _classify_message(
    session: Session, message: InboundMessage, classification: Classification
) -> bool:
    """Store the classification on the message; False when the message is not stored yet."""
    updated = session.execute(
        _CLASSIFY,
        {"message_channel": message.channel.value, "message_mid": message.mid}
        | _classification_values(classification),
    )
    return updated.first() is not None


_CLASSIFICATION_COLUMNS = ("category", "priority", "language", "sentiment", "classification")
"""A message row's classification columns (:func:`_classification_values`)."""


def _classification_values(classification: Classification) -> dict[str, Any]:
    """A message row's classification columns."""
    return {
        "category": classification.category.value,
        "priority": classification.priority.value,
        "language": classification.language,
        "sentiment": classification.sentiment,
        "classification": classification.model_dump(mode="json"),
    }


# Built once (bound parameters), on the Core table (see _upsert_statement): it
# runs for every DM.
_CLASSIFY = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.channel == bindparam("message_channel"),
        _MESSAGES.c.mid == bindparam("message_mid"),
    )
    .values({column: bindparam(column) for column in _CLASSIFICATION_COLUMNS})
    .returning(_MESSAGES.c.id)
)


def project_routed(
    session: Session, routed: RoutedMessage, metrics: ApiMetrics | None = None
) -> None:
    """A customer DM, its classification and the responder's decision, from one event.

    The message is stored with its classification (its clocks started) unless it is
    already (a redelivery, or the late-decision path projected it first: then it is
    classified apart); the decision follows:
    the hand-off before the replies (an acknowledgement of a hand-off does not put the
    conversation in pending), the bot's requests as pending outbound messages (their
    results may have come first), then the close.
    """
    message, classification = routed.message, routed.classification
    # Stored with its classification in one statement; classified apart when it was stored
    # already.
    if not project_inbound(session, message, metrics, classification):
        _classify_message(session, message, classification)
    _classify_conversation(session, message, classification)
    if routed.handoff is not None:
        project_handoff(session, routed.handoff, metrics)
    for reply in routed.replies:
        project_bot_reply(session, reply, metrics)
    for request in routed.requests:
        project_outbound_requested(session, request, metrics)
    if routed.closed is not None:
        project_closed(session, routed.closed, metrics)


class AboutConversation(Protocol):
    """An event naming its conversation."""

    @property
    def conversation(self) -> ConversationRef: ...


def prefetch_routed(session: Session, routed: Sequence[RoutedMessage]) -> None:
    """:func:`prefetch` for a pull of routed DMs, then the pull's new messages (with their
    classifications) and the bot's requested replies upserted with one ``executemany``
    each: the projections find them written (:func:`_prefetched`) instead of running a
    statement (and on PostgreSQL a round trip) each. A message stored already (a
    redelivery, the late-decision path) is told so, and classified by its projection."""
    prefetch(session, [event.message for event in routed])
    conversations: dict[tuple[str, str, str], ConversationRow] = transaction_cache(
        session, "conversations"
    )
    messages: dict[tuple[str, str], dict[str, Any]] = {}
    requests: dict[tuple[str, str], OutboundRequest] = {}
    for event in routed:
        message = event.message
        ref = message.conversation
        conversation = conversations.get(_conversation_key(ref))
        if conversation is None or message.is_echo:  # an echo's projection attributes it first
            continue
        key = (message.channel.value, message.mid)
        if key not in messages:
            messages[key] = _message_values(conversation, message, event.classification)
        for request in event.requests:
            requests.setdefault((request.conversation.channel.value, request.request_id), request)
    _prefetch_messages(session, messages, _MESSAGE_KEY)
    _prefetch_requests(session, conversations, requests)


def _prefetch_requests(
    session: Session,
    conversations: dict[tuple[str, str, str], ConversationRow],
    requests: dict[tuple[str, str], OutboundRequest],
) -> None:
    """The requested replies' rows, upserted as their projections would each upsert them
    (:func:`project_outbound_requested`), for those whose conversation is loaded."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for key, request in requests.items():
        ref = request.conversation
        conversation = conversations.get(_conversation_key(ref))
        if conversation is not None:
            rows[key] = _request_values(conversation, request)
    written = _prefetch_messages(
        session, rows, _REQUEST_KEY, refresh=_REQUEST_REFRESH, fill=_REQUEST_FILL
    )
    for channel, request_id, stored in written:
        _requested(session, stored, requests[channel, request_id])


def prefetch(session: Session, messages: Sequence[InboundMessage]) -> None:
    """Load a group's contacts, conversations (locked) and SLA clocks with a few multi-row
    statements, creating the contacts and conversations not seen before.

    The projections then find them in the transaction's caches (``_conversation``,
    ``clocks``), instead of each DM upserting its contact, upserting and selecting its
    conversation and selecting its clocks; what they change is written at the flush,
    a statement per table and kind of change (``executemany``). Keys already loaded in
    this transaction are skipped.
    """
    conversations: dict[tuple[str, str, str], ConversationRow] = transaction_cache(
        session, "conversations"
    )
    wanted: dict[tuple[str, str, str], InboundMessage] = {}
    for message in messages:
        key = (message.channel.value, message.account_id, message.conversation.contact_id)
        if key not in conversations:
            wanted.setdefault(key, message)
    if not wanted:
        return
    contacts, created = _prefetch_contacts(session, wanted.values())
    ids = {key: contacts[key[0], key[2]].id for key in wanted}
    # A contact this transaction created has no conversation yet, nor SLA clocks: a DM
    # from a new contact (a spike's most) costs no look-up of either.
    first = {key for key in wanted if (key[0], key[2]) in created}
    old = {key: contact_id for key, contact_id in ids.items() if key not in first}
    found = _conversations_by_key(session, old) if old else {}
    missing = [key for key in wanted if key not in found]
    if missing:
        dialect = session.get_bind().dialect.name
        session.execute(
            _dialect_insert(dialect, _CONVERSATIONS).on_conflict_do_nothing(
                index_elements=["channel", "account_id", "contact_id"]
            ),
            [
                _new_conversation(
                    key, ids[key], is_request=wanted[key].is_request, at=wanted[key].platform_ts
                )
                for key in missing
            ],
        )
        found |= _conversations_by_key(session, {key: ids[key] for key in missing})
    conversations.update(found)
    known_clocks: dict[int, list[SlaClockRow]] = transaction_cache(session, "sla_clocks")
    for key in first:
        if (conversation_id := found[key].id) is not None:
            known_clocks.setdefault(conversation_id, [])
    _prefetch_clocks(session, found.values())


def prefetch_conversations(session: Session, events: Sequence[AboutConversation]) -> None:
    """:func:`prefetch` for a pull of events about conversations that exist (outbound
    results): their contacts, conversations (locked) and SLA clocks, with three statements. A
    conversation not found is left to the projection (``_conversation``)."""
    conversations: dict[tuple[str, str, str], ConversationRow] = transaction_cache(
        session, "conversations"
    )
    wanted = {_conversation_key(event.conversation) for event in events} - conversations.keys()
    if not wanted:
        return
    # Two statements that use the unique keys' indexes (one joining contacts was planned
    # as a scan by PostgreSQL: seconds per pull on a large table).
    contacts: dict[tuple[str, str], ContactRow] = transaction_cache(session, "contacts")
    _load_contacts(session, {(key[0], key[2]) for key in wanted} - contacts.keys())
    ids = {key: contacts[key[0], key[2]].id for key in wanted if (key[0], key[2]) in contacts}
    found = _conversations_by_key(session, ids) if ids else {}
    conversations.update(found)
    _prefetch_clocks(session, found.values())


def _prefetch_clocks(session: Session, conversations: Iterable[ConversationRow]) -> None:
    """Load the SLA clocks of ``conversations`` (one statement) into the transaction's cache."""
    known_clocks: dict[int, list[SlaClockRow]] = transaction_cache(session, "sla_clocks")
    loaded: dict[int, list[SlaClockRow]] = {
        row.id: [] for row in conversations if row.id is not None and row.id not in known_clocks
    }
    if loaded:
        rows = session.execute(
            select(SlaClockRow).where(col(SlaClockRow.conversation_id).in_(list(loaded)))
        )
        for clock in rows.scalars():
            loaded[clock.conversation_id].append(clock)
        known_clocks.update(loaded)


def _prefetch_contacts(
    session: Session, messages: Iterable[InboundMessage]
) -> tuple[dict[tuple[str, str], ContactRow], set[tuple[str, str]]]:
    """The messages' contacts as rows (kept in the transaction's cache), created if new;
    and the keys (channel, platform id) of those this call created."""
    known: dict[tuple[str, str], ContactRow] = transaction_cache(session, "contacts")
    new = {
        (m.channel.value, m.conversation.contact_id): m
        for m in messages
        if (m.channel.value, m.conversation.contact_id) not in known
    }
    if not new:
        return known, set()
    now = utcnow()
    inserted = _upsert(
        session,
        ContactRow,
        [
            _new_contact(channel, platform_id, m.contact, now)
            for (channel, platform_id), m in new.items()
        ],
        _CONTACT_KEY,
        returning=_CONTACT_KEY,
    )
    created: set[tuple[str, str]] = {(row.channel, row.platform_id) for row in inserted}
    _load_contacts(session, new)
    return known, created


_CONTACT_KEY = ("channel", "platform_id")


def _load_contacts(session: Session, keys: Iterable[tuple[str, str]]) -> None:
    """Load the contacts with these keys (channel, platform id) into the transaction's cache."""
    known: dict[tuple[str, str], ContactRow] = transaction_cache(session, "contacts")
    wanted = list(keys)
    # The ids alone as well: a condition on the key index's leading column (see models).
    rows = session.execute(
        select(ContactRow).where(
            col(ContactRow.platform_id).in_({platform_id for _, platform_id in wanted}),
            tuple_(col(ContactRow.channel), col(ContactRow.platform_id)).in_(wanted),
        )
    )
    for row in rows.scalars():
        known[row.channel, row.platform_id] = row


def _new_contact(
    channel: str, platform_id: str, contact: Contact | None, at: datetime
) -> dict[str, Any]:
    """A new contact's row, with the details the platform sent."""
    values: dict[str, Any] = {
        "channel": channel,
        "platform_id": platform_id,
        "name": None,
        "tags": [],
        "vip": False,
        "followers": None,
        "created_at": at,
    }
    if contact is not None:
        values |= {
            "name": contact.name,
            "tags": contact.tags,
            "vip": contact.vip,
            "followers": contact.followers,
        }
    return values


def _new_conversation(
    key: tuple[str, str, str], contact_id: int | None, *, is_request: bool, at: datetime
) -> dict[str, Any]:
    """A new conversation's row: open, normal priority, no deadline."""
    return {
        "channel": key[0],
        "account_id": key[1],
        "contact_id": contact_id,
        "status": ConversationStatus.OPEN.value,
        "priority": Priority.NORMAL.value,
        "priority_rank": Priority.NORMAL.rank,
        "is_request": is_request,
        "tags": [],
        "queue_due_at": NO_DEADLINE,
        "created_at": at,
        "updated_at": at,
    }


def _conversations_by_key(
    session: Session, ids: dict[tuple[str, str, str], int | None]
) -> dict[tuple[str, str, str], ConversationRow]:
    """The conversations with these keys (channel, account, contact), locked, in id order."""
    by_id = {(key[0], key[1], contact_id): key for key, contact_id in ids.items()}
    rows = session.execute(
        select(ConversationRow)
        .where(
            col(ConversationRow.contact_id).in_(set(ids.values())),
            tuple_(
                col(ConversationRow.channel),
                col(ConversationRow.account_id),
                col(ConversationRow.contact_id),
            ).in_(list(by_id)),
        )
        .order_by(col(ConversationRow.id))
        .with_for_update()
    )
    return {by_id[row.channel, row.account_id, row.contact_id]: row for row in rows.scalars()}


def project_handoff(session: Session, handoff: Handoff, metrics: ApiMetrics | None = None) -> None:
    """Put the conversation in the team's queue."""
    conversation = _conversation(session, handoff.conversation, None)
    if conversation.team is None and metrics is not None:
        after_commit(session, metrics.bot_decisions.labels("handed_off").inc)
    assert conversation.id is not None
    if conversation.team != handoff.team:
        activity.record(
            session,
            conversation.id,
            "bot.handoff",
            "bot",
            handoff.decided_at,
            team=handoff.team,
            reason=handoff.reason,
            # When the DM entered the team's queue (in this transaction): what `dmdesk
            # bench` times; ``at`` is when the responder decided.
            projected_at=utcnow().isoformat(),
        )
    conversation.team = handoff.team
    _add_tags(conversation, handoff.tags)
    conversation.language = conversation.language or handoff.language
    _set_priority(session, conversation, handoff.priority, handoff.decided_at)
    if handoff.category is not None and conversation.category is None:
        conversation.category = handoff.category.value
    conversation.handoff_reason = handoff.reason[:512]
    conversation.handoff_rule = handoff.rule_id
    conversation.handoff_signals = list(handoff.signals)
    conversation.faq_entry, conversation.faq_score = handoff.faq_entry, handoff.faq_score
    conversation.faq_settles = handoff.faq_settles
    _record_opt_out(session, conversation, handoff.opt_out)
    if conversation.status == ConversationStatus.PENDING.value:
        open_ = ConversationStatus.OPEN.value
        clocks.apply(session, conversation, lambda lc: lc.move(open_, handoff.decided_at), "bot")
    conversation.updated_at = utcnow()


def _record_opt_out(
    session: Session, conversation: ConversationRow, opt_out: Literal["out", "in"] | None
) -> None:
    """Show the contact's opt-out (or opt-in) on the conversation and on the contact."""
    if opt_out is None:
        return
    opted_out = opt_out == "out"
    conversation.bot_opted_out = opted_out
    contact = session.get(ContactRow, conversation.contact_id)
    if contact is not None:
        contact.bot_opted_out = opted_out


def project_bot_reply(session: Session, reply: BotReply, metrics: ApiMetrics | None = None) -> None:
    """The bot is handling the conversation, unless a team already has it."""
    conversation = _conversation(session, reply.conversation, None)
    _add_tags(conversation, reply.tags)
    if reply.priority is not None:
        _set_priority(session, conversation, reply.priority, reply.decided_at)
    _record_opt_out(session, conversation, reply.opt_out)
    if conversation.team is None and conversation.status == ConversationStatus.OPEN.value:
        # The bot answered: waiting on the customer, the clocks pause (see lifecycle).
        pending = ConversationStatus.PENDING.value
        assert conversation.id is not None
        activity.record(
            session, conversation.id, "bot.answered", "bot", reply.decided_at, rule=reply.rule_id
        )
        clocks.apply(session, conversation, lambda lc: lc.move(pending, reply.decided_at), "bot")
        if metrics is not None:
            after_commit(session, metrics.bot_decisions.labels("answered").inc)
    conversation.updated_at = utcnow()


def project_closed(
    session: Session, closed: ConversationClosed, metrics: ApiMetrics | None = None
) -> None:
    """The bot closed the conversation (spam, a finished exchange): resolved, tagged."""
    conversation = _conversation(session, closed.conversation, None)
    if conversation.status != ConversationStatus.RESOLVED.value:
        stopped = clocks.apply(
            session, conversation, lambda lc: lc.resolve(closed.decided_at, "bot"), "bot"
        )
        assert conversation.id is not None
        activity.record(
            session, conversation.id, "bot.closed", "bot", closed.decided_at, reason=closed.reason
        )
        if metrics is not None:
            after_commit(session, functools.partial(metrics.observe, conversation, stopped))
    if closed.category is not None and conversation.category is None:
        conversation.category = closed.category.value
    _add_tags(conversation, closed.tags)
    conversation.updated_at = utcnow()


def _add_tags(conversation: ConversationRow, tags: list[str]) -> None:
    if tags:
        conversation.tags = [*conversation.tags, *(t for t in tags if t not in conversation.tags)]


def project_outbound_requested(
    session: Session, request: OutboundRequest, metrics: ApiMetrics | None = None
) -> None:
    """Show a requested reply on the conversation, pending until its result arrives.

    The result (or the platform's echo, matched by the result) may have been projected
    first: then the message exists, under the platform's mid and with the request's id,
    and gets the text.
    """
    conversation = _conversation(session, request.conversation, None)
    assert conversation.id is not None
    channel = request.conversation.channel.value
    # Keyed by the request id: one statement whether or not its result (or echo) stored
    # the message first, under the platform's mid; then it gets the text it lacks.
    if _prefetched(session, _REQUEST_KEY, (channel, request.request_id)) is not None:
        return  # upserted by the pull's prefetch (:func:`prefetch_routed`)
    stored = _upsert(
        session,
        MessageRow,
        _request_values(conversation, request),
        keys=_REQUEST_KEY,
        refresh=_REQUEST_REFRESH,
        fill=_REQUEST_FILL,
        returning=("id",),
    ).scalar_one()
    _requested(session, stored, request)


_REQUEST_REFRESH, _REQUEST_FILL = ("author",), ("text",)


def _request_values(conversation: ConversationRow, request: OutboundRequest) -> dict[str, Any]:
    """The row of a requested reply in ``conversation``: pending, under :func:`request_mid`."""
    assert conversation.id is not None
    return {
        "conversation_id": conversation.id,
        "channel": request.conversation.channel.value,
        "mid": request_mid(request.request_id),
        "request_id": request.request_id,
        "direction": Direction.OUTBOUND.value,
        "author": request.author.value,
        "text": request.text,
        "attachments": [],
        "status": MessageStatus.PENDING.value,
        "platform_ts": request.requested_at,
        "received_at": request.requested_at,
    }


def _requested(session: Session, stored: int, request: OutboundRequest) -> None:
    """The request's message ``stored`` (its id) may be loaded in this transaction (its
    result came first): keep it true."""
    loaded = session.identity_map.get(identity_key(MessageRow, stored))
    if isinstance(loaded, MessageRow):
        set_committed_value(loaded, "text", loaded.text or request.text)
        set_committed_value(loaded, "author", request.author.value)


def request_mid(request_id: str) -> str:
    """The message id an outbound request is stored under until the platform gives one."""
    return f"request:{request_id}"


# Built once (bound parameters): they run for nearly every DM's reply.
_OWN_MESSAGE = (
    select(MessageRow)
    .where(
        col(MessageRow.channel) == bindparam("channel"),
        col(MessageRow.request_id) == bindparam("request_id"),
    )
    .with_for_update()
)
_REPLY_OR_ECHO = (
    select(MessageRow)
    .where(
        col(MessageRow.channel) == bindparam("channel"),
        (col(MessageRow.request_id) == bindparam("request_id"))
        | (col(MessageRow.mid) == bindparam("mid")),
    )
    .with_for_update()
)
_BY_MID = (
    select(MessageRow)
    .where(col(MessageRow.channel) == bindparam("channel"), col(MessageRow.mid) == bindparam("mid"))
    .with_for_update()
)


def _own_message(session: Session, channel: str, request_id: str) -> MessageRow | None:
    """The message of dmdesk's request ``request_id``, if stored."""
    found = session.execute(_OWN_MESSAGE, {"channel": channel, "request_id": request_id})
    return found.scalar_one_or_none()


def _reply_and_echo(
    session: Session, channel: str, request_id: str, mid: str | None
) -> tuple[MessageRow | None, MessageRow | None]:
    """The message of dmdesk's request ``request_id`` and, when another row, the one stored
    under the platform's ``mid`` (its echo, come first): one statement for both."""
    if mid is None:
        return _own_message(session, channel, request_id), None
    found = session.execute(
        _REPLY_OR_ECHO, {"channel": channel, "request_id": request_id, "mid": mid}
    ).scalars()
    rows = list(found)
    reply = next((row for row in rows if row.request_id == request_id), None)
    echo = next((row for row in rows if row is not reply and row.mid == mid), None)
    return reply, echo


def _message(session: Session, channel: str, mid: str) -> MessageRow | None:
    found = session.execute(_BY_MID, {"channel": channel, "mid": mid})
    return found.scalar_one_or_none()


def _later_status(first: str, second: str) -> str:
    """The further along of two delivery states (pending < sent < delivered < read)."""
    return max(first, second, key=lambda status: _STATUS_ORDER.get(status, -1))


# Built once (bound parameters), on the Core table: it runs for nearly every DM's reply.
# The usual case of a result in one statement: the request's message, not sent yet, takes
# the outcome and the platform's mid, unless another row holds that mid (its echo came
# first: the general path merges the two).
_ECHO_HOLDS_MID = (
    select(_MESSAGES_ECHO.c.id)
    .where(
        _MESSAGES_ECHO.c.mid == bindparam("new_mid"),
        _MESSAGES_ECHO.c.channel == bindparam("message_channel"),
    )
    .exists()
)
_MARK_SENT = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.request_id == bindparam("message_request_id"),
        _MESSAGES.c.channel == bindparam("message_channel"),
        _MESSAGES.c.status.in_(_UNSETTLED),
        ~_ECHO_HOLDS_MID,
    )
    .values(
        status=bindparam("new_status"),
        error=bindparam("new_error"),
        mid=func.coalesce(bindparam("new_mid"), _MESSAGES.c.mid),
    )
    .returning(_MESSAGES.c.id, _MESSAGES.c.mid, _MESSAGES.c.author)
)


# A result :func:`prefetch_results` found to be the usual case, by the message's id.
_MARK_BY_ID = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message_id"))
    .values(
        status=bindparam("new_status"),
        error=bindparam("new_error"),
        mid=func.coalesce(bindparam("new_mid"), _MESSAGES.c.mid),
    )
)


def _mark_sent(
    session: Session,
    channel: str,
    request_id: str,
    *,
    status: str,
    error: str | None,
    mid: str | None,
) -> str | None:
    """The usual result: write it to its request's message, not sent yet, at once; the
    message's author, or None when the general path must decide (no such message, sent
    already, or an echo stored under ``mid``). A copy of the row loaded in this
    transaction is kept true."""
    marked: dict[tuple[str, str], str] = transaction_cache(session, "prefetched_results")
    if (author := marked.pop((channel, request_id), None)) is not None:
        return author  # written by the pull's prefetch (:func:`prefetch_results`)
    written = session.execute(
        _MARK_SENT,
        {
            "message_request_id": request_id,
            "message_channel": channel,
            "new_status": status,
            "new_error": error,
            "new_mid": mid,
        },
    ).first()
    if written is None:
        return None
    _keep_loaded_true(session, written.id, status=status, error=error, mid=written.mid)
    return str(written.author)


def _keep_loaded_true(
    session: Session, message_id: int, *, status: str, error: str | None, mid: str
) -> None:
    """A copy of the message ``message_id`` loaded in this transaction gets what a Core
    statement wrote to its row."""
    loaded = session.identity_map.get(identity_key(MessageRow, message_id))
    if isinstance(loaded, MessageRow):
        for key, value in (("status", status), ("error", error), ("mid", mid)):
            set_committed_value(loaded, key, value)


def _result_outcome(result: OutboundResult) -> tuple[str, str | None, str | None]:
    """What a Send API result makes of its message: the status, the error, and the
    platform's mid (a sent reply's only)."""
    sent = result.status == OutboundStatus.SENT
    status = (MessageStatus.SENT if sent else MessageStatus.FAILED).value
    error = None if result.error is None else result.error.message
    return status, error, result.mid if sent else None


def prefetch_results(session: Session, results: Sequence[OutboundResult]) -> None:
    """:func:`prefetch_conversations` for a pull of outbound results, then the usual
    results (:func:`_mark_sent`'s) written set-based: their requests' messages read (one
    statement, locked), the mids they would take checked (one), and the messages not sent
    yet whose mid no other row holds updated with one ``executemany``. Each projection
    finds its result written (once) instead of running its ``UPDATE``; a result the
    prefetch left (its request not stored, sent already, an echo holding its mid, a
    second result of a request in the pull) goes the usual way."""
    prefetch_conversations(session, results)
    marked: dict[tuple[str, str], str] = transaction_cache(session, "prefetched_results")
    wanted: dict[tuple[str, str], OutboundResult] = {}
    for result in results:
        key = (result.conversation.channel.value, result.request_id)
        if key not in marked:
            wanted.setdefault(key, result)
    if not wanted:
        return
    found = session.execute(
        select(
            _MESSAGES.c.id,
            _MESSAGES.c.channel,
            _MESSAGES.c.request_id,
            _MESSAGES.c.mid,
            _MESSAGES.c.author,
        )
        .where(
            _MESSAGES.c.request_id.in_({request_id for _, request_id in wanted}),
            _MESSAGES.c.status.in_(_UNSETTLED),
        )
        .with_for_update()
    )
    unsettled = {(row.channel, row.request_id): row for row in found}
    mids = {
        (key[0], result.mid)
        for key, result in wanted.items()
        if result.status == OutboundStatus.SENT and result.mid is not None
    }
    held: set[tuple[str, str]] = set()
    if mids:
        holders = session.execute(
            select(_MESSAGES.c.channel, _MESSAGES.c.mid).where(
                _MESSAGES.c.mid.in_({mid for _, mid in mids})
            )
        )
        held = {(row.channel, row.mid) for row in holders}
    updates: list[dict[str, Any]] = []
    for key, result in wanted.items():
        status, error, platform_mid = _result_outcome(result)
        row = unsettled.get(key)
        if row is None or (platform_mid is not None and (key[0], platform_mid) in held):
            continue
        updates.append(
            {
                "message_id": row.id,
                "new_status": status,
                "new_error": error,
                "new_mid": platform_mid,
            }
        )
        _keep_loaded_true(session, row.id, status=status, error=error, mid=platform_mid or row.mid)
        marked[key] = str(row.author)
        if platform_mid is not None:  # a second result naming it goes the usual way
            held.add((key[0], platform_mid))
    if updates:
        session.execute(_MARK_BY_ID, updates)


def project_outbound_result(
    session: Session, result: OutboundResult, metrics: ApiMetrics | None = None
) -> None:
    """Mark a reply sent, under the platform's mid (a response for the SLA), or failed
    with the platform's reason.

    The result may arrive before its request (separate consumers): then the message is
    stored from the result, and the request fills its text in later. The platform's
    echo of the reply may have been stored first, under that mid: the result makes it
    this reply's message (one message, never two), keeping the receipts it had.
    """
    conversation = _conversation(session, result.conversation, None)
    assert conversation.id is not None
    channel = result.conversation.channel.value
    sent = result.status == OutboundStatus.SENT
    status, error, platform_mid = _result_outcome(result)
    author = _mark_sent(
        session, channel, result.request_id, status=status, error=error, mid=platform_mid
    )
    if author is None:
        author = _settle_result(session, conversation, result, status, error, platform_mid)
    # author is None: nothing new (a redelivered result, or no message to give it to).
    if sent and author in (Author.BOT.value, Author.AGENT.value):
        ts = result.finished_at
        conversation.last_message_at = max(filter(None, (conversation.last_message_at, ts)))
        responder = "bot" if author == Author.BOT.value else "human"
        _responded(session, conversation, result.finished_at, responder, metrics)
        conversation.updated_at = utcnow()


def _settle_result(
    session: Session,
    conversation: ConversationRow,
    result: OutboundResult,
    status: str,
    error: str | None,
    platform_mid: str | None,
) -> str | None:
    """A result :func:`_mark_sent` left: its message stored from the result (the request
    not projected yet), or merged with its echo (come first), or already settled (a
    redelivery). The message's author when the result was news, else None."""
    assert conversation.id is not None
    channel = result.conversation.channel.value
    row, echo = _reply_and_echo(session, channel, result.request_id, platform_mid)
    news = row is None or row.status in _UNSETTLED
    if row is None and echo is None:
        if result.author is None:
            return None
        row = MessageRow(
            conversation_id=conversation.id,
            channel=channel,
            mid=platform_mid or request_mid(result.request_id),
            request_id=result.request_id,
            direction=Direction.OUTBOUND.value,
            author=result.author.value,
            attachments=[],
            status=status,
            error=error,
            platform_ts=result.finished_at,
            received_at=result.finished_at,
        )
        session.add(row)
    elif row is None:
        assert echo is not None
        row = echo  # the echo came first: it is this reply
        row.request_id = result.request_id
        row.author = result.author.value if result.author is not None else row.author
        row.status, row.error = _later_status(row.status, status), error
    elif news:
        row.status, row.error = status, error
        if echo is not None:  # the echo came first: one message, with what it had
            row.status = _later_status(row.status, echo.status)
            row.text = row.text or echo.text
            row.reactions = {**echo.reactions, **row.reactions}
            session.delete(echo)
            session.flush()
        if platform_mid is not None:
            row.mid = platform_mid
    session.flush()  # later projections look messages up by mid with Core statements
    return row.author if news else None


def echo_attribution(session: Session, echo: InboundMessage) -> EchoAttribution:
    """Whose ``echo`` is (:func:`shared.echoes.attribute_echo`), from what the database holds:
    the platform mids of dmdesk's replies, and its replies not sent yet."""
    channel = echo.channel.value
    recorded = session.execute(
        select(col(MessageRow.request_id)).where(
            col(MessageRow.channel) == channel,
            col(MessageRow.mid) == echo.mid,
            col(MessageRow.request_id).is_not(None),
        )
    ).scalar_one_or_none()
    conversation = _conversation(session, echo.conversation, echo.contact, at=echo.platform_ts)
    assert conversation.id is not None
    return attribute_echo(
        app_id=echo.app_id,
        mid=echo.mid,
        our_app_ids=get_settings().meta_app_ids,
        recorded={} if recorded is None else {echo.mid: recorded},
        sends_in_flight=_sends_in_flight(session, conversation.id),
    )


# A reply requested longer ago than this and still without a result (its request was
# dead-lettered, say) is not in flight: nothing waits on it for ever.
IN_FLIGHT_FOR = timedelta(hours=1)


def _sends_in_flight(session: Session, conversation_id: int) -> bool:
    """Whether a reply of dmdesk's in the conversation awaits its result."""
    found = session.execute(
        select(col(MessageRow.id))
        .where(
            col(MessageRow.conversation_id) == conversation_id,
            col(MessageRow.status) == MessageStatus.PENDING.value,
            col(MessageRow.request_id).is_not(None),
            col(MessageRow.received_at) >= utcnow() - IN_FLIGHT_FOR,
        )
        .limit(1)
    )
    return found.first() is not None


def project_own_echo(session: Session, echo: InboundMessage) -> bool:
    """The platform's echo of a message dmdesk sent: never a person's response.

    Already stored under its mid (the result came first): nothing to do. Else the echo
    beat the Send API's answer: it is stored under its mid, and the result makes it the
    reply's message (``project_outbound_result``). False if nothing was stored.
    """
    conversation = _conversation(session, echo.conversation, echo.contact, at=echo.platform_ts)
    if not _stored(session, conversation, echo):
        return False
    conversation.is_request = False
    conversation.updated_at = utcnow()
    return True


def project_update(
    session: Session, change: MessageUpdate, metrics: ApiMetrics | None = None
) -> None:
    """A reaction, edit or unsend of an earlier message; SLA clocks are not touched.

    Raises:
        RetryLater: the message is not known while a reply of dmdesk's awaits its result
            (the update may be about that reply; see ``project_status``).
    """
    if change.mid is None:
        return
    message = _message(session, change.conversation.channel.value, change.mid)
    if message is None:
        ref = change.conversation
        found = session.execute(
            _BY_CONTACT,
            {
                "channel": ref.channel.value,
                "account_id": ref.account_id,
                "platform_id": ref.contact_id,
            },
        ).scalar_one_or_none()
        if found is not None and found.id is not None and _sends_in_flight(session, found.id):
            raise RetryLater("an update names a mid not known yet while a reply awaits its result")
        return
    side = "page" if change.by_page else "customer"
    if change.kind == UpdateKind.REACT:
        message.reactions = {**message.reactions, side: change.emoji or change.reaction or "?"}
    elif change.kind == UpdateKind.UNREACT:
        message.reactions = {k: v for k, v in message.reactions.items() if k != side}
    elif change.kind == UpdateKind.EDIT:
        count = change.edit_count if change.edit_count is not None else message.edit_count + 1
        if count > message.edit_count:
            message.text, message.edit_count = change.text, count
    elif change.kind == UpdateKind.DELETE and message.deleted_at is None:
        message.deleted_at, message.text = change.platform_ts, None


def project_status(
    session: Session, status: StatusEvent, metrics: ApiMetrics | None = None
) -> None:
    """Advance outbound messages to delivered/read (never backwards), or mark them failed.

    A reply not sent yet is neither delivered nor read. A status naming a mid not stored
    while one of dmdesk's replies awaits its result may be about that reply (the platform
    can report before the Send API answers dmdesk): it is redelivered until then.

    Raises:
        RetryLater: a named mid is unknown while a reply of dmdesk's is in flight.
    """
    conversation = _conversation(session, status.conversation, None)
    assert conversation.id is not None
    query = select(MessageRow).where(
        col(MessageRow.conversation_id) == conversation.id,
        col(MessageRow.direction) == Direction.OUTBOUND.value,
    )
    if status.mids:
        query = query.where(col(MessageRow.mid).in_(status.mids))
    elif status.watermark is not None and status.kind != StatusKind.FAILED:
        query = query.where(
            col(MessageRow.platform_ts) <= status.watermark,
            col(MessageRow.status) != MessageStatus.PENDING.value,
        )
    else:
        return
    rows = list(session.execute(query.with_for_update()).scalars())
    if len(rows) < len(set(status.mids)) and _sends_in_flight(session, conversation.id):
        raise RetryLater("a status names a mid not known yet while a reply awaits its result")
    if status.kind == StatusKind.FAILED:
        error = status.error.message if status.error else "failed"
        for row in rows:
            row.status, row.error = MessageStatus.FAILED.value, error
        return
    rank = _STATUS_ORDER[status.kind.value]
    for row in rows:
        if _STATUS_ORDER.get(row.status, -1) < rank:
            row.status = status.kind.value


def project_dead_letter(
    session: Session, letter: DeadLetter, metrics: ApiMetrics | None = None
) -> None:
    """Keep a dead letter for inspection and replay."""
    inserted = _upsert(
        session,
        DeadLetterRow,
        {
            "stage": letter.stage,
            "subject": letter.subject,
            "stream_sequence": letter.stream_sequence,
            "deliveries": letter.deliveries,
            "error_type": letter.error_type,
            "error": letter.error,
            "original": letter.original,
            "headers": letter.headers,
            "failed_at": letter.failed_at,
        },
        keys=("stage", "subject", "stream_sequence"),
        returning=("id",),
    )
    if inserted.scalar_one_or_none() is not None and metrics is not None:
        after_commit(session, metrics.dead_letters.labels(letter.stage).inc)


@functools.cache
def _priority_policy() -> PolicyStore:
    """The classifier's priority policy (its contact rules), hot-reloaded like there."""
    return PolicyStore()


def project_contact_profile(
    session: Session, profile: ContactProfile, metrics: ApiMetrics | None = None
) -> None:
    """Store a contact's platform profile and let it raise their conversation's priority.

    An older profile than the one stored changes nothing (redeliveries, reordering).
    """
    conversation = _conversation(session, profile.conversation, None)
    contact = session.get(ContactRow, conversation.contact_id)
    assert contact is not None
    stored_at = contact.profile_fetched_at
    if stored_at is None or profile.fetched_at > stored_at:
        contact.name = profile.display_name or contact.name
        contact.first_name = profile.given_name or contact.first_name
        contact.last_name = profile.last_name or contact.last_name
        contact.username = profile.username or contact.username
        contact.profile_pic = profile.profile_pic or contact.profile_pic
        if profile.followers is not None:
            contact.followers = profile.followers
        if profile.verified is not None:
            contact.verified = profile.verified
        if profile.follows_business is not None:
            contact.follows_business = profile.follows_business
        contact.profile_fetched_at = profile.fetched_at
    if _contact_raises_priority(session, conversation, contact):
        clocks.retarget(session, conversation, profile.fetched_at)


def _contact_raises_priority(
    session: Session, conversation: ConversationRow, contact: ContactRow | None = None
) -> bool:
    """Raise an open conversation's priority as the contact rules say (never lower it),
    with the reason; True when it changed."""
    if conversation.status == ConversationStatus.RESOLVED.value:
        return False
    contact = contact or session.get(ContactRow, conversation.contact_id)
    if contact is None:
        return False
    found = contact_priority(
        _priority_policy().current(),
        Contact(
            platform_id=contact.platform_id,
            tags=contact.tags,
            vip=contact.vip,
            followers=contact.followers,
            verified=contact.verified,
        ),
    )
    if found is None or found[0].rank >= conversation.priority_rank:
        return False
    priority, reason = found
    conversation.priority = priority.value
    conversation.priority_rank = priority.rank
    conversation.priority_reason = reason
    conversation.updated_at = utcnow()
    return True


def raise_for_contact(session: Session, conversation: ConversationRow) -> bool:
    """Apply the contact rules to ``conversation`` (an agent changed its contact); True
    when its priority went up."""
    if _contact_raises_priority(session, conversation):
        clocks.retarget(session, conversation, utcnow())
        return True
    return False


ATTACHMENT_URL = "/v1/attachments/{name}"


def project_attachment(
    session: Session, copied: AttachmentCopied, metrics: ApiMetrics | None = None
) -> None:
    """Note on the message where its attachment's copy is (or why there is none).

    The platform's URL stays in the attachment for reference; ``copy`` is added.

    Raises:
        RetryLater: the message itself is not stored yet (redelivered, never dead-lettered).
    """
    message = session.execute(
        select(MessageRow)
        .where(
            col(MessageRow.channel) == copied.conversation.channel.value,
            col(MessageRow.mid) == copied.mid,
        )
        .with_for_update()
    ).scalar_one_or_none()
    if message is None:
        raise RetryLater("the attachment's message is not stored yet")
    attachments = [dict(attachment) for attachment in message.attachments]
    if copied.index >= len(attachments):
        return
    stored = copied.state == AttachmentCopyState.STORED and copied.object_name is not None
    attachments[copied.index]["copy"] = {
        "state": copied.state.value,
        "url": ATTACHMENT_URL.format(name=copied.object_name) if stored else None,
        "content_type": copied.content_type,
        "size": copied.size,
        "reason": copied.reason,
    }
    message.attachments = attachments
