"""The classifier service: ``dm.inbound.*`` in, ``dm.classified`` out."""

from prometheus_client import CollectorRegistry, Counter

from services.classifier.pipeline import Classifier
from services.classifier.priority import PolicyStore
from shared import streams
from shared.bus import durable_subscriber, event_publisher, make_broker, publish_event, stage_router
from shared.events import ClassifiedMessage, InboundMessage
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings

STAGE = "classifier"
NEUTRAL_BAND = 0.05


def build(settings: Settings) -> ServiceSpec:
    """Wire the classifier's broker, handlers and metrics."""
    registry = CollectorRegistry()
    classified_total = Counter(
        "dmdesk_classified_total",
        "DMs classified, by category, priority and sentiment (negative, neutral, positive).",
        ["category", "priority", "sentiment"],
        registry=registry,
    )
    # Loaded at start-up (about a second), not when the app is merely built.
    classifiers: list[Classifier] = []

    async def load_model() -> None:
        classifiers.append(Classifier(policy=PolicyStore(settings.priority_policy)))

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
        classification = classifiers[0].classify(
            message.text, message.contact, is_request=message.is_request
        )
        await publish_event(
            classified_out,
            ClassifiedMessage(message=message, classification=classification),
            msg_id=f"classified:{message.channel.value}:{message.mid}",
            settings=settings,
        )
        classified_total.labels(
            classification.category.value,
            classification.priority.value,
            sentiment_label(classification.sentiment),
        ).inc()

    broker.include_router(router)
    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        consumers=(streams.CLASSIFIER,),
        on_startup=(load_model,),
        description="Tags every inbound DM; see docs/architecture.md.",
    )


def sentiment_label(score: float) -> str:
    """VADER's usual cut-offs: below -0.05 negative, above 0.05 positive."""
    if score < -NEUTRAL_BAND:
        return "negative"
    if score > NEUTRAL_BAND:
        return "positive"
    return "neutral"


def main() -> None:
    """Run the classifier service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.classifier_port)
