"""Pydantic models of Meta's webhook bodies: the boundary, tolerant of fields added later.

Messenger (``object: page``) and Instagram (``object: instagram``) share the
``entry[].messaging[]`` shape; WhatsApp Cloud API (``object: whatsapp_business_account``)
uses ``entry[].changes[].value``. Timestamps arrive as epoch milliseconds (Messenger,
Instagram), epoch seconds in a string (WhatsApp) or ISO 8601 in some tools' fixtures:
:data:`Timestamp` accepts all three, is always timezone-aware, and is the receipt when
absurd (:func:`shared.events.at_receipt`).
"""

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.events import at_receipt, utcnow


def _sane(moment: datetime) -> datetime:
    return at_receipt(moment, utcnow())


Timestamp = Annotated[datetime, AfterValidator(_sane)]
PlatformId = Annotated[str, Field(min_length=1, max_length=256)]


class Wire(BaseModel):
    """Base of the wire models: unknown fields ignored, numeric ids read as strings."""

    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class Envelope(Wire):
    """Every Meta webhook body: which product, and its entries."""

    object: str = Field(min_length=1)
    entry: list[dict[str, Any]]


# Messenger and Instagram ------------------------------------------------------------


class Party(Wire):
    """``sender`` or ``recipient``: a page / IG account, or a person's scoped id."""

    id: PlatformId


class WireAttachment(Wire):
    """``message.attachments[]``; the old fallback form carries ``title`` and ``URL`` beside."""

    type: str | None = None
    payload: dict[str, Any] | None = None
    title: str | None = None
    url: str | None = None
    upper_url: str | None = Field(default=None, alias="URL")


class QuickReply(Wire):
    """``message.quick_reply``: the payload of the quick reply the person tapped."""

    payload: str | None = None


class StoryReference(Wire):
    """``message.reply_to.story`` (Instagram story replies)."""

    id: str | None = None
    url: str | None = None


class ReplyTo(Wire):
    """``message.reply_to``: the message or the story replied to."""

    mid: str | None = None
    story: StoryReference | None = None


class WireMessage(Wire):
    """``message``: a text, attachments, an echo of the page's own message, or an unsend."""

    mid: str = Field(min_length=1)
    text: str | None = None
    attachments: list[WireAttachment] | None = None
    quick_reply: QuickReply | None = None
    reply_to: ReplyTo | None = None
    referral: dict[str, Any] | None = None
    is_echo: bool = False
    is_deleted: bool = False
    is_unsupported: bool = False
    app_id: str | None = None


class Delivery(Wire):
    """``delivery``: the page's messages up to ``watermark`` (or ``mids``) reached the person."""

    mids: list[str] | None = None
    watermark: Timestamp | None = None


class Read(Wire):
    """``read``: Messenger says a ``watermark``; Instagram names the ``mid`` seen."""

    watermark: Timestamp | None = None
    mid: str | None = None


class Reaction(Wire):
    """``reaction``: someone reacted to (or un-reacted) a message."""

    mid: str | None = None
    action: str = "react"
    reaction: str | None = None
    emoji: str | None = None


class Postback(Wire):
    """``postback``: a button, ice-breaker or Get Started tap."""

    mid: str | None = None
    title: str | None = None
    payload: str | None = None
    referral: dict[str, Any] | None = None


class MessageEdit(Wire):
    """``message_edit``: a person edited a message they sent."""

    mid: str = Field(min_length=1)
    text: str | None = None
    num_edit: int | None = None


class MessagingEvent(Wire):
    """One ``entry[].messaging[]`` (or ``standby[]``) event."""

    sender: Party
    recipient: Party
    timestamp: Timestamp | None = None
    message: WireMessage | None = None
    delivery: Delivery | None = None
    read: Read | None = None
    reaction: Reaction | None = None
    postback: Postback | None = None
    referral: dict[str, Any] | None = None
    message_edit: MessageEdit | None = None


class MessagingEntry(Wire):
    """One ``entry[]`` of a Messenger or Instagram body."""

    id: PlatformId
    time: Timestamp | None = None
    messaging: list[Any] | None = None
    standby: list[Any] | None = None
    changes: list[Any] | None = None


# WhatsApp Cloud API -----------------------------------------------------------------


class WaMetadata(Wire):
    """``value.metadata``: the business phone number the event is about."""

    phone_number_id: PlatformId
    display_phone_number: str | None = None


class WaProfile(Wire):
    """``contacts[].profile``."""

    name: str | None = None


class WaContact(Wire):
    """``value.contacts[]``: who wrote, with the name they chose."""

    wa_id: str | None = None
    profile: WaProfile | None = None


class WaText(Wire):
    """``text``."""

    body: str | None = None


class WaContext(Wire):
    """``context``: the message this one replies to (or was forwarded)."""

    id: str | None = None
    forwarded: bool = False


class WaReply(Wire):
    """``interactive.button_reply`` / ``interactive.list_reply``."""

    id: str | None = None
    title: str | None = None
    description: str | None = None


class WaInteractive(Wire):
    """``interactive``: the answer to a reply button or list message."""

    type: str | None = None
    button_reply: WaReply | None = None
    list_reply: WaReply | None = None
    nfm_reply: dict[str, Any] | None = None


class WaButton(Wire):
    """``button``: a template's quick-reply button."""

    text: str | None = None
    payload: str | None = None


class WaReaction(Wire):
    """``reaction``: an emoji on a message; an empty emoji removes it."""

    message_id: str | None = None
    emoji: str | None = None


class WaMessage(Wire):
    """``value.messages[]`` (and ``value.message_echoes[]``: the business's own, from its app)."""

    model_config = ConfigDict(populate_by_name=True)

    sender: PlatformId = Field(alias="from")
    to: str | None = None
    id: str = Field(min_length=1)
    timestamp: Timestamp
    type: str = "unknown"
    text: WaText | None = None
    context: WaContext | None = None
    referral: dict[str, Any] | None = None
    interactive: WaInteractive | None = None
    button: WaButton | None = None
    reaction: WaReaction | None = None
    location: dict[str, Any] | None = None
    contacts: list[dict[str, Any]] | None = None
    image: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    sticker: dict[str, Any] | None = None
    order: dict[str, Any] | None = None
    system: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None


class WaError(Wire):
    """``statuses[].errors[]``."""

    code: int | None = None
    title: str | None = None
    message: str | None = None
    error_data: dict[str, Any] | None = None


class WaStatus(Wire):
    """``value.statuses[]``: what became of a message the business sent."""

    id: str = Field(min_length=1)
    status: str
    timestamp: Timestamp
    recipient_id: PlatformId
    errors: list[WaError] | None = None


class WaValue(Wire):
    """``changes[].value`` of the ``messages`` field."""

    metadata: WaMetadata
    contacts: list[WaContact] | None = None
    messages: list[Any] | None = None
    message_echoes: list[Any] | None = None
    statuses: list[Any] | None = None


class WaChange(Wire):
    """``entry[].changes[]``."""

    field: str
    value: dict[str, Any]


class WaEntry(Wire):
    """One ``entry[]`` of a WhatsApp body: a WhatsApp Business Account."""

    id: PlatformId
    changes: list[Any] | None = None
