"""Meta webhook bodies in, shared events out: pure functions, no framework, no I/O.

Each platform event becomes one bus event with its dedupe key (``Nats-Msg-Id``):
``<channel>:<mid>`` for messages, a key built from the platform's ids where it gives
them, else ``<channel>:<kind>:<sha256 of the event's canonical JSON>``, so Meta's
retry of a body produces the same keys. An event whose kind is unknown, or whose
fields do not fit, is kept whole as a :class:`RawEvent`: a signed body is never
refused because of one event in it.
"""

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.ingest.meta.wire import (
    Envelope,
    MessagingEntry,
    MessagingEvent,
    WaChange,
    WaContact,
    WaEntry,
    WaMessage,
    WaStatus,
    WaValue,
    WireAttachment,
    WireMessage,
)
from shared.events import (
    MAX_JSON_DEPTH,
    Attachment,
    Channel,
    Contact,
    ConversationRef,
    InboundMessage,
    MessageUpdate,
    PlatformError,
    RawEvent,
    StatusEvent,
    StatusKind,
    StoryRef,
    UpdateKind,
    json_depth,
    utcnow,
)
from shared.packaged import utf8_encodable

OBJECT_CHANNELS = {
    "page": Channel.MESSENGER,
    "instagram": Channel.INSTAGRAM,
    "whatsapp_business_account": Channel.WHATSAPP,
}
PlatformEvent = InboundMessage | StatusEvent | MessageUpdate | RawEvent
EARLIEST = datetime.min.replace(tzinfo=UTC)
MAX_BODY_DEPTH = 256
# WhatsApp error codes worth sending again later: rate limits and temporary outages.
RETRYABLE_WHATSAPP_ERRORS = frozenset({130429, 131000, 131016, 131056, 133004})
ENVELOPE_KEYS = frozenset({"sender", "recipient", "timestamp"})
WHATSAPP_MEDIA = {
    "image": "image",
    "video": "video",
    "audio": "audio",
    "document": "file",
    "sticker": "sticker",
}
WHATSAPP_STATUSES = {
    "sent": StatusKind.SENT,
    "delivered": StatusKind.DELIVERED,
    "read": StatusKind.READ,
    "failed": StatusKind.FAILED,
}

WireModel = TypeVar("WireModel", bound=BaseModel)


class InvalidBody(ValueError):  # noqa: N818 - it is a verdict on the body, not a bug
    """The body is not a webhook of the expected shape: answered 400 with the reason."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class Normalised:
    """One bus event made from a platform event, with its dedupe key and a metrics kind."""

    event: PlatformEvent
    msg_id: str
    kind: str

    @property
    def conversation(self) -> ConversationRef | None:
        """The conversation the event belongs to; None for raw events."""
        event = self.event
        if isinstance(event, InboundMessage):
            return event.conversation
        if isinstance(event, StatusEvent | MessageUpdate):
            return event.conversation
        return None

    @property
    def platform_ts(self) -> datetime | None:
        """When the platform says it happened (None for raw events)."""
        return None if isinstance(self.event, RawEvent) else self.event.platform_ts


@dataclass(frozen=True, slots=True)
class Batch:
    """Every event of one body, in platform-time order, each dedupe key once."""

    channel: Channel
    events: list[Normalised]
    repeated: int = 0


def parse_json(raw: bytes) -> Any:
    """The decoded body; :class:`InvalidBody` when it is not strict UTF-8 JSON of sane depth.

    Strict: UTF-8 only, no ``NaN`` or ``Infinity``, no lone UTF-16 surrogate, objects and
    arrays nested at most ``MAX_BODY_DEPTH`` levels.
    """
    try:
        document = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InvalidBody(f"malformed JSON: nested deeper than {MAX_BODY_DEPTH} levels") from exc
    except ValueError as exc:
        raise InvalidBody(f"malformed JSON: {exc}"[:300]) from exc
    if json_depth(document, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise InvalidBody(f"malformed JSON: nested deeper than {MAX_BODY_DEPTH} levels")
    if b"\\ud" in raw.lower() and not utf8_encodable(document):
        # A lone UTF-16 surrogate escape decodes, but could never be re-encoded to publish.
        raise InvalidBody("malformed JSON: unpaired UTF-16 surrogate in a string")
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def normalise(channel: Channel, document: Any) -> Batch:
    """Normalise a decoded webhook body posted to ``channel``'s endpoint."""
    envelope = _validate(Envelope, document, "")
    posted_as = OBJECT_CHANNELS.get(envelope.object)
    if posted_as is None:
        raise InvalidBody(f"unknown object {envelope.object!r}", "object")
    if posted_as != channel:
        raise InvalidBody(
            f"a {posted_as.value} webhook (object {envelope.object!r}) posted to the"
            f" {channel.value} endpoint",
            "object",
        )
    events: list[Normalised] = []
    for index, raw_entry in enumerate(envelope.entry):
        if channel == Channel.WHATSAPP:
            events += _whatsapp_entry(_validate(WaEntry, raw_entry, f"entry[{index}]"))
        else:
            entry = _validate(MessagingEntry, raw_entry, f"entry[{index}]")
            events += _messaging_entry(channel, entry)
    return _ordered_once(channel, events)


def _validate(model: type[WireModel], document: Any, where: str) -> WireModel:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        field = ".".join(part for part in (where, location) if part) or None
        raise InvalidBody(error["msg"], field) from exc


def _ordered_once(channel: Channel, events: list[Normalised]) -> Batch:
    seen: set[str] = set()
    unique: list[Normalised] = []
    for event in events:
        if event.msg_id not in seen:
            seen.add(event.msg_id)
            unique.append(event)
    unique.sort(key=lambda e: e.platform_ts or EARLIEST)
    return Batch(channel, unique, repeated=len(events) - len(unique))


def content_hash(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of ``parts``: the same event always hashes the same."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _raw(
    channel: Channel,
    account_id: str | None,
    kind: str,
    body: Any,
    reason: str | None = None,
) -> Normalised:
    document = body if isinstance(body, dict) else {"value": body}
    digest = content_hash(channel.value, account_id, document)
    if json_depth(document) > MAX_JSON_DEPTH:
        document = {}
        reason = f"{reason + '; ' if reason else ''}body nested deeper than {MAX_JSON_DEPTH} levels"
    event = RawEvent(
        event_id=f"{channel.value}:raw:{digest}",
        channel=channel,
        kind=kind[:128],
        body=document,
        account_id=account_id,
        reason=reason,
    )
    return Normalised(event, event.event_id, "raw")


def _kept(
    channel: Channel,
    account_id: str,
    item: Any,
    kind: str,
    build: Callable[[], list[Normalised]],
) -> list[Normalised]:
    """``build()``, or the item kept raw when it does not fit the events' limits."""
    try:
        return build()
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        return [_raw(channel, account_id, kind, item, f"{location}: {error['msg']}"[:500])]


# Messenger and Instagram ------------------------------------------------------------


def _messaging_entry(channel: Channel, entry: MessagingEntry) -> list[Normalised]:
    events: list[Normalised] = []
    for item in [*(entry.messaging or []), *(entry.standby or [])]:
        events += _messaging_item(channel, entry, item)
    for change in entry.changes or []:
        field = change.get("field") if isinstance(change, dict) else None
        events.append(_raw(channel, entry.id, str(field or "change"), change))
    return events


def _event_kind(item: Any) -> str:
    if not isinstance(item, dict):
        return "unknown"
    keys = sorted(key for key in item if key not in ENVELOPE_KEYS)
    return keys[0] if keys else "empty"


def _messaging_item(channel: Channel, entry: MessagingEntry, item: Any) -> list[Normalised]:
    kind = _event_kind(item)
    if not isinstance(item, dict):
        return [_raw(channel, entry.id, kind, item, "an event must be a JSON object")]
    try:
        event = MessagingEvent.model_validate(item)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        return [_raw(channel, entry.id, kind, item, f"{location}: {error['msg']}"[:500])]
    return _kept(
        channel, entry.id, item, kind, lambda: _messaging_event(channel, entry, event, item)
    )


def _messaging_event(
    channel: Channel, entry: MessagingEntry, event: MessagingEvent, item: dict[str, Any]
) -> list[Normalised]:
    by_page = bool(event.message and event.message.is_echo) or (
        event.sender.id == entry.id != event.recipient.id
    )
    # Meta writes every event from its author: the contact is the other party.
    account_id, contact_id = (
        (event.sender.id, event.recipient.id) if by_page else (event.recipient.id, event.sender.id)
    )
    conversation = ConversationRef(channel=channel, account_id=account_id, contact_id=contact_id)
    at = event.timestamp or entry.time

    if event.message is not None:
        message = event.message
        if message.is_deleted:
            return [
                _update(
                    f"{channel.value}:delete:{message.mid}",
                    UpdateKind.DELETE,
                    conversation,
                    at,
                    mid=message.mid,
                    by_page=by_page,
                )
            ]
        inbound = _messaging_message(conversation, message, at or utcnow(), echo=by_page)
        return [
            Normalised(inbound, f"{channel.value}:{message.mid}", "echo" if by_page else "message")
        ]
    # The other events carry no id of their own: their content is their dedupe key.
    digest = content_hash(channel.value, entry.id, item)
    if event.message_edit is not None:
        edit = event.message_edit
        key = edit.num_edit if edit.num_edit is not None else digest
        return [
            _update(
                f"{channel.value}:edit:{edit.mid}:{key}",
                UpdateKind.EDIT,
                conversation,
                at,
                mid=edit.mid,
                by_page=by_page,
                text=edit.text,
                edit_count=edit.num_edit,
            )
        ]
    if event.reaction is not None:
        reaction = event.reaction
        kind = UpdateKind.UNREACT if reaction.action == "unreact" else UpdateKind.REACT
        return [
            _update(
                f"{channel.value}:reaction:{digest}",
                kind,
                conversation,
                at,
                mid=reaction.mid,
                by_page=by_page,
                reaction=reaction.reaction,
                emoji=reaction.emoji,
            )
        ]
    if event.postback is not None:
        postback = event.postback
        mid = postback.mid or f"postback:{digest}"
        tapped = InboundMessage(
            mid=mid,
            channel=channel,
            account_id=account_id,
            contact=Contact(platform_id=contact_id),
            text=postback.title,
            postback_payload=postback.payload,
            referral=postback.referral,
            is_echo=by_page,
            platform_ts=at or utcnow(),
        )
        return [Normalised(tapped, f"{channel.value}:{mid}", "postback")]
    if event.referral is not None:
        mid = f"referral:{digest}"
        referred = InboundMessage(
            mid=mid,
            channel=channel,
            account_id=account_id,
            contact=Contact(platform_id=contact_id),
            referral=event.referral,
            platform_ts=at or utcnow(),
        )
        return [Normalised(referred, f"{channel.value}:{mid}", "referral")]
    if event.delivery is not None:
        delivery = event.delivery
        status = StatusEvent(
            event_id=f"{channel.value}:delivery:{digest}",
            kind=StatusKind.DELIVERED,
            conversation=conversation,
            mids=delivery.mids or [],
            watermark=delivery.watermark,
            platform_ts=at or delivery.watermark or utcnow(),
        )
        return [Normalised(status, status.event_id, "delivered")]
    if event.read is not None:
        read = event.read
        status = StatusEvent(
            event_id=f"{channel.value}:read:{digest}",
            kind=StatusKind.READ,
            conversation=conversation,
            mids=[read.mid] if read.mid else [],
            watermark=read.watermark,
            platform_ts=at or read.watermark or utcnow(),
        )
        return [Normalised(status, status.event_id, "read")]
    return [_raw(channel, entry.id, _event_kind(item), item)]


def _update(
    event_id: str,
    kind: UpdateKind,
    conversation: ConversationRef,
    at: datetime | None,
    **fields: Any,
) -> Normalised:
    update = MessageUpdate(
        event_id=event_id,
        kind=kind,
        conversation=conversation,
        platform_ts=at or utcnow(),
        **fields,
    )
    return Normalised(update, event_id, kind.value)


def _messaging_message(
    conversation: ConversationRef, message: WireMessage, at: datetime, *, echo: bool
) -> InboundMessage:
    attachments = [_attachment(a) for a in message.attachments or []]
    if message.is_unsupported:
        attachments.append(Attachment(type="unsupported"))
    reply_to = message.reply_to
    story = reply_to.story if reply_to else None
    return InboundMessage(
        mid=message.mid,
        channel=conversation.channel,
        account_id=conversation.account_id,
        contact=Contact(platform_id=conversation.contact_id),
        text=message.text,
        attachments=attachments,
        quick_reply_payload=message.quick_reply.payload if message.quick_reply else None,
        referral=message.referral,
        reply_to_mid=reply_to.mid if reply_to else None,
        reply_to_story=StoryRef(id=story.id, url=story.url) if story else None,
        is_echo=echo,
        app_id=message.app_id if echo else None,
        platform_ts=at,
    )


def _attachment(attachment: WireAttachment) -> Attachment:
    payload = dict(attachment.payload or {})
    kind = attachment.type or "unknown"
    if kind == "image" and "sticker_id" in payload:
        # Messenger sends stickers (the thumbs-up too) as images with a sticker id.
        kind = "sticker"
    if attachment.title and "title" not in payload:
        payload["title"] = attachment.title
    url = payload.get("url")
    if not isinstance(url, str):
        url = attachment.url or attachment.upper_url
    return Attachment(type=kind[:64], url=url, payload=payload)


# WhatsApp Cloud API -----------------------------------------------------------------


def _whatsapp_entry(entry: WaEntry) -> list[Normalised]:
    events: list[Normalised] = []
    channel = Channel.WHATSAPP
    for item in entry.changes or []:
        try:
            change = WaChange.model_validate(item)
        except ValidationError as exc:
            events.append(_raw(channel, entry.id, "change", item, str(exc.errors()[0]["msg"])))
            continue
        if change.field not in {"messages", "smb_message_echoes"}:
            events.append(_raw(channel, entry.id, change.field, item))
            continue
        try:
            value = WaValue.model_validate(change.value)
        except ValidationError as exc:
            events.append(_raw(channel, entry.id, change.field, item, str(exc.errors()[0]["msg"])))
            continue
        found = _whatsapp_value(value)
        events += found or [_raw(channel, value.metadata.phone_number_id, change.field, item)]
    return events


def _whatsapp_value(value: WaValue) -> list[Normalised]:
    account_id = value.metadata.phone_number_id
    names = _contact_names(value.contacts or [])

    def inbound(message: WaMessage) -> Normalised | None:
        return _wa_message(message, account_id, names)

    def echo(message: WaMessage) -> Normalised | None:
        return _wa_message(message, account_id, names, echo=True)

    def status(update: WaStatus) -> Normalised | None:
        return _wa_status(update, account_id)

    events: list[Normalised] = []
    for item in value.messages or []:
        events += _each(WaMessage, item, account_id, inbound)
    for item in value.message_echoes or []:
        events += _each(WaMessage, item, account_id, echo)
    for item in value.statuses or []:
        events += _each(WaStatus, item, account_id, status)
    return events


def _each(
    model: type[WireModel],
    item: Any,
    account_id: str,
    build: Callable[[WireModel], Normalised | None],
) -> list[Normalised]:
    """One WhatsApp message or status, kept raw when it is not one dmdesk knows."""
    channel = Channel.WHATSAPP
    kind = "unknown"
    if isinstance(item, dict):
        status = item.get("status")
        kind = f"status:{status}" if status is not None else str(item.get("type") or "message")
    try:
        parsed = model.model_validate(item)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        return [_raw(channel, account_id, kind, item, f"{location}: {error['msg']}"[:500])]

    def built() -> list[Normalised]:
        event = build(parsed)
        return [event] if event is not None else [_raw(channel, account_id, kind, item)]

    return _kept(channel, account_id, item, kind, built)


def _contact_names(contacts: Iterable[WaContact]) -> dict[str | None, str]:
    names: dict[str | None, str] = {}
    for contact in contacts:
        if contact.profile is not None and contact.profile.name:
            names[contact.wa_id] = contact.profile.name
    if len(names) == 1:
        # One contact per message is the norm: it names the sender even when ids differ in form.
        names[None] = next(iter(names.values()))
    return names


def _wa_message(
    message: WaMessage, account_id: str, names: dict[str | None, str], *, echo: bool = False
) -> Normalised | None:
    contact_id = message.to if echo else message.sender
    if not contact_id:
        return None
    conversation = ConversationRef(
        channel=Channel.WHATSAPP, account_id=account_id, contact_id=contact_id
    )
    if message.type == "reaction" and message.reaction is not None:
        emoji = message.reaction.emoji or None
        return _update(
            f"whatsapp:reaction:{message.id}",
            UpdateKind.REACT if emoji else UpdateKind.UNREACT,
            conversation,
            message.timestamp,
            mid=message.reaction.message_id,
            emoji=emoji,
            by_page=echo,
        )
    text, quick_reply = _wa_text(message)
    attachments = _wa_attachments(message)
    if not (text or quick_reply or attachments or message.referral):
        return None
    inbound = InboundMessage(
        mid=message.id,
        channel=Channel.WHATSAPP,
        account_id=account_id,
        contact=Contact(
            platform_id=contact_id,
            name=None if echo else names.get(contact_id, names.get(None)),
        ),
        text=text,
        attachments=attachments,
        quick_reply_payload=quick_reply,
        referral=message.referral,
        reply_to_mid=message.context.id if message.context else None,
        is_echo=echo,
        platform_ts=message.timestamp,
    )
    return Normalised(inbound, f"whatsapp:{message.id}", "echo" if echo else "message")


def _wa_text(message: WaMessage) -> tuple[str | None, str | None]:
    """The words the person sent or tapped, and the payload of what they tapped."""
    if message.text is not None and message.text.body:
        return message.text.body, None
    if message.interactive is not None:
        reply = message.interactive.button_reply or message.interactive.list_reply
        if reply is not None:
            return reply.title, reply.id
    if message.button is not None:
        return message.button.text, message.button.payload
    for media in WHATSAPP_MEDIA:
        content = getattr(message, media)
        if content and isinstance(content.get("caption"), str):
            return content["caption"], None
    return None, None


def _wa_attachments(message: WaMessage) -> list[Attachment]:
    attachments: list[Attachment] = []
    for media, kind in WHATSAPP_MEDIA.items():
        content: dict[str, Any] | None = getattr(message, media)
        if content is not None:
            url = content.get("url")
            attachments.append(
                Attachment(type=kind, url=url if isinstance(url, str) else None, payload=content)
            )
    if message.location is not None:
        location = dict(message.location)
        if "latitude" in location and "longitude" in location:
            location["coordinates"] = {"lat": location["latitude"], "long": location["longitude"]}
        url = location.get("url")
        attachments.append(
            Attachment(type="location", url=url if isinstance(url, str) else None, payload=location)
        )
    if message.contacts:
        attachments.append(Attachment(type="contacts", payload={"contacts": message.contacts}))
    if message.order is not None:
        attachments.append(Attachment(type="order", payload=message.order))
    if message.interactive is not None and message.interactive.nfm_reply is not None:
        attachments.append(Attachment(type="form_reply", payload=message.interactive.nfm_reply))
    if message.type in {"unknown", "unsupported"} and message.errors:
        attachments.append(Attachment(type="unsupported", payload={"errors": message.errors}))
    return attachments


def _wa_status(status: WaStatus, account_id: str) -> Normalised | None:
    kind = WHATSAPP_STATUSES.get(status.status)
    if kind is None:
        return None
    error = None
    if status.errors:
        first = status.errors[0]
        details = (first.error_data or {}).get("details")
        parts = [first.title, first.message if first.message != first.title else None, details]
        error = PlatformError(
            code=first.code,
            message=" - ".join(str(part) for part in parts if part),
            retryable=first.code in RETRYABLE_WHATSAPP_ERRORS,
        )
    event = StatusEvent(
        event_id=f"whatsapp:status:{status.id}:{status.status}",
        kind=kind,
        conversation=ConversationRef(
            channel=Channel.WHATSAPP, account_id=account_id, contact_id=status.recipient_id
        ),
        mids=[status.id],
        error=error,
        platform_ts=status.timestamp,
    )
    return Normalised(event, event.event_id, kind.value)
