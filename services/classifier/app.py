"""The classifier service: ``dm.inbound.*`` in, ``dm.classified`` out."""

from prometheus_client import CollectorRegistry, Counter

from services.classifier.keywords import classify
from shared import streams
from shared.bus import durable_subscriber, event_publisher, make_broker, publish_event, stage_router
from shared.events import ClassifiedMessage, InboundMessage
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings

STAGE = "classifier"


def build(settings: Settings) -> ServiceSpec:
    """Wire the classifier's broker, handlers and metrics."""
    registry = CollectorRegistry()
    classified_total = Counter(
        "dmdesk_classified_total",
        "DMs classified, by category and priority.",
        ["category", "priority"],
        registry=registry,
    )
    broker = make_broker(settings, STAGE, registry)
    router = stage_router(STAGE, settings)
    classified_out = event_publisher(
        router, streams.CLASSIFIED, ClassifiedMessage, "Every customer DM with its classification."
    )

    @durable_subscriber(router, streams.CLASSIFIER, settings, title="classify inbound DMs")
    async def on_inbound(message: InboundMessage) -> None:
        """Classify a customer's message; echoes (the page's own messages) pass by."""
        if message.is_echo:
            return
        classification = classify(message.text)
        await publish_event(
            classified_out,
            ClassifiedMessage(message=message, classification=classification),
            msg_id=f"classified:{message.channel.value}:{message.mid}",
            settings=settings,
        )
        classified_total.labels(classification.category.value, classification.priority.value).inc()

    broker.include_router(router)
    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        consumers=(streams.CLASSIFIER,),
        description="Tags every inbound DM; see docs/architecture.md.",
    )


def main() -> None:
    """Run the classifier service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.classifier_port)
