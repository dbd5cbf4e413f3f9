"""Every subject, the JetStream stream and each durable consumer, defined once.

Configs are built by factory functions: faststream and nats-py mutate the objects
they are given, so each subscriber gets a fresh one. Durable names carry a
version suffix: JetStream keeps an existing durable's config, so a changed
consumer definition gets a new name (and :func:`provision` updates the editable
fields of the current one).
"""

import dataclasses
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from pydantic import BaseModel

from shared.events import (
    AttachmentCopied,
    Channel,
    ClassifiedMessage,
    ContactProfile,
    ConversationChanged,
    ConversationRef,
    DeadLetter,
    InboundMessage,
    MessageUpdate,
    OutboundRequest,
    OutboundResult,
    ProfileDue,
    RawEvent,
    RoutedMessage,
    SlaEvent,
    StatusEvent,
)
from shared.settings import Settings

logger = logging.getLogger("dmdesk.streams")

ALL = "dm.>"
INBOUND_ALL = "dm.inbound.*"
STATUS_ALL = "dm.status.*"
RAW_ALL = "dm.raw.*"
UPDATE_ALL = "dm.update.*"
CLASSIFIED = "dm.classified"
BOT_REPLY = "dm.reply.bot"
HANDOFF = "dm.handoff"
OUTBOUND_REQUESTED = "dm.outbound.requested"
OUTBOUND_RESULT = "dm.outbound.result"
DEAD_LETTER_ALL = "dm.dlq.*"
SLA_BREACHED = "dm.sla.breached"
SLA_AT_RISK = "dm.sla.at_risk"
CONVERSATION_CHANGED = "dm.conversation.changed"
CLOSED = "dm.closed"
CONTACT_PROFILE = "dm.contact.profile"
PROFILE_DUE = "dm.contact.profile_due"
ECHO_ALL = "dm.echo.*"
ROUTED_ALL = "dm.routed.*"
ROUTED_REPLY = "dm.routed.reply"
ROUTED_QUIET = "dm.routed.quiet"
ATTACHMENT = "dm.attachment"

MSG_ID_HEADER = "Nats-Msg-Id"
_KEY_TOKEN = re.compile(r"^[A-Za-z0-9_=-]{1,64}$")


def inbound_subject(channel: Channel) -> str:
    """Subject of inbound messages from one channel."""
    return f"dm.inbound.{channel.value}"


def status_subject(channel: Channel) -> str:
    """Subject of delivery/read/send statuses from one channel."""
    return f"dm.status.{channel.value}"


def raw_subject(channel: Channel) -> str:
    """Subject of platform events not understood yet."""
    return f"dm.raw.{channel.value}"


def update_subject(channel: Channel) -> str:
    """Subject of reactions, edits and unsends of earlier messages from one channel."""
    return f"dm.update.{channel.value}"


def echo_subject(channel: Channel) -> str:
    """Subject of the page's own messages (echoes) from one channel."""
    return f"dm.echo.{channel.value}"


def routed_subject(routed: RoutedMessage) -> str:
    """``dm.routed.reply`` when the decision has replies to send (the sender reads those), else
    ``dm.routed.quiet``."""
    return ROUTED_REPLY if routed.requests else ROUTED_QUIET


def routed_msg_id(message: InboundMessage) -> str:
    """The dedupe id of the decision on ``message``: one decision per DM, however redelivered."""
    return f"routed:{message.channel.value}:{message.mid}"


def dead_letter_subject(stage: str) -> str:
    """Subject where ``stage`` puts what it gave up on."""
    return f"dm.dlq.{stage}"


def is_dead_letter(subject: str) -> bool:
    """Whether ``subject`` carries dead letters (which are never dead-lettered again)."""
    return subject.startswith("dm.dlq.")


E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Subject(Generic[E]):
    """One kind of event on the bus: where it goes, what it is, how it is deduplicated.

    ``pattern`` is the subject, or the wildcard of a family of subjects
    (``dm.inbound.*``), whose member ``subject`` picks from the event; ``msg_id`` is the
    event's ``Nats-Msg-Id`` (publishing the same fact twice stores it once).
    Publishers and consumers both use these definitions: ``shared.bus.publish`` takes
    one, a consumer's filter is a ``pattern``.
    """

    pattern: str
    event: type[E]
    msg_id: Callable[[E], str]
    description: str
    pick: Callable[[E], str] | None = None

    def subject(self, event: E) -> str:
        """The subject ``event`` is published on."""
        return self.pick(event) if self.pick is not None else self.pattern


def _message_id(message: InboundMessage) -> str:
    return f"{message.channel.value}:{message.mid}"


INBOUND_EVENT = Subject(
    INBOUND_ALL,
    InboundMessage,
    _message_id,
    "ingest: customers' messages, postbacks and referrals",
    lambda message: inbound_subject(message.channel),
)
ECHO_EVENT = Subject(
    ECHO_ALL,
    InboundMessage,
    _message_id,
    "ingest: the page's own messages (echoes: the bot's replies, people in Meta's inbox)",
    lambda message: echo_subject(message.channel),
)
STATUS_EVENT = Subject(
    STATUS_ALL,
    StatusEvent,
    lambda status: status.event_id,
    "ingest: delivery and read receipts, send statuses",
    lambda status: status_subject(status.conversation.channel),
)
UPDATE_EVENT = Subject(
    UPDATE_ALL,
    MessageUpdate,
    lambda update: update.event_id,
    "ingest: reactions, edits and unsends of earlier messages",
    lambda update: update_subject(update.conversation.channel),
)
RAW_EVENT = Subject(
    RAW_ALL,
    RawEvent,
    lambda raw: raw.event_id,
    "ingest: platform events not understood yet (or refused), kept",
    lambda raw: raw_subject(raw.channel),
)
CLASSIFIED_EVENT = Subject(
    CLASSIFIED,
    ClassifiedMessage,
    lambda classified: f"classified:{_message_id(classified.message)}",
    "classifier: every customer DM with its classification",
)
ROUTED_EVENT = Subject(
    ROUTED_ALL,
    RoutedMessage,
    lambda routed: routed_msg_id(routed.message),
    "responder: a customer DM, its classification and the decision",
    routed_subject,
)
OUTBOUND_REQUESTED_EVENT = Subject(
    OUTBOUND_REQUESTED,
    OutboundRequest,
    lambda request: request.request_id,
    "api: an agent's reply to send",
)
OUTBOUND_RESULT_EVENT = Subject(
    OUTBOUND_RESULT,
    OutboundResult,
    lambda result: f"result:{result.request_id}",
    "responder: how sending a reply ended",
)
DEAD_LETTER_EVENT = Subject(
    DEAD_LETTER_ALL,
    DeadLetter,
    lambda letter: f"dlq:{letter.stage}:{letter.subject}:{letter.stream_sequence}",
    "every stage: what it gave up on, with the error and the original",
    lambda letter: dead_letter_subject(letter.stage),
)
SLA_EVENT = Subject(
    "dm.sla.*",
    SlaEvent,
    lambda sla: f"sla:{sla.kind.value}:{sla.clock_id}",
    "api: an SLA clock at risk or breached",
    lambda sla: f"dm.sla.{sla.kind.value}",
)
CONTACT_PROFILE_EVENT = Subject(
    CONTACT_PROFILE,
    ContactProfile,
    lambda profile: f"profile:{contact_key(profile.conversation)}:{profile.fetched_at.isoformat()}",
    "responder: a contact's profile from the platform",
)
PROFILE_DUE_EVENT = Subject(
    PROFILE_DUE,
    ProfileDue,
    lambda due: f"profile-due:{contact_key(due.conversation)}:{due.mid}",
    "responder: a contact's profile fetch queued until the page's rate limit allows",
)
ATTACHMENT_EVENT = Subject(
    ATTACHMENT,
    AttachmentCopied,
    lambda copied: f"attachment:{copied.conversation.channel.value}:{copied.mid}:{copied.index}",
    "responder: an inbound attachment copied, or why not",
)
CONVERSATION_CHANGED_EVENT = Subject(
    CONVERSATION_CHANGED,
    ConversationChanged,
    lambda changed: f"changed:{changed.conversation_id}:{changed.updated_at.isoformat()}",
    "api: a conversation's state after a committed change",
)
SUBJECTS: tuple[Subject[Any], ...] = (
    INBOUND_EVENT,
    ECHO_EVENT,
    STATUS_EVENT,
    UPDATE_EVENT,
    RAW_EVENT,
    CLASSIFIED_EVENT,
    ROUTED_EVENT,
    OUTBOUND_REQUESTED_EVENT,
    OUTBOUND_RESULT_EVENT,
    DEAD_LETTER_EVENT,
    SLA_EVENT,
    CONTACT_PROFILE_EVENT,
    PROFILE_DUE_EVENT,
    ATTACHMENT_EVENT,
    CONVERSATION_CHANGED_EVENT,
)


def stream_config(settings: Settings) -> StreamConfig:
    """The one stream carrying every ``dm.>`` subject, on disk."""
    return StreamConfig(
        name=settings.stream_name,
        subjects=[ALL],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.stream_max_age_days * 86_400,
        duplicate_window=settings.dedupe_window_seconds,
        num_replicas=settings.stream_replicas,
    )


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` is one ``pattern`` names (NATS wildcards: ``*`` one token,
    ``>`` the rest)."""
    wanted, parts = pattern.split("."), subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">":
            return len(parts) > index
        if index >= len(parts) or part not in ("*", parts[index]):
            return False
    return len(parts) == len(wanted)


@dataclass(frozen=True, slots=True)
class Consumer:
    """A durable pull consumer: who reads which subject (or subjects: NATS 2.10's
    ``filter_subjects``, one durable reading several, in stream order)."""

    durable: str
    filter_subject: str | tuple[str, ...]
    description: str
    succeeds: tuple[str, ...] = ()  # durables it replaces: it starts where they stopped

    @property
    def subjects(self) -> tuple[str, ...]:
        """The subjects it reads."""
        if isinstance(self.filter_subject, str):
            return (self.filter_subject,)
        return self.filter_subject


CLASSIFIER = Consumer("classifier-v1", INBOUND_ALL, "classifier: inbound DMs")
RESPONDER = Consumer("responder-v1", CLASSIFIED, "responder: classified DMs to rules")
SENDER = Consumer(
    "sender-v2",
    (ROUTED_REPLY, OUTBOUND_REQUESTED),
    "responder: the bot's replies (dm.routed.reply) and agents' replies to platforms",
    succeeds=("sender-v1",),
)
RESPONDER_ECHOES = Consumer(
    "responder-echoes-v2", ECHO_ALL, "responder: the page's own messages (a human took over)"
)
RESPONDER_CONTACTS = Consumer(
    "responder-contacts-v2",
    INBOUND_ALL,
    "responder: who wrote (profiles) and what they sent (attachments copied to keep)",
    succeeds=("responder-profiles-v1", "responder-attachments-v1"),
)
RESPONDER_PROFILES_DUE = Consumer(
    "responder-profiles-due-v1",
    PROFILE_DUE,
    "responder: profile fetches a spike of new contacts queued behind the rate limit",
)
API_STATUS = Consumer("api-status-v1", STATUS_ALL, "api: delivery and read receipts")
API_DEAD_LETTER = Consumer("api-dead-letter-v1", DEAD_LETTER_ALL, "api: dead letters")
API_UPDATE = Consumer("api-update-v1", UPDATE_ALL, "api: reactions, edits and unsends")
API_ATTACHMENT = Consumer("api-attachment-v1", ATTACHMENT, "api: attachments copied")
API_ROUTED = Consumer(
    "api-routed-v2",
    (ROUTED_ALL, OUTBOUND_REQUESTED, OUTBOUND_RESULT),
    "api: customer DMs with their classification and decision, and replies requested and"
    " sent, in stream order (a reply's result always after its request)",
    succeeds=("api-routed-v1", "api-outbound-requested-v1", "api-outbound-result-v1"),
)
API_ECHO = Consumer("api-echo-v1", ECHO_ALL, "api: the page's own messages (echoes)")
API_CONTACT_PROFILE = Consumer(
    "api-contact-profile-v1", CONTACT_PROFILE, "api: contact profiles (priority re-evaluated)"
)

CONSUMERS = (
    CLASSIFIER,
    RESPONDER,
    SENDER,
    RESPONDER_ECHOES,
    API_ROUTED,
    API_ECHO,
    API_STATUS,
    API_UPDATE,
    API_DEAD_LETTER,
    RESPONDER_CONTACTS,
    RESPONDER_PROFILES_DUE,
    API_CONTACT_PROFILE,
    API_ATTACHMENT,
)
RETIRED_RESPONDER_DURABLES = (
    "sender-v1",
    "responder-echoes-v1",
    "responder-profiles-v1",
    "responder-attachments-v1",
)
"""The responder's durables before version 2 of the flow, read by nobody now: their
successors (``Consumer.succeeds``) start where they stopped; a stack upgraded in place
deletes them (README)."""

RETIRED_API_DURABLES = (
    "api-inbound-v1",
    "api-classified-v1",
    "api-handoff-v1",
    "api-bot-reply-v1",
    "api-closed-v1",
    "api-routed-v1",
    "api-outbound-requested-v1",
    "api-outbound-result-v1",
)
"""The api's durables before ``dm.routed.*`` (v1 of the flow): a stack upgraded in place
drains them first; the api deletes them at start once they hold nothing (:func:`retire`).
Then those ``api-routed-v2`` succeeds: it starts where they stopped, so they are deleted
once it exists, whatever they hold."""

# The responder's key-value buckets (names come from settings; these are the keys).
RULES_KEY = "active"
RULES_HISTORY = 10


def kv_bucket(settings: Settings, bucket: str, description: str, history: int) -> KeyValueConfig:
    """A KV bucket on disk, replicated like the stream.

    Reads are direct gets (``allow_direct``: the raw entry, answered by any replica,
    without the JetStream API's JSON and base64), as NATS's own clients make them.
    A replica may answer a moment behind the leader: every write is a compare-and-set
    on the revision read, so a stale read costs a retry, never a lost update.
    """
    return KeyValueConfig(
        bucket=bucket,
        description=description,
        history=history,
        storage=StorageType.FILE,
        replicas=settings.stream_replicas,
        direct=True,
    )


def rules_bucket_config(settings: Settings) -> KeyValueConfig:
    """The live rule set (the api writes it, every responder watches it)."""
    return kv_bucket(
        settings,
        settings.rules_bucket,
        "responder: the live rule set (written through the api)",
        RULES_HISTORY,
    )


def conversation_state_bucket_config(settings: Settings) -> KeyValueConfig:
    """The responder's per-conversation state."""
    return kv_bucket(
        settings, settings.conversation_state_bucket, "responder: per-conversation state", 1
    )


def contacts_bucket_config(settings: Settings) -> KeyValueConfig:
    """Ingest's contacts (message requests)."""
    return kv_bucket(
        settings,
        settings.contacts_bucket,
        "ingest: contacts seen and written to (message requests)",
        1,
    )


def contact_languages_bucket_config(settings: Settings) -> KeyValueConfig:
    """The classifier's bucket of each contact's last detected language."""
    return kv_bucket(
        settings,
        settings.contact_languages_bucket,
        "classifier: each contact's last detected language",
        1,
    )


async def open_key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Bind the bucket of ``config``, creating it when missing.

    A bucket is the stream ``KV_<bucket>``: one created with fewer replicas than
    ``config`` asks for (a single node moved to a cluster, or an older definition) is
    updated to that many, so losing one node does not stop its readers and writers;
    one created without direct gets (an older definition) is given them.
    """
    try:
        kv = await js.key_value(config.bucket)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(config)
        except BadRequestError:
            # Another replica created it a moment ago.
            kv = await js.key_value(config.bucket)
    if await _fit_stream(js, f"KV_{config.bucket}", config.replicas, direct=bool(config.direct)):
        kv = await js.key_value(config.bucket)  # bound before: bind again to read directly
    return kv


async def _fit_stream(js: JetStreamContext, stream: str, replicas: int, *, direct: bool) -> bool:
    """Raise the stream behind a bucket to ``replicas`` (a single node moved to a cluster, or
    an older definition) and give it direct gets when ``direct``; True if direct was new."""
    info = await js.stream_info(stream)
    fewer_replicas = (info.config.num_replicas or 1) < replicas
    not_direct = direct and not info.config.allow_direct
    if fewer_replicas or not_direct:
        await js.update_stream(
            dataclasses.replace(
                info.config,
                num_replicas=max(info.config.num_replicas or 1, replicas),
                allow_direct=direct or info.config.allow_direct,
            )
        )
    return not_direct


def contact_key(conversation: ConversationRef) -> str:
    """The KV key of a contact on one page (ingest's contacts, the profile cache).

    ``<channel>.<account>.<contact>``; an id a KV key cannot hold is replaced by a hash.
    """
    tokens = (conversation.channel.value, conversation.account_id, conversation.contact_id)
    return ".".join(
        token if _KEY_TOKEN.match(token) else "h" + hashlib.sha256(token.encode()).hexdigest()[:40]
        for token in tokens
    )


def profiles_bucket_config(settings: Settings) -> KeyValueConfig:
    """The KV bucket caching contacts' platform profiles, keyed like ingest's contacts."""
    return kv_bucket(
        settings,
        settings.profiles_bucket,
        "responder: contacts' platform profiles and fetch claims",
        1,
    )


def object_store(settings: Settings, bucket: str, description: str) -> ObjectStoreConfig:
    """An object store on disk, replicated like the stream."""
    return ObjectStoreConfig(
        bucket=bucket,
        description=description,
        storage=StorageType.FILE,
        replicas=settings.stream_replicas,
    )


def attachments_store_config(settings: Settings) -> ObjectStoreConfig:
    """The object store bucket keeping copies of inbound attachments (platform URLs expire)."""
    return object_store(
        settings,
        settings.attachments_bucket,
        "responder: copies of inbound attachments; api: serves them",
    )


def models_store_config(settings: Settings) -> ObjectStoreConfig:
    """The object store of the classifier's model artefacts (``dmdesk train-classifier``)."""
    return object_store(
        settings,
        settings.models_bucket,
        "classifier: the category model artefact (dmdesk train-classifier)",
    )


async def bind_object_store(js: JetStreamContext, config: ObjectStoreConfig) -> ObjectStore:
    """The object store ``config`` defines, created when it does not exist yet."""
    try:
        store = await js.object_store(config.bucket or "")
    except BucketNotFoundError:
        try:
            # nats-py sets config.bucket from its bucket argument: pass both.
            return await js.create_object_store(config.bucket or "", config=config)
        except BadRequestError:  # another replica created it a moment ago
            return await js.object_store(config.bucket or "")
    await _fit_stream(js, f"OBJ_{config.bucket}", config.replicas, direct=False)
    return store


def consumer_config(consumer: Consumer, settings: Settings) -> ConsumerConfig:
    """A fresh durable pull-consumer config for ``consumer``.

    Redelivery is not capped on the server (``max_deliver=-1``): the stage itself
    dead-letters a message after ``settings.max_deliveries`` failures, so a message
    is never dropped by the server without a trace.
    """
    subjects = consumer.subjects
    return ConsumerConfig(
        durable_name=consumer.durable,
        name=consumer.durable,
        description=consumer.description,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=list(subjects) if len(subjects) > 1 else None,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=max(1000, settings.pull_batch_size * 4),
        num_replicas=0,
    )


async def continuing(
    js: JetStreamContext, stream: str, consumer: Consumer, settings: Settings
) -> ConsumerConfig:
    """The config of ``consumer``, starting where the durables it succeeds stopped.

    A new durable reads the stream from its start; one that replaces earlier durables
    (a stack upgraded in place) starts after the lowest of their ack floors instead
    (the stream's end for one that holds nothing), so that it neither replays what they
    handled (sent replies, fetched profiles) nor skips what they left. Once created, it
    keeps the start it was created with.
    """
    config = consumer_config(consumer, settings)
    if not consumer.succeeds:
        return config
    try:
        existing = await js.consumer_info(stream, consumer.durable)
    except NotFoundError:
        pass
    else:
        config.deliver_policy = existing.config.deliver_policy
        config.opt_start_seq = existing.config.opt_start_seq
        return config
    # Read before the durables: one that holds nothing then has handled every message of
    # its subjects up to here (its ack floor may be far behind, or 0 if none came).
    last = (await js.stream_info(stream)).state.last_seq
    floors: list[int] = []
    for earlier in consumer.succeeds:
        try:
            info = await js.consumer_info(stream, earlier)
        except NotFoundError:
            continue
        if not (info.num_pending or info.num_ack_pending):
            floors.append(last)
        else:
            floors.append(info.ack_floor.stream_seq if info.ack_floor is not None else 0)
    if floors:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = min(floors) + 1
    return config


async def provision(js: JetStreamContext, settings: Settings, *consumers: Consumer) -> None:
    """Create or update the stream and the given durable consumers."""
    config = stream_config(settings)
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Exists with another config (or was created by a replica a moment ago).
        await js.update_stream(config)
    for consumer in consumers:
        durable = await continuing(js, config.name or "", consumer, settings)
        try:
            info = await js.add_consumer(config.name or "", durable)
        except BadRequestError:
            # An existing durable keeps its non-editable fields; a changed definition
            # must get a new durable name (see the module docstring).
            info = await js.consumer_info(config.name or "", consumer.durable)
        _check_filters(consumer, info.config)


class UnfitServerError(RuntimeError):
    """The NATS server cannot run a consumer as dmdesk defines it."""


def _check_filters(consumer: Consumer, config: ConsumerConfig) -> None:
    """Refuse a durable whose subjects the server did not keep.

    A server older than 2.10 ignores ``filter_subjects`` without a word, and the durable
    then reads the whole stream: every other event would reach its handler (and be
    dead-lettered there).
    """
    kept = tuple(config.filter_subjects or ()) or (
        (config.filter_subject,) if config.filter_subject else ()
    )
    if set(kept) != set(consumer.subjects):
        raise UnfitServerError(
            f"durable {consumer.durable} reads {list(kept) or 'the whole stream'} instead of"
            f" {list(consumer.subjects)}: dmdesk needs NATS 2.10 or later (multi-subject"
            " consumers)"
        )


async def retire(
    js: JetStreamContext,
    settings: Settings,
    *durables: str,
    successors: Sequence[Consumer] = (),
) -> list[str]:
    """Delete the ``durables`` no service reads any more, each once it holds nothing
    (pending or unacknowledged); return those deleted.

    One that still holds messages is left, with a warning: they are DMs of the previous
    flow that no service will read (README, release notes: drain before upgrading).
    One that a consumer of ``successors`` succeeds (provisioned before: it started where
    its predecessors stopped) is deleted whatever it holds: its successor reads that.
    """
    replaced = {durable for consumer in successors for durable in consumer.succeeds}
    deleted: list[str] = []
    for durable in durables:
        try:
            info = await js.consumer_info(settings.stream_name, durable)
        except NotFoundError:
            continue
        if durable not in replaced and (info.num_pending or info.num_ack_pending):
            logger.warning(
                "a retired durable still holds messages; drain the previous flow, then delete it",
                extra={
                    "consumer": durable,
                    "pending": info.num_pending,
                    "ack_pending": info.num_ack_pending,
                },
            )
            continue
        await js.delete_consumer(settings.stream_name, durable)
        deleted.append(durable)
        logger.info("retired durable deleted", extra={"consumer": durable})
    return deleted
