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
from dataclasses import dataclass

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

from shared.events import Channel, ConversationRef, InboundMessage, RoutedMessage
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


@dataclass(frozen=True, slots=True)
class Consumer:
    """A durable pull consumer: who reads which subject."""

    durable: str
    filter_subject: str
    description: str


CLASSIFIER = Consumer("classifier-v1", INBOUND_ALL, "classifier: inbound DMs")
RESPONDER = Consumer("responder-v1", CLASSIFIED, "responder: classified DMs to rules")
SENDER = Consumer("sender-v1", OUTBOUND_REQUESTED, "responder: outbound messages to platforms")
RESPONDER_ECHOES = Consumer(
    "responder-echoes-v1", INBOUND_ALL, "responder: the page's own messages (a human took over)"
)
API_STATUS = Consumer("api-status-v1", STATUS_ALL, "api: delivery and read receipts")
API_OUTBOUND_REQUESTED = Consumer(
    "api-outbound-requested-v1", OUTBOUND_REQUESTED, "api: outbound messages requested"
)
API_OUTBOUND_RESULT = Consumer(
    "api-outbound-result-v1", OUTBOUND_RESULT, "api: outbound send results"
)
API_DEAD_LETTER = Consumer("api-dead-letter-v1", DEAD_LETTER_ALL, "api: dead letters")
API_UPDATE = Consumer("api-update-v1", UPDATE_ALL, "api: reactions, edits and unsends")
PROFILES = Consumer(
    "responder-profiles-v1", INBOUND_ALL, "responder: contacts' profiles from the platforms"
)
ATTACHMENTS = Consumer(
    "responder-attachments-v1", INBOUND_ALL, "responder: inbound attachments copied to keep"
)
API_ATTACHMENT = Consumer("api-attachment-v1", ATTACHMENT, "api: attachments copied")
API_ROUTED = Consumer(
    "api-routed-v1", ROUTED_ALL, "api: customer DMs with their classification and decision"
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
    API_OUTBOUND_REQUESTED,
    API_OUTBOUND_RESULT,
    API_DEAD_LETTER,
    PROFILES,
    API_CONTACT_PROFILE,
    ATTACHMENTS,
    API_ATTACHMENT,
)

RETIRED_API_DURABLES = (
    "api-inbound-v1",
    "api-classified-v1",
    "api-handoff-v1",
    "api-bot-reply-v1",
    "api-closed-v1",
)
"""The api's durables before ``dm.routed.*`` (v1 of the flow): a stack upgraded in place
drains them first; the api deletes them at start once they hold nothing (:func:`retire`)."""

# The responder's key-value buckets (names come from settings; these are the keys).
RULES_KEY = "active"
RULES_HISTORY = 10


def kv_bucket(settings: Settings, bucket: str, description: str, history: int) -> KeyValueConfig:
    """A KV bucket on disk, replicated like the stream."""
    return KeyValueConfig(
        bucket=bucket,
        description=description,
        history=history,
        storage=StorageType.FILE,
        replicas=settings.stream_replicas,
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


async def open_key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Bind the bucket of ``config``, creating it when missing.

    A bucket is the stream ``KV_<bucket>``: one created with fewer replicas than
    ``config`` asks for (a single node moved to a cluster, or an older definition) is
    updated to that many, so losing one node does not stop its readers and writers.
    """
    try:
        kv = await js.key_value(config.bucket)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(config)
        except BadRequestError:
            # Another replica created it a moment ago.
            kv = await js.key_value(config.bucket)
    stream = f"KV_{config.bucket}"
    info = await js.stream_info(stream)
    if (info.config.num_replicas or 1) < config.replicas:
        await js.update_stream(dataclasses.replace(info.config, num_replicas=config.replicas))
    return kv


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


async def bind_object_store(js: JetStreamContext, config: ObjectStoreConfig) -> ObjectStore:
    """The object store ``config`` defines, created when it does not exist yet."""
    try:
        return await js.object_store(config.bucket or "")
    except BucketNotFoundError:
        pass
    try:
        # nats-py sets config.bucket from its bucket argument: pass both.
        return await js.create_object_store(config.bucket or "", config=config)
    except BadRequestError:  # another replica created it a moment ago
        return await js.object_store(config.bucket or "")


def consumer_config(consumer: Consumer, settings: Settings) -> ConsumerConfig:
    """A fresh durable pull-consumer config for ``consumer``.

    Redelivery is not capped on the server (``max_deliver=-1``): the stage itself
    dead-letters a message after ``settings.max_deliveries`` failures, so a message
    is never dropped by the server without a trace.
    """
    return ConsumerConfig(
        durable_name=consumer.durable,
        name=consumer.durable,
        description=consumer.description,
        filter_subject=consumer.filter_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=max(1000, settings.pull_batch_size * 4),
        num_replicas=0,
    )


async def provision(js: JetStreamContext, settings: Settings, *consumers: Consumer) -> None:
    """Create or update the stream and the given durable consumers."""
    config = stream_config(settings)
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Exists with another config (or was created by a replica a moment ago).
        await js.update_stream(config)
    for consumer in consumers:
        try:
            await js.add_consumer(config.name or "", consumer_config(consumer, settings))
        except BadRequestError:
            # An existing durable keeps its non-editable fields; a changed definition
            # must get a new durable name (see the module docstring).
            await js.consumer_info(config.name or "", consumer.durable)


async def retire(js: JetStreamContext, settings: Settings, *durables: str) -> list[str]:
    """Delete the ``durables`` no service reads any more, each once it holds nothing
    (pending or unacknowledged); return those deleted.

    One that still holds messages is left, with a warning: they are DMs of the previous
    flow that no service will read (README, release notes: drain before upgrading).
    """
    deleted: list[str] = []
    for durable in durables:
        try:
            info = await js.consumer_info(settings.stream_name, durable)
        except NotFoundError:
            continue
        if info.num_pending or info.num_ack_pending:
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
