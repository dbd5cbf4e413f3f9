"""Storing normalised events in JetStream: each with its dedupe key, per conversation in order."""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import nats.errors
from nats.js.errors import NoStreamResponseError
from pydantic import BaseModel

from services.ingest.meta import Normalised
from services.ingest.metrics import IngestMetrics, label
from shared import streams
from shared.bus import EventBus
from shared.events import Channel, InboundMessage, MessageUpdate, RawEvent, StatusEvent

logger = logging.getLogger("dmdesk.ingest")

BUS_UNAVAILABLE = (
    nats.errors.Error,
    NoStreamResponseError,
    ConnectionError,
    TimeoutError,
)


# Room for the headers beside Nats-Msg-Id (faststream's content-type and correlation id,
# the NATS/1.0 preamble): NATS counts headers and payload against max_payload together.
HEADER_ALLOWANCE_BYTES = 256


class BusUnavailableError(Exception):
    """NATS could not store (or confirm storing) an event: the sender must retry."""


class EventTooLargeError(Exception):
    """An event does not fit in one bus message: retrying can never store it."""

    def __init__(self, size: int, room: int) -> None:
        super().__init__(f"{size} bytes on the bus; the server takes at most {room}")
        self.size = size
        self.room = room


def bus_size(normalised: Normalised) -> int:
    """The bytes ``normalised`` takes in one bus message: payload, dedupe id and headers."""
    payload = len(normalised.event.model_dump_json().encode())
    return payload + len(normalised.msg_id.encode()) + HEADER_ALLOWANCE_BYTES


def refused(normalised: Normalised, size: int, room: int) -> Normalised:
    """A small raw event standing for an event too large to publish, with the reason."""
    event = normalised.event
    account_id: str | None
    if isinstance(event, StatusEvent | MessageUpdate):
        channel, account_id = event.conversation.channel, event.conversation.account_id
    else:
        channel, account_id = event.channel, event.account_id
    stand_in = RawEvent(
        event_id=normalised.msg_id,
        channel=channel,
        kind=normalised.kind,
        body={},
        account_id=account_id,
        reason=f"too large for the bus: {size} bytes, the server takes at most {room}",
    )
    return Normalised(stand_in, normalised.msg_id, "refused")


def fitted(events: Sequence[Normalised], room: int) -> list[Normalised]:
    """``events``, each too large for one bus message replaced by its :func:`refused` stand-in."""
    kept: list[Normalised] = []
    for normalised in events:
        size = bus_size(normalised)
        kept.append(normalised if size <= room else refused(normalised, size, room))
    return kept


class EventSink(Protocol):
    """Where normalised events go; the service uses JetStream, unit tests a fake."""

    async def store(self, events: Sequence[Normalised]) -> int:
        """Store every event, in order per conversation; return how many were duplicates.

        Raises:
            BusUnavailableError: some event may not be stored; retrying is safe.
        """
        ...

    def room(self) -> int:
        """The largest bus message (payload and headers) the server takes, in bytes."""
        ...


# What ingest publishes: each subject family's definition (shared/streams.py).
PUBLISHED = (
    streams.INBOUND_EVENT,
    streams.ECHO_EVENT,
    streams.STATUS_EVENT,
    streams.UPDATE_EVENT,
    streams.RAW_EVENT,
)
BY_TYPE: dict[type[BaseModel], streams.Subject[Any]] = {
    StatusEvent: streams.STATUS_EVENT,
    MessageUpdate: streams.UPDATE_EVENT,
    RawEvent: streams.RAW_EVENT,
}


def definition_of(event: BaseModel) -> streams.Subject[Any]:
    """The subject definition an event is published under (echoes apart from DMs)."""
    if isinstance(event, InboundMessage):
        return streams.ECHO_EVENT if event.is_echo else streams.INBOUND_EVENT
    return BY_TYPE[type(event)]


class JetStreamSink:
    """Publishes with a PubAck and ``Nats-Msg-Id``; conversations in parallel, each in order."""

    def __init__(self, bus: EventBus, metrics: IngestMetrics) -> None:
        self.bus = bus
        self.metrics = metrics
        # Declared for the AsyncAPI document; published through the EventBus.
        for definition in PUBLISHED:
            for channel in Channel:
                messages = definition.event is InboundMessage
                if channel == Channel.GENERIC and not messages:
                    continue
                subject = definition.pattern.removesuffix("*") + channel.value
                bus.broker.publisher(
                    subject,
                    schema=definition.event,
                    title=subject,
                    description=f"{channel.value}: {definition.description}, normalised.",
                )

    def room(self) -> int:
        """The server's ``max_payload``, from the connection's server info."""
        return self.bus.broker.connection.max_payload

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
            try:
                ack = await self.bus.publish_event(
                    event, subject=definition_of(event).subject(event), msg_id=normalised.msg_id
                )
            except nats.errors.MaxPayloadError as exc:
                raise EventTooLargeError(bus_size(normalised), self.room()) from exc
            except BUS_UNAVAILABLE as exc:
                logger.warning(
                    "bus unavailable", extra={"error_type": type(exc).__name__, "channel": channel}
                )
                raise BusUnavailableError(type(exc).__name__) from exc
            self.metrics.received.labels(channel.value, label(normalised.kind)).inc()
            if normalised.kind == "refused":
                self.metrics.refused.labels(channel.value, "too_large").inc()
            elif isinstance(event, RawEvent):
                self.metrics.unknown.labels(channel.value, label(event.kind)).inc()
            if ack.duplicate:
                duplicates += 1
                self.metrics.duplicates.labels(channel.value).inc()
        return duplicates


def _platform_order(event: Normalised) -> float:
    moment = event.platform_ts
    return moment.timestamp() if moment is not None else 0.0
