"""Versioned event schemas carried on the ``dm.>`` subjects.

Every event has ``version``: a consumer accepts the versions it knows and ignores
fields it does not (tolerant reader), so a producer may add optional fields
without a new version. Removing or changing the meaning of a field is a new
version and a note in docs/architecture.md.
"""

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Limits every event holds to, so that whatever is published can be projected and
# re-encoded: integers that fit a BIGINT (and a JSON double), moments a database
# and timedelta arithmetic can hold, JSON documents of bounded depth.
MAX_COUNT = 2**53 - 1
EARLIEST_MOMENT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_MOMENT = datetime(2100, 1, 1, tzinfo=UTC)
MAX_JSON_DEPTH = 32
MAX_TAGS = 20
MAX_TAG_LENGTH = 64
MAX_ATTACHMENTS = 50
MAX_URL_LENGTH = 8192
MAX_PAYLOAD_LENGTH = 4096
# At the door (ingest), a platform's moment before EARLIEST_MOMENT or more than this after
# the receipt is absurd: the clocks start at receipt instead (see :func:`at_receipt`).
MAX_PLATFORM_LEAD = timedelta(minutes=5)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def json_depth(document: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply ``document``'s objects and arrays nest (a scalar is 0), without recursion.

    Stops counting past ``limit``.
    """
    deepest = 0
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth) for child in children)
    return deepest


def _shallow(document: Any) -> Any:
    if json_depth(document) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return document


def _projectable(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not EARLIEST_MOMENT <= moment < LATEST_MOMENT:
        raise ValueError(
            f"must be between {EARLIEST_MOMENT.year} and {LATEST_MOMENT.year} (timezone-aware)"
        )
    return moment


def at_receipt(moment: datetime, received: datetime) -> datetime:
    """``moment`` as reported, or ``received`` when it is absurd.

    A platform's time is kept as it says, unless it is before 2000 (year 1, the epoch)
    or more than ``MAX_PLATFORM_LEAD`` after the receipt (year 9999): then the clocks
    start at receipt.
    """
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware if EARLIEST_MOMENT <= aware <= received + MAX_PLATFORM_LEAD else received


JsonObject = Annotated[dict[str, Any], AfterValidator(_shallow)]
Moment = Annotated[datetime, AfterValidator(_projectable)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_LENGTH)]


class Event(BaseModel):
    """Base of every bus event."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Channel(StrEnum):
    """Where a DM came from."""

    MESSENGER = "messenger"
    INSTAGRAM = "instagram"
    WHATSAPP = "whatsapp"
    GENERIC = "generic"


class Category(StrEnum):
    """What a DM is about."""

    INQUIRY = "inquiry"
    ORDER_SHIPPING = "order_shipping"
    REFUND_BILLING = "refund_billing"
    ACCOUNT = "account"
    TECHNICAL = "technical"
    COMPLAINT = "complaint"
    NEGATIVE_REVIEW = "negative_review"
    FEEDBACK = "feedback"
    PRIVATE_INFO = "private_info"
    PARTNERSHIP = "partnership"
    SPAM = "spam"
    OTHER = "other"


class Priority(StrEnum):
    """How soon a human should look; ``rank`` orders the queue (0 first)."""

    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for urgent up to 3 for low."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class Contact(Event):
    """The customer, as the platform names them."""

    platform_id: str = Field(min_length=1, max_length=256)
    name: str | None = Field(default=None, max_length=512)
    first_name: str | None = Field(
        default=None,
        max_length=256,
        description="The given name, where the platform says (the responder fills it in"
        " from the contact's profile for templates).",
    )
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    vip: bool = False
    followers: Count | None = None
    verified: bool | None = Field(default=None, description="A verified account (Instagram).")


class Attachment(Event):
    """A non-text part of a message (image, video, audio, file, location, share...)."""

    type: str = Field(min_length=1, max_length=64)
    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    payload: JsonObject = Field(default_factory=dict)


class StoryRef(Event):
    """An Instagram story a message replies to (its media URL expires after a day)."""

    id: str | None = Field(default=None, max_length=512)
    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)


class ConversationRef(Event):
    """Identifies one conversation: a contact talking to one page/account on one channel."""

    channel: Channel
    account_id: str = Field(min_length=1, max_length=256)
    contact_id: str = Field(min_length=1, max_length=256)


class PrivateInfoKind(StrEnum):
    """Kinds of private information found in a message."""

    CARD = "card"
    EMAIL = "email"
    PHONE = "phone"
    IBAN = "iban"
    ADDRESS = "address"


class InboundMessage(Event):
    """A message in a conversation, as received from a platform (``dm.inbound.<channel>``).

    ``is_echo`` marks a message the page itself sent from another tool (Meta's inbox,
    a phone): it is recorded as outbound and counts as a response.
    """

    version: Literal[1] = 1
    mid: str = Field(min_length=1, max_length=512, description="Platform message id.")
    channel: Channel
    account_id: str = Field(min_length=1, max_length=256, description="Page / IG / WABA id.")
    contact: Contact
    text: str | None = Field(default=None, max_length=20_000)
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    quick_reply_payload: str | None = Field(default=None, max_length=MAX_PAYLOAD_LENGTH)
    postback_payload: str | None = Field(default=None, max_length=MAX_PAYLOAD_LENGTH)
    referral: JsonObject | None = None
    reply_to_mid: str | None = Field(default=None, max_length=512)
    reply_to_story: StoryRef | None = Field(
        default=None, description="The Instagram story this message replies to."
    )
    is_echo: bool = False
    app_id: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "For an echo, the Meta app that sent the message (Meta's app_id), where the"
            " platform says: dmdesk's own app, Meta's inbox, or another tool."
        ),
    )
    is_request: bool = False
    masked: list[PrivateInfoKind] = Field(
        default_factory=list,
        description="Kinds of private information ingest masked in the text before publishing"
        " (a card number keeps its last four digits): the customer is told not to send them.",
    )
    platform_ts: Moment
    received_at: datetime = Field(default_factory=utcnow)

    @property
    def conversation(self) -> ConversationRef:
        """The conversation this message belongs to."""
        return ConversationRef(
            channel=self.channel, account_id=self.account_id, contact_id=self.contact.platform_id
        )


class StatusKind(StrEnum):
    """What a status event says about earlier outbound messages."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class PlatformError(Event):
    """An error reported by a platform (Graph API error, WhatsApp status error)."""

    code: int | None = Field(default=None, ge=-MAX_COUNT, le=MAX_COUNT)
    subcode: int | None = Field(default=None, ge=-MAX_COUNT, le=MAX_COUNT)
    type: str | None = None
    message: str = ""
    retryable: bool = False


class StatusEvent(Event):
    """Delivery / read receipt or send status (``dm.status.<channel>``).

    ``mids`` names the messages; a ``watermark`` means every outbound message of the
    conversation up to that time.
    """

    version: Literal[1] = 1
    event_id: str = Field(min_length=1, max_length=512)
    kind: StatusKind
    conversation: ConversationRef
    mids: list[Annotated[str, Field(max_length=512)]] = Field(default_factory=list)
    watermark: Moment | None = None
    error: PlatformError | None = None
    platform_ts: Moment


class RawEvent(Event):
    """A platform event dmdesk does not understand yet, kept whole (``dm.raw.<channel>``)."""

    version: Literal[1] = 1
    event_id: str = Field(min_length=1, max_length=1024)
    channel: Channel
    kind: str = Field(max_length=128)
    body: JsonObject
    account_id: str | None = Field(default=None, description="Page / IG / WABA id, if known.")
    reason: str | None = Field(
        default=None, description="Why it was not normalised, when its kind is a known one."
    )
    received_at: datetime = Field(default_factory=utcnow)


class UpdateKind(StrEnum):
    """What happened to an earlier message."""

    REACT = "react"
    UNREACT = "unreact"
    EDIT = "edit"
    DELETE = "delete"


class MessageUpdate(Event):
    """A reaction, edit or unsend of an earlier message (``dm.update.<channel>``).

    ``mid`` names the message changed (absent when the platform did not say);
    ``by_page`` is true when the page itself did it, false for the contact.
    """

    version: Literal[1] = 1
    event_id: str = Field(min_length=1, max_length=512)
    kind: UpdateKind
    conversation: ConversationRef
    mid: str | None = Field(default=None, max_length=512)
    by_page: bool = False
    reaction: str | None = Field(default=None, description="Reaction name, e.g. love.")
    emoji: str | None = None
    text: str | None = Field(default=None, max_length=20_000, description="Text after an edit.")
    edit_count: Count | None = None
    platform_ts: Moment
    received_at: datetime = Field(default_factory=utcnow)


class PrivateInfoFinding(Event):
    """One piece of private information, located by character offsets in the text."""

    kind: PrivateInfoKind
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class CriticalSignal(StrEnum):
    """A sign that a DM can hurt the customer or the company: urgent, and for a person."""

    SAFETY = "safety"
    LEGAL = "legal"
    DISCRIMINATION = "discrimination"
    PRESS = "press"
    PERSON_AT_RISK = "person_at_risk"
    FRAUD = "fraud"


class LanguageSource(StrEnum):
    """What decided a message's language."""

    DETECTOR = "detector"
    CONTACT = "contact"
    ACCOUNT_DEFAULT = "account_default"


class Classification(Event):
    """What the classifier concluded about a message, and why."""

    language: str | None = Field(default=None, description="ISO 639-1 code.")
    language_source: LanguageSource = Field(
        default=LanguageSource.DETECTOR,
        description="detector, the contact's previous language, or the page's default.",
    )
    sentiment: float = Field(default=0.0, ge=-1.0, le=1.0)
    category: Category
    confidence: float = Field(ge=0.0, le=1.0)
    priority: Priority
    private_info: list[PrivateInfoFinding] = Field(default_factory=list)
    spam: bool = False
    complaint: bool = Field(
        default=False,
        description="The customer reports something that went wrong or is unhappy, "
        "whatever the category (a delayed order can be order_shipping and a complaint).",
    )
    critical: list[CriticalSignal] = Field(
        default_factory=list,
        description="Critical signals found (safety, legal, ...): each makes the DM urgent "
        "and hands it to a person.",
    )
    reasons: list[str] = Field(default_factory=list)
    model_version: str


class ClassifiedMessage(Event):
    """An inbound message with its classification (``dm.classified``)."""

    version: Literal[1] = 1
    message: InboundMessage
    classification: Classification
    classified_at: datetime = Field(default_factory=utcnow)


class Author(StrEnum):
    """Who wrote an outbound message."""

    BOT = "bot"
    AGENT = "agent"


class OutboundRequest(Event):
    """A reply to send through the platform (``dm.outbound.requested``).

    ``request_id`` is the dedupe key: publishing the same request twice sends once.
    """

    version: Literal[1] = 1
    request_id: str = Field(min_length=1, max_length=256)
    conversation: ConversationRef
    text: str = Field(min_length=1, max_length=2000)
    author: Author
    agent_id: str | None = None
    in_reply_to: str | None = Field(default=None, description="mid of the message answered.")
    requested_at: datetime = Field(default_factory=utcnow)
    customer_last_message_at: datetime | None = Field(
        default=None,
        description="When the customer last wrote, if the requester knows (the reply window).",
    )


class OutboundStatus(StrEnum):
    """How sending an outbound request ended."""

    SENT = "sent"
    FAILED = "failed"


class OutboundResult(Event):
    """How an outbound request ended (``dm.outbound.result``)."""

    version: Literal[1] = 1
    request_id: str
    conversation: ConversationRef
    status: OutboundStatus
    mid: str | None = Field(default=None, description="Platform id of the sent message.")
    error: PlatformError | None = None
    attempts: int = Field(default=1, ge=1)
    finished_at: datetime = Field(default_factory=utcnow)
    author: Author | None = Field(
        default=None, description="Who wrote the request (so the result stands on its own)."
    )


class BotReply(Event):
    """The responder answered a message itself (``dm.reply.bot``).

    The text goes out as the ``OutboundRequest`` with ``request_id``.
    """

    version: Literal[1] = 1
    conversation: ConversationRef
    trigger_mid: str
    request_id: str
    rule_id: str
    text: str
    decided_at: datetime = Field(default_factory=utcnow)
    tags: list[str] = Field(default_factory=list, description="Tags the rules added.")
    priority: Priority | None = Field(default=None, description="Priority a rule set, if any.")
    kind: str = Field(
        default="template",
        description="template, faq, clarify (an open question), handoff_ack, opt_out or opt_in.",
    )
    language: str | None = Field(default=None, description="The language the reply is in.")
    opt_out: Literal["out", "in"] | None = Field(
        default=None,
        description="out: the contact opted out of automated replies (this confirms it); "
        "in: they opted back in.",
    )


class Handoff(Event):
    """The responder handed a conversation to a human team (``dm.handoff``)."""

    version: Literal[1] = 1
    conversation: ConversationRef
    trigger_mid: str
    team: str = Field(min_length=1, max_length=128)
    priority: Priority
    category: Category | None = None
    reason: str
    rule_id: str | None = None
    decided_at: datetime = Field(default_factory=utcnow)
    tags: list[str] = Field(default_factory=list, description="Tags the rules added.")
    language: str | None = Field(default=None, description="The customer's language.")
    signals: list[str] = Field(
        default_factory=list,
        description="What made the rule hand off, for the agent: critical:legal, complaint, "
        "sentiment:-0.80, keyword:agent, category:complaint, opt_out...",
    )
    faq_entry: str | None = Field(default=None, description="The FAQ's best entry, if it ran.")
    faq_score: float | None = Field(default=None, description="That entry's match score (0..1).")
    faq_settles: float | None = Field(
        default=None,
        description="How likely the answer check found it that the entry's answer settles the"
        " message (0..1), when it was asked: under the knowledge base's min_answer_probability,"
        " the check refused the answer.",
    )
    opt_out: Literal["out", "in"] | None = Field(
        default=None, description="out: the hand-off is the contact's opt-out."
    )


class ConversationClosed(Event):
    """The responder closed a conversation without a reply, e.g. spam (``dm.closed``)."""

    version: Literal[1] = 1
    conversation: ConversationRef
    trigger_mid: str
    reason: str
    rule_id: str | None = None
    category: Category | None = None
    tags: list[str] = Field(default_factory=list)
    decided_at: datetime = Field(default_factory=utcnow)


class RouteOutcome(StrEnum):
    """What the responder decided on a customer DM."""

    HANDOFF = "handoff"  # to a human team (maybe with an acknowledgement to the customer)
    BOT = "bot"  # the bot answered; no team
    CLOSED = "closed"  # closed without a reply (spam)
    IGNORED = "ignored"  # nothing to do (opted-out contact, a human took over...)


class RoutedMessage(Event):
    """A customer DM, its classification and the responder's decision (``dm.routed.*``).

    The one event the api projects a customer DM from (event-carried state: no stage
    joins streams again). ``replies`` are the bot's answers, each sent as the matching
    ``requests`` entry (same ``request_id``) by the responder's sender; the subject is
    ``dm.routed.reply`` when there is something to send, else ``dm.routed.quiet``.
    """

    version: Literal[1] = 1
    message: InboundMessage
    classification: Classification
    classified_at: datetime
    outcome: RouteOutcome
    decided_at: datetime = Field(default_factory=utcnow)
    handoff: Handoff | None = None
    replies: list[BotReply] = Field(default_factory=list)
    requests: list[OutboundRequest] = Field(default_factory=list)
    closed: ConversationClosed | None = None

    @property
    def classified(self) -> ClassifiedMessage:
        """The classified DM this decision was made on."""
        return ClassifiedMessage(
            message=self.message,
            classification=self.classification,
            classified_at=self.classified_at,
        )


class DeadLetter(Event):
    """A message a stage gave up on (``dm.dlq.<stage>``), with the error and the original."""

    version: Literal[1] = 1
    stage: str
    subject: str
    stream_sequence: int | None = None
    deliveries: int
    error_type: str
    error: str
    original: str = Field(description="The original payload, decoded as UTF-8 (replacement).")
    headers: dict[str, str] = Field(default_factory=dict)
    failed_at: datetime = Field(default_factory=utcnow)


class SlaEventKind(StrEnum):
    """What happened to an SLA clock."""

    AT_RISK = "at_risk"
    BREACHED = "breached"


class SlaEvent(Event):
    """An SLA target is at risk or breached (``dm.sla.at_risk`` / ``dm.sla.breached``)."""

    version: Literal[1] = 1
    kind: SlaEventKind
    clock_id: int
    conversation_id: int
    metric: str
    policy: str
    priority: Priority
    team: str | None = None
    due_at: datetime
    at: datetime = Field(default_factory=utcnow)


class ProfileSource(StrEnum):
    """Where a contact's profile came from."""

    GRAPH = "graph"
    WEBHOOK = "webhook"


class ProfileDue(Event):
    """A contact's profile to fetch once the page's rate limit allows
    (``dm.contact.profile_due``).

    When a new contact's DM arrives and the page has no room left under
    ``DMDESK_PROFILE_RATE_LIMIT``, the responder queues the fetch here instead of waiting,
    so a spike of new contacts does not hold up the attachments read on the same
    consumer. Nothing is claimed until the queued fetch runs; ``mid`` is the DM that asked
    (the claimant then).
    """

    version: Literal[1] = 1
    conversation: ConversationRef
    mid: str = Field(min_length=1, max_length=512)
    deferred_at: datetime = Field(default_factory=utcnow)


class ContactProfile(Event):
    """What the platform says about a contact (``dm.contact.profile``).

    Instagram's messaging user profile (name, username, profile picture, follower
    count, verified, follows the business), Messenger's user profile (first and last
    name, profile picture), or WhatsApp's profile name from the webhook. Fields the
    platform did not give are None.
    """

    version: Literal[1] = 1
    conversation: ConversationRef
    source: ProfileSource
    name: str | None = Field(default=None, max_length=512)
    first_name: str | None = Field(default=None, max_length=256)
    last_name: str | None = Field(default=None, max_length=256)
    username: str | None = Field(default=None, max_length=256)
    profile_pic: str | None = Field(default=None, max_length=4096)
    followers: int | None = Field(default=None, ge=0)
    verified: bool | None = None
    follows_business: bool | None = None
    fetched_at: datetime = Field(default_factory=utcnow)

    @property
    def display_name(self) -> str | None:
        """The full name: ``name``, else first and last name joined."""
        if self.name:
            return self.name
        joined = " ".join(part for part in (self.first_name, self.last_name) if part)
        return joined or None

    @property
    def given_name(self) -> str | None:
        """The first name: ``first_name``, else the first word of the full name."""
        if self.first_name and self.first_name.strip():
            return self.first_name.strip()
        full = (self.display_name or "").split()
        return full[0] if full else None


class AttachmentCopyState(StrEnum):
    """How copying an inbound attachment ended."""

    STORED = "stored"
    REFUSED = "refused"
    FAILED = "failed"


class AttachmentCopied(Event):
    """An inbound attachment copied into the object store, or why not (``dm.attachment``).

    ``index`` is the attachment's position in the message; ``object_name`` names the
    copy in the attachments bucket.
    """

    version: Literal[1] = 1
    conversation: ConversationRef
    mid: str = Field(min_length=1, max_length=512)
    index: int = Field(ge=0)
    state: AttachmentCopyState
    object_name: str | None = Field(default=None, max_length=128)
    content_type: str | None = Field(default=None, max_length=256)
    size: int | None = Field(default=None, ge=0)
    reason: str | None = Field(default=None, max_length=512)
    at: datetime = Field(default_factory=utcnow)


class ConversationChanged(Event):
    """A conversation's state after a change (``dm.conversation.changed``), for other systems."""

    version: Literal[1] = 1
    conversation_id: int
    channel: Channel
    account_id: str
    contact_id: str
    status: str
    team: str | None = None
    assignee: str | None = None
    priority: Priority
    category: str | None = None
    sla_due_at: datetime | None = None
    updated_at: datetime
