"""The generic JSON channel: how internal systems post a DM."""

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.events import (
    MAX_TAGS,
    Attachment,
    Channel,
    Contact,
    Count,
    InboundMessage,
    Tag,
    at_receipt,
)


class GenericContact(BaseModel):
    """The sender of a generic DM."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256, description="The sender's id in your system.")
    name: str | None = Field(default=None, max_length=512)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    vip: bool = False
    followers: Count | None = None


class GenericMessage(BaseModel):
    """A DM from any source; ``id`` must be unique per message (it is the dedupe key)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=512, description="Unique message id (dedupe key).")
    account_id: str = Field(default="default", min_length=1, max_length=256)
    contact: GenericContact
    text: str | None = Field(default=None, max_length=20_000)
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    timestamp: AwareDatetime | None = Field(
        default=None,
        description="When it was sent (with a time zone); the receipt if absent, before 2000,"
        " or more than 5 minutes ahead. More than 5 minutes in the past needs a trusted key.",
    )

    @model_validator(mode="after")
    def _has_content(self) -> "GenericMessage":
        if not (self.text and self.text.strip()) and not self.attachments:
            raise ValueError("a message needs text or at least one attachment")
        return self

    def to_event(self, received: datetime) -> InboundMessage:
        """The shared inbound event for this message, received at ``received``."""
        contact = self.contact
        return InboundMessage(
            mid=self.id,
            channel=Channel.GENERIC,
            account_id=self.account_id,
            contact=Contact(
                platform_id=contact.id,
                name=contact.name,
                tags=contact.tags,
                vip=contact.vip,
                followers=contact.followers,
            ),
            text=self.text,
            attachments=self.attachments,
            platform_ts=at_receipt(self.timestamp, received) if self.timestamp else received,
            received_at=received,
        )


MAX_BATCH = 100

GenericBody = Annotated[
    GenericMessage | Annotated[list[GenericMessage], Field(min_length=1, max_length=MAX_BATCH)],
    Field(description="One message, or a batch of up to 100."),
]


class Accepted(BaseModel):
    """What was stored: every accepted message is in JetStream when this is returned."""

    accepted: int = Field(description="Messages in the request.")
    duplicates: int = Field(description="Of those, already stored earlier (not stored again).")
