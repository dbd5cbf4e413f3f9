"""The classifier service: ``dm.inbound.*`` in, ``dm.classified`` out."""

import asyncio
import logging
from collections.abc import Mapping, Sequence

from nats.aio.msg import Msg
from prometheus_client import Counter
from pydantic import ValidationError

from services.classifier.model import CategoryModel
from services.classifier.pipeline import Classifier, ClassifyRequest
from services.classifier.stores import (
    ContactLanguages,
    ModelFollower,
    contact_key,
)
from shared import streams
from shared.bus import (
    BatchConsumer,
    EventBus,
    PublishMetrics,
    event_publisher,
    make_broker,
    settle_failure,
    stage_router,
)
from shared.events import Classification, ClassifiedMessage, InboundMessage, LanguageSource
from shared.ops import service_registry
from shared.priority_policy import PolicyStore
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings

logger = logging.getLogger("dmdesk.classifier")

STAGE = "classifier"
NEUTRAL_BAND = 0.05


def build(settings: Settings) -> ServiceSpec:
    """Wire the classifier's broker, handlers and metrics."""
    registry = service_registry()
    classified_total = Counter(
        "dmdesk_classified_total",
        "DMs classified, by category, priority and sentiment (negative, neutral, positive).",
        ["category", "priority", "sentiment"],
        registry=registry,
    )
    failures_total = Counter(
        "dmdesk_classification_failures_total",
        "Inbound DMs whose classification or its publish failed (redelivered later, or "
        "dead-lettered).",
        registry=registry,
    )
    # Loaded at start-up (about a second), not when the app is merely built.
    classifiers: list[Classifier] = []

    def swap_model(model: CategoryModel) -> None:
        classifiers[0].model = model

    follower = ModelFollower(settings, swap_model)

    async def load_model() -> None:
        if not classifiers:
            classifiers.append(Classifier(policy=PolicyStore(settings.priority_policy)))
        await follower.start()

    broker = make_broker(settings, STAGE)
    # broker.connection exists only once connected: look it up at first use.
    contact_languages = ContactLanguages(lambda: broker.connection.jetstream(), settings)  # noqa: PLW0108
    router = stage_router(STAGE)
    # Declared for the AsyncAPI document; published through the EventBus.
    event_publisher(
        router, streams.CLASSIFIED, ClassifiedMessage, "Every customer DM with its classification."
    )
    bus = EventBus(broker, settings, PublishMetrics.register(registry, STAGE))

    async def on_pull(messages: list[Msg]) -> None:
        """Classify a pull's customer messages at once; echoes (the page's own) pass by."""
        customers: list[tuple[Msg, InboundMessage]] = []
        for msg in messages:
            try:
                message = InboundMessage.model_validate_json(msg.data)
            except ValidationError as error:
                await settle(msg, error)
                continue
            if message.is_echo:
                await msg.ack()
            else:
                customers.append((msg, message))
        outcomes = await classify_remembering_languages(
            classifiers[0], contact_languages, [message for _, message in customers], settings
        )
        classified = [
            i for i, outcome in enumerate(outcomes) if isinstance(outcome, Classification)
        ]
        published = await asyncio.gather(
            *(
                bus.publish(
                    streams.CLASSIFIED_EVENT,
                    ClassifiedMessage(message=customers[i][1], classification=outcomes[i]),
                )
                for i in classified
            ),
            return_exceptions=True,
        )
        for i, result in zip(classified, published, strict=True):
            if isinstance(result, Exception):
                outcomes[i] = result
            elif isinstance(result, BaseException):  # cancelled: the pull stays unacked
                raise result
        for (msg, _), outcome in zip(customers, outcomes, strict=True):
            if isinstance(outcome, Exception):
                await settle(msg, outcome)
                continue
            await msg.ack()
            classified_total.labels(
                outcome.category.value,
                outcome.priority.value,
                sentiment_label(outcome.sentiment),
            ).inc()

    async def settle(msg: Msg, error: Exception) -> None:
        failures_total.inc()
        await settle_failure(msg, error, stage=STAGE, bus=bus)

    broker.include_router(router)
    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        batch_consumers=(
            BatchConsumer(
                streams.CLASSIFIER,
                settings,
                on_pull,
                schema=InboundMessage,
                title="classify inbound DMs",
            ),
        ),
        on_startup=(load_model,),
        on_shutdown=(follower.stop,),
        state={"model_follower": follower},
        description="Tags every inbound DM; see docs/architecture.md.",
    )


async def classify_remembering_languages(
    classifier: Classifier,
    store: ContactLanguages,
    messages: Sequence[InboundMessage],
    settings: Settings,
) -> list[Classification | Exception]:
    """:func:`classify_each` with the contacts' previous languages read from ``store``
    for the whole pull, and the languages the detector was sure of written back when
    they changed (a new contact's when it is not the page's default). The bucket only
    helps: when it fails, the pull is classified without it."""
    keys = [contact_key(message) for message in messages]
    try:
        previous = await store.read(keys)
    except Exception as error:  # the languages help; they never stop classification
        logger.warning("contact languages unreadable", extra={"error_type": type(error).__name__})
        previous = {}
    outcomes = classify_each(classifier, messages, settings, previous)
    # Stored when it differs from what a short DM would fall back to without it: the
    # contact's stored language, else the page's default (so a new contact writing in
    # the page's language costs no write).
    fallbacks = [
        previous.get(key, settings.default_language_of(message.account_id))
        for key, message in zip(keys, messages, strict=True)
    ]
    changed = {
        key: outcome.language
        for key, fallback, outcome in zip(keys, fallbacks, outcomes, strict=True)
        if isinstance(outcome, Classification)
        and outcome.language_source is LanguageSource.DETECTOR
        and outcome.language is not None
        and outcome.language != fallback
    }
    if changed:
        try:
            await store.write(changed)
        except Exception as error:
            logger.warning(
                "contact languages not stored", extra={"error_type": type(error).__name__}
            )
    return outcomes


def classify_each(
    classifier: Classifier,
    messages: Sequence[InboundMessage],
    settings: Settings,
    previous_languages: Mapping[str, str] | None = None,
) -> list[Classification | Exception]:
    """Each message's classification, in one batch (faster per DM than one by one).

    Each is classified among its page's languages, with the contact's previous language
    (``previous_languages``, by :func:`contact_key`) and the page's default as fallbacks.
    When the batch raises, each message is classified alone, so that the one the model
    fails on fails alone (redelivered, then dead-lettered) and the others go on.
    """
    known = previous_languages or {}
    requests = [
        ClassifyRequest.from_message(
            message,
            languages=settings.languages_of(message.account_id),
            default_language=settings.default_language_of(message.account_id),
            previous_language=known.get(contact_key(message)),
        )
        for message in messages
    ]
    try:
        return list(classifier.classify_batch(requests))
    except Exception:
        logger.exception("a pull failed to classify; classifying each DM alone")
    outcomes: list[Classification | Exception] = []
    for request in requests:
        try:
            outcomes.append(classifier.classify_batch([request])[0])
        except Exception as error:
            outcomes.append(error)
    return outcomes


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
