"""What the REST API returns."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ContactOut(BaseModel):
    """The customer."""

    platform_id: str
    name: str | None
    tags: list[str]
    vip: bool
    followers: int | None


class QueueItem(BaseModel):
    """A conversation waiting in a queue."""

    id: int
    channel: str
    account_id: str
    contact: ContactOut
    status: str
    team: str | None
    assignee: str | None
    priority: str
    category: str | None
    language: str | None
    is_request: bool
    created_at: datetime
    last_message_at: datetime | None
    last_customer_message_at: datetime | None
    sla_due_at: datetime | None


class QueuePage(BaseModel):
    """One page of the queue; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[QueueItem]
    next_cursor: str | None = Field(description="Absent on the last page.")


class MessageOut(BaseModel):
    """A message in a conversation."""

    id: int
    mid: str
    direction: str
    author: str
    text: str | None
    attachments: list[dict[str, Any]]
    status: str
    error: str | None
    category: str | None
    priority: str | None
    language: str | None
    sentiment: float | None
    classification: dict[str, Any] | None
    platform_ts: datetime
    received_at: datetime


class ConversationDetail(QueueItem):
    """A conversation with its messages, oldest first."""

    first_response_at: datetime | None
    messages: list[MessageOut]


class Problem(BaseModel):
    """An error: what went wrong, for a person to read."""

    detail: str
