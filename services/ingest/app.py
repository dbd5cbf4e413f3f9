"""The ingest service: HTTP in (Meta webhooks, generic JSON), JetStream out."""

from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import JetStreamSink
from services.ingest.requests import KvContactStore, MessageRequests
from services.ingest.routes import ingest_routers
from shared.bus import EventBus, PublishMetrics, make_broker
from shared.ops import service_registry
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings

STAGE = "ingest"


def build(settings: Settings) -> ServiceSpec:
    """Wire ingest's broker, contact store, routes and metrics."""
    registry = service_registry()
    broker = make_broker(settings, STAGE)
    metrics = IngestMetrics(registry)
    bus = EventBus(broker, settings, PublishMetrics.register(registry, STAGE))
    contacts = KvContactStore(broker, settings)
    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        routers=ingest_routers(
            settings, JetStreamSink(bus, metrics), MessageRequests(contacts), metrics
        ),
        checks={"contacts_bucket": contacts.ready},
        description=(
            "Receives Meta webhooks (Messenger, Instagram, WhatsApp) and generic DMs,"
            " and stores them in JetStream."
        ),
    )


def main() -> None:
    """Run the ingest service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.ingest_port)
