"""Storing normalised events in JetStream: each with its dedupe key, per conversation in order."""

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

import nats.errors
from faststream.nats import NatsBroker
from faststream.nats.publisher.usecase import LogicPublisher
from nats.js.errors import NoStreamResponseError
from pydantic import BaseModel

from services.ingest.meta import Normalised
from services.ingest.metrics import IngestMetrics, label
from shared import streams
from shared.bus import publish_event
from shared.events import Channel, InboundMessage, MessageUpdate, RawEvent, StatusEvent
from shared.settings import Settings

logger = logging.getLogger("dmdesk.ingest")

BUS_UNAVAILABLE = (
    nats.errors.Error,
    NoStreamResponseError,
    ConnectionError,
    TimeoutError,
)


class BusUnavailableError(Exception):
    """NATS could not store (or confirm storing) an event: the sender must retry."""


class EventSink(Protocol):
    """Where normalised events go; the service uses JetStream, unit tests a fake."""

    async def store(self, events: Sequence[Normalised]) -> int:
        """Store every event, in order per conversation; return how many were duplicates.

        Raises:
            BusUnavailableError: some event may not be stored; retrying is safe.
        """
        ...


EVENT_SUBJECTS: dict[type[BaseModel], tuple[str, str]] = {
    InboundMessage: ("inbound", "DMs, echoes, postbacks and referrals"),
    StatusEvent: ("status", "delivery and read receipts, send statuses"),
    MessageUpdate: ("update", "reactions, edits and unsends"),
    RawEvent: ("raw", "platform events dmdesk does not understand yet"),
}
SUBJECT_FACTORIES = {
    "inbound": streams.inbound_subject,
    "status": streams.status_subject,
    "update": streams.update_subject,
    "raw": streams.raw_subject,
}


class JetStreamSink:
    """Publishes with a PubAck and ``Nats-Msg-Id``; conversations in parallel, each in order."""

    def __init__(self, broker: NatsBroker, settings: Settings, metrics: IngestMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.publishers: dict[tuple[type[BaseModel], Channel], LogicPublisher] = {}
        for schema, (family, description) in EVENT_SUBJECTS.items():
            for channel in Channel:
                if family != "inbound" and channel == Channel.GENERIC:
                    continue
                subject = SUBJECT_FACTORIES[family](channel)
                self.publishers[schema, channel] = broker.publisher(
                    subject,
                    schema=schema,
                    title=subject,
                    description=f"{channel.value}: {description}, normalised.",
                )

    async def store(self, events: Sequence[Normalised]) -> int:
        """Store ``events``; see :class:`EventSink`."""
        by_conversation: dict[object, list[Normalised]] = defaultdict(list)
        for event in events:
            by_conversation[event.conversation or event.msg_id].append(event)
        results = await asyncio.gather(
            *(self._store_in_order(group) for group in by_conversation.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    async def _store_in_order(self, events: list[Normalised]) -> int:
        duplicates = 0
        for normalised in sorted(events, key=_platform_order):
            event = normalised.event
            channel = (
                event.conversation.channel
                if isinstance(event, StatusEvent | MessageUpdate)
                else event.channel
            )
            started = time.perf_counter()
            try:
                ack = await publish_event(
                    self.publishers[type(event), channel],
                    event,
                    msg_id=normalised.msg_id,
                    settings=self.settings,
                )
            except BUS_UNAVAILABLE as exc:
                logger.warning(
                    "bus unavailable", extra={"error_type": type(exc).__name__, "channel": channel}
                )
                raise BusUnavailableError(type(exc).__name__) from exc
            self.metrics.publish_latency.observe(time.perf_counter() - started)
            self.metrics.received.labels(channel.value, label(normalised.kind)).inc()
            if isinstance(event, RawEvent):
                self.metrics.unknown.labels(channel.value, label(event.kind)).inc()
            if ack.duplicate:
                duplicates += 1
                self.metrics.duplicates.labels(channel.value).inc()
        return duplicates


def _platform_order(event: Normalised) -> float:
    moment = event.platform_ts
    return moment.timestamp() if moment is not None else 0.0
