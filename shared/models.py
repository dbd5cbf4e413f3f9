"""The queue database: contacts, conversations and their messages.

The api service is the only writer. Every row an event creates has a natural
unique key (the platform's ids), so projecting an event twice changes nothing.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, TypeDecorator, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from shared.events import utcnow


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


class ConversationStatus(StrEnum):
    """Where a conversation is in its life."""

    OPEN = "open"
    PENDING = "pending"
    WAITING = "waiting"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


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
    __table_args__ = (UniqueConstraint("channel", "platform_id", name="uq_contacts_platform"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    platform_id: str = Field(max_length=256)
    name: str | None = Field(default=None, max_length=512)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    vip: bool = False
    followers: int | None = None
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class ConversationRow(SQLModel, table=True):
    """A contact's thread with one page/account; reopened, not recreated, when they write again."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("channel", "account_id", "contact_id", name="uq_conversations_thread"),
        Index("ix_conversations_queue", "status", "priority_rank", "sla_due_at", "id"),
        Index("ix_conversations_team_queue", "team", "status", "priority_rank", "sla_due_at"),
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
    last_message_at: datetime | None = _ts()
    last_customer_message_at: datetime | None = _ts()
    first_response_at: datetime | None = _ts()
    sla_due_at: datetime | None = _ts()


class MessageRow(SQLModel, table=True):
    """One message in a conversation, inbound or outbound; ``(channel, mid)`` is unique."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "mid", name="uq_messages_mid"),
        Index("ix_messages_conversation", "conversation_id", "platform_ts"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id")
    channel: str = Field(max_length=32)
    mid: str = Field(max_length=512)
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


metadata = SQLModel.metadata
