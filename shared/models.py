"""The queue database: contacts, conversations and their messages.

The api service is the only writer. Every row an event creates has a natural
unique key (the platform's ids), so projecting an event twice changes nothing.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import JSON, Column, DateTime, Index, TypeDecorator, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm.attributes import manager_of_class
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Field, SQLModel, col

from shared.events import utcnow
from shared.states import ClockState, ConversationStatus


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(UTCDateTime(), nullable=nullable, index=index),
    )


# Sorts after every real deadline: the queue order of a conversation with none.
NO_DEADLINE = datetime(9999, 12, 31, tzinfo=UTC)


class Direction(StrEnum):
    """Which way a message went."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MessageStatus(StrEnum):
    """Delivery state of a message."""

    RECEIVED = "received"
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class ContactRow(SQLModel, table=True):
    """A customer on one channel."""

    __tablename__ = "contacts"
    # The platform id leads the unique keys' indexes here and on conversations and messages,
    # the channel follows: led by the channel, which nearly every row shares, an index
    # offered PostgreSQL a "match the channel, filter the rest" plan that its default
    # estimates (no statistics yet) took for cheap, a scan of the channel per lookup.
    __table_args__ = (UniqueConstraint("platform_id", "channel", name="uq_contacts_platform"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    platform_id: str = Field(max_length=256)
    name: str | None = Field(default=None, max_length=512)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    vip: bool = False
    followers: int | None = None
    bot_opted_out: bool = Field(
        default=False, description="The contact asked for no automated replies (STOP)."
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    first_name: str | None = Field(default=None, max_length=256)
    last_name: str | None = Field(default=None, max_length=256)
    username: str | None = Field(default=None, max_length=256)
    profile_pic: str | None = Field(default=None, max_length=4096)
    verified: bool | None = None
    follows_business: bool | None = None
    profile_fetched_at: datetime | None = _ts()
    notes: str | None = Field(default=None, description="Agents' notes on the contact.")
    person_id: int | None = Field(
        default=None,
        index=True,
        description="Contacts linked as one person (on several channels) share it: the"
        " smallest id among them.",
    )


class ConversationRow(SQLModel, table=True):
    """A contact's thread with one page/account; reopened, not recreated, when they write again."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("contact_id", "account_id", "channel", name="uq_conversations_thread"),
        # The queue reads unresolved conversations in (priority, deadline, id) order:
        # partial indexes serve that order directly, for everyone and per team.
        Index(
            "ix_conversations_open_queue",
            "priority_rank",
            "queue_due_at",
            "id",
            postgresql_where=sql_text("status <> 'resolved'"),
            sqlite_where=sql_text("status <> 'resolved'"),
        ),
        Index(
            "ix_conversations_open_team_queue",
            "team",
            "priority_rank",
            "queue_due_at",
            "id",
            postgresql_where=sql_text("status <> 'resolved'"),
            sqlite_where=sql_text("status <> 'resolved'"),
        ),
        Index("ix_conversations_status", "status"),
        Index(
            "ix_conversations_bot_undecided",
            "last_message_at",
            postgresql_where=sql_text("bot_outcome IS NULL AND bot_replied_at IS NOT NULL"),
            sqlite_where=sql_text("bot_outcome IS NULL AND bot_replied_at IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    account_id: str = Field(max_length=256)
    contact_id: int = Field(foreign_key="contacts.id")
    status: str = Field(default=ConversationStatus.OPEN.value, max_length=16)
    team: str | None = Field(default=None, max_length=128)
    assignee: str | None = Field(default=None, max_length=128)
    priority: str = Field(default="normal", max_length=16)
    priority_rank: int = 2
    category: str | None = Field(default=None, max_length=32)
    language: str | None = Field(default=None, max_length=8)
    is_request: bool = False
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    last_message_at: datetime | None = _ts()
    last_customer_message_at: datetime | None = _ts()
    first_response_at: datetime | None = _ts()
    sla_due_at: datetime | None = _ts()
    queue_due_at: datetime = Field(
        default=NO_DEADLINE,
        sa_column=Column(UTCDateTime(), nullable=False),
        description="sla_due_at, or NO_DEADLINE: the queue's sort key.",
    )
    snoozed_until: datetime | None = _ts()
    resolved_at: datetime | None = _ts()
    assigned_at: datetime | None = _ts()
    nudged_at: datetime | None = _ts()
    bot_opted_out: bool = Field(
        default=False, description="The contact opted out of automated replies here."
    )
    handoff_reason: str | None = Field(default=None, max_length=512)
    handoff_rule: str | None = Field(default=None, max_length=128)
    handoff_signals: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    faq_entry: str | None = Field(default=None, max_length=128)
    faq_score: float | None = None
    faq_settles: float | None = Field(
        default=None, description="The answer check's probability that the FAQ's answer settles it."
    )
    priority_reason: str | None = Field(
        default=None, max_length=512, description="Why the contact raised the priority."
    )
    status_changed_at: datetime | None = Field(
        default=None,
        sa_column=Column(UTCDateTime(), nullable=True),
        description="When the status last changed (a message older than that does not undo it).",
    )
    awaiting_since: datetime | None = Field(
        default=None,
        sa_column=Column(UTCDateTime(), nullable=True),
        description="The customer's first message since the last response the policy counts.",
    )
    bot_replied_at: datetime | None = Field(
        default=None,
        sa_column=Column(UTCDateTime(), nullable=True),
        description="When the bot's last reply was sent.",
    )
    bot_outcome: str | None = Field(
        default=None,
        max_length=16,
        description="Bot containment, decided once: contained or escalated (see containment.py).",
    )


def unresolved() -> ColumnElement[bool]:
    """Conversations still in someone's queue; the predicate the partial queue indexes use."""
    return col(ConversationRow.status) != ConversationStatus.RESOLVED.value


class MessageRow(SQLModel, table=True):
    """One message in a conversation, inbound or outbound; ``(channel, mid)`` is unique."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mid", "channel", name="uq_messages_mid"),
        Index("ix_messages_conversation", "conversation_id", "platform_ts"),
        Index("uq_messages_request", "request_id", "channel", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id")
    channel: str = Field(max_length=32)
    mid: str = Field(
        max_length=512,
        description="The platform's id; a reply not sent yet: request:<request_id>.",
    )
    request_id: str | None = Field(
        default=None, max_length=256, description="dmdesk's own reply: its outbound request."
    )
    direction: str = Field(max_length=16)
    author: str = Field(max_length=16, description="customer, bot, agent or page (an echo)")
    text: str | None = None
    attachments: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    status: str = Field(default=MessageStatus.RECEIVED.value, max_length=16)
    error: str | None = None
    category: str | None = Field(default=None, max_length=32)
    priority: str | None = Field(default=None, max_length=16)
    language: str | None = Field(default=None, max_length=8)
    sentiment: float | None = None
    classification: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    reactions: dict[str, str] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False, server_default=sql_text("'{}'")),
        description="Reaction by side: {'customer': emoji, 'page': emoji}.",
    )
    edit_count: int = Field(default=0, sa_column_kwargs={"server_default": sql_text("0")})
    deleted_at: datetime | None = _ts()
    platform_ts: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class DeadLetterRow(SQLModel, table=True):
    """A message a stage gave up on, kept for inspection and replay."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("stage", "subject", "stream_sequence", name="uq_dlq_origin"),
    )

    id: int | None = Field(default=None, primary_key=True)
    stage: str = Field(max_length=64)
    subject: str = Field(max_length=256)
    stream_sequence: int | None = None
    deliveries: int
    error_type: str = Field(max_length=256)
    error: str
    original: str
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    failed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    replayed_at: datetime | None = _ts()


class Scope(StrEnum):
    """What an API key may do; each scope includes the ones before it."""

    READ = "read"
    AGENT = "agent"
    ADMIN = "admin"


class AgentRow(SQLModel, table=True):
    """A human agent: the teams they work for, whether they take work now, and how much."""

    __tablename__ = "agents"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    teams: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    online: bool = False
    capacity: int = Field(default=5, ge=0, description="Open conversations at most.")
    last_assigned_at: datetime | None = _ts()


class TeamRow(SQLModel, table=True):
    """A team's queue settings."""

    __tablename__ = "teams"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    auto_assign: bool = Field(
        default=False, description="Round robin among online agents, within capacity."
    )


class ApiKeyRow(SQLModel, table=True):
    """An API key, stored as the SHA-256 of the secret (the secret is shown once)."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    prefix: str = Field(max_length=16, description="First characters, to recognise a key.")
    key_hash: str = Field(max_length=64, unique=True)
    scope: str = Field(max_length=16)
    agent: str | None = Field(
        default=None,
        max_length=128,
        foreign_key="agents.name",
        description="The agent an agent-scope key acts as (None: any agent it names).",
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    revoked_at: datetime | None = _ts()


class NoteRow(SQLModel, table=True):
    """An internal note an agent left on a conversation (never sent to the customer)."""

    __tablename__ = "notes"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id", index=True)
    author: str = Field(max_length=128)
    text: str
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class ActivityRow(SQLModel, table=True):
    """One thing that happened to a conversation: a status change, an assignment, a
    transfer, an SLA event or a bot decision, with when and who (the actor)."""

    __tablename__ = "activity"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id", index=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    kind: str = Field(max_length=32)
    actor: str = Field(max_length=128)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class IdempotencyRow(SQLModel, table=True):
    """The stored answer to an agent action, replayed when its Idempotency-Key comes again."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("api_key_id", "key", name="uq_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    api_key_id: int
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    status_code: int
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class CorrectionRow(SQLModel, table=True):
    """An agent's correction of the classifier: training data, and a measure of its errors."""

    __tablename__ = "corrections"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="messages.id")
    agent: str = Field(max_length=128)
    old_category: str | None = Field(default=None, max_length=32)
    new_category: str | None = Field(default=None, max_length=32)
    old_priority: str | None = Field(default=None, max_length=16)
    new_priority: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class SlaPolicyRow(SQLModel, table=True):
    """Targets for conversations of a priority (and optionally a category or channel).

    A policy is never edited in place: a change archives it and creates a new one,
    so clocks that ran under the old targets keep them.
    """

    __tablename__ = "sla_policies"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, index=True)
    priority: str = Field(max_length=16)
    category: str | None = Field(default=None, max_length=32)
    channel: str | None = Field(default=None, max_length=32)
    first_response_seconds: int | None = None
    next_response_seconds: int | None = None
    resolution_seconds: int | None = None
    calendar: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON), description="Business hours; null: 24/7."
    )
    counts_bot: bool = Field(default=False, description="Whether a bot reply is a response.")
    at_risk_share: float = 0.8
    pausing_statuses: list[str] | None = Field(
        default=None,
        sa_column=Column(JSON),
        description="Conversation statuses that pause this policy's clocks; null: pending,"
        " waiting and snoozed.",
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    archived_at: datetime | None = _ts()


class SlaClockRow(SQLModel, table=True):
    """One SLA target being measured on one conversation."""

    __tablename__ = "sla_clocks"
    __table_args__ = (
        Index("ix_sla_clocks_due", "state", "due_at"),
        Index("ix_sla_clocks_at_risk", "state", "at_risk_at"),
        Index("ix_sla_clocks_conversation", "conversation_id", "metric", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id")
    policy_id: int = Field(foreign_key="sla_policies.id")
    metric: str = Field(max_length=32)
    state: str = Field(default=ClockState.RUNNING.value, max_length=16)
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    due_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    at_risk_at: datetime | None = _ts()
    at_risk_fired: bool = False
    paused_at: datetime | None = _ts()
    stopped_at: datetime | None = _ts()
    breached_at: datetime | None = _ts()
    elapsed_seconds: float | None = Field(default=None, description="Counted time when stopped.")
    responder: str | None = Field(default=None, max_length=16, description="bot or human")
    team: str | None = Field(default=None, max_length=128)
    assignee: str | None = Field(default=None, max_length=128)


RowT = TypeVar("RowT", bound=SQLModel)


def new_row(model: type[RowT], **values: Any) -> RowT:
    """A new row of the table model ``model``: what ``model(**values)`` builds (each field
    the value given, else its default), at a fifth of the cost, for the writer's hot paths.

    SQLModel's constructor sets every field through pydantic's and SQLAlchemy's
    ``__setattr__`` (about 45 µs for a clock, of which a DM starts two or three: 8 % of the
    api's CPU in ``dmdesk bench``). A new row needs only its values in the instance's dict,
    where SQLAlchemy's flush reads a pending row's columns (its own loading fills rows the
    same way); later changes are tracked as usual. Like the constructor of a table model,
    it does not validate: build rows with it from values the code made, never from input.
    """
    if model.__sqlmodel_relationships__:
        raise TypeError(f"{model.__name__} has relationships: build it with its constructor")
    unknown = values.keys() - model.model_fields.keys()
    if unknown:
        raise TypeError(f"{model.__name__} has no field {sorted(unknown)}")
    row: RowT = manager_of_class(model).new_instance()
    row.__dict__.update(
        (name, values[name] if name in values else field.get_default(call_default_factory=True))
        for name, field in model.model_fields.items()
        if name in values or not field.is_required()
    )
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    object.__setattr__(row, "__pydantic_extra__", None)
    object.__setattr__(row, "__pydantic_private__", None)
    return row


metadata = SQLModel.metadata
