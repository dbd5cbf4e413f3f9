"""The ingest service: HTTP in, ``dm.inbound.<channel>`` out."""

import logging

import nats.errors
from fastapi import APIRouter, HTTPException, status
from faststream.nats import NatsBroker
from nats.js.errors import NoStreamResponseError
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.ingest.generic import Accepted, GenericBody, GenericMessage
from shared import streams
from shared.bus import make_broker, publish_event
from shared.events import Channel, InboundMessage
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings

STAGE = "ingest"
logger = logging.getLogger("dmdesk.ingest")

BUS_UNAVAILABLE = (
    nats.errors.Error,
    NoStreamResponseError,
    ConnectionError,
    TimeoutError,
)


class Publisher:
    """Stores normalised events in JetStream, all or nothing from the caller's view."""

    def __init__(self, broker: NatsBroker, settings: Settings, registry: CollectorRegistry) -> None:
        self.inbound = {
            channel: broker.publisher(
                streams.inbound_subject(channel),
                schema=InboundMessage,
                title=streams.inbound_subject(channel),
                description=f"Every {channel.value} DM, normalised.",
            )
            for channel in Channel
        }
        self.settings = settings
        self.received = Counter(
            "dmdesk_ingest_events_total",
            "Events received, by channel and kind.",
            ["channel", "kind"],
            registry=registry,
        )
        self.duplicates = Counter(
            "dmdesk_ingest_duplicates_total",
            "Events JetStream had already stored (dedupe by message id).",
            ["channel"],
            registry=registry,
        )
        self.latency = Histogram(
            "dmdesk_ingest_publish_seconds",
            "Time to store one event in JetStream (until its PubAck).",
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    async def publish_inbound(self, messages: list[InboundMessage]) -> int:
        """Publish ``messages`` in platform-time order; return how many were duplicates.

        Raises HTTP 503 when NATS cannot store them, so the sender retries; a retry
        is deduplicated by message id.
        """
        duplicates = 0
        for message in sorted(messages, key=lambda m: m.platform_ts):
            try:
                with self.latency.time():
                    ack = await publish_event(
                        self.inbound[message.channel],
                        message,
                        msg_id=f"{message.channel.value}:{message.mid}",
                        settings=self.settings,
                    )
            except BUS_UNAVAILABLE as exc:
                logger.warning("bus unavailable", extra={"error_type": type(exc).__name__})
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    detail="message bus unavailable; retry later (retries are deduplicated)",
                ) from exc
            self.received.labels(message.channel.value, "message").inc()
            if ack.duplicate:
                duplicates += 1
                self.duplicates.labels(message.channel.value).inc()
        return duplicates


def generic_router(publisher: Publisher) -> APIRouter:
    """``POST /v1/messages``: the generic channel for internal systems."""
    router = APIRouter(tags=["messages"])

    @router.post(
        "/v1/messages",
        status_code=status.HTTP_202_ACCEPTED,
        responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "NATS unavailable"}},
    )
    async def post_messages(body: GenericBody) -> Accepted:
        """Accept one DM or a batch; answered once every one is stored in JetStream."""
        batch = body if isinstance(body, list) else [body]
        events = [message.to_event() for message in batch if isinstance(message, GenericMessage)]
        duplicates = await publisher.publish_inbound(events)
        return Accepted(accepted=len(events), duplicates=duplicates)

    return router


def build(settings: Settings) -> ServiceSpec:
    """Wire ingest's broker, routes and metrics."""
    registry = CollectorRegistry()
    broker = make_broker(settings, STAGE, registry)
    publisher = Publisher(broker, settings, registry)
    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        routers=(generic_router(publisher),),
        description="Receives DMs over HTTP and stores them in JetStream.",
    )


def main() -> None:
    """Run the ingest service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.ingest_port)
