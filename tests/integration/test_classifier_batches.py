"""The classifier classifies each pull at once, yet settles every message of it on its own.

The classifier service runs in-process on a real NATS server, with its real model.
"""

from collections.abc import Callable, Sequence

import nats
import pytest

from services.classifier.app import STAGE, build
from services.classifier.pipeline import Classifier, ClassifyRequest
from shared.events import (
    Channel,
    Classification,
    ClassifiedMessage,
    DeadLetter,
    InboundMessage,
)
from shared.service import service_app
from shared.settings import Settings
from shared.streams import CLASSIFIED, CLASSIFIER, MSG_ID_HEADER, inbound_subject, provision
from tests.events import generic_inbound
from tests.stack import eventually, stored

GOOD = 20
POISON = "the text this model cannot take"


def inbound(
    mid: str, text: str = "where is my order? it was due on Monday", echo: bool = False
) -> bytes:
    message = generic_inbound(mid, contact=f"contact-{mid}", text=text, echo=echo)
    return message.model_dump_json().encode()


async def test_one_pull_is_classified_together_and_each_bad_message_settled_alone(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    classify_batch = Classifier.classify_batch
    batches: list[int] = []

    def fragile(self: Classifier, items: Sequence[ClassifyRequest]) -> list[Classification]:
        batches.append(len(items))
        if any(item.text == POISON for item in items):
            raise RuntimeError("the model fell over")
        return classify_batch(self, items)

    monkeypatch.setattr(Classifier, "classify_batch", fragile)
    settings = settings_factory(max_deliveries=3)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    try:
        # Everything is stored before the classifier starts, so its first pull holds it all.
        await provision(js, settings, CLASSIFIER)
        subject = inbound_subject(Channel.GENERIC)
        mids = [f"good-{index}" for index in range(GOOD)]
        bodies = [inbound(mid) for mid in mids[:10]]
        bodies += [inbound("poison", POISON), inbound("echo", echo=True), b"not json at all"]
        bodies += [inbound(mid) for mid in mids[10:]]
        for index, body in enumerate(bodies):
            await js.publish(subject, body, headers={MSG_ID_HEADER: f"in-{index}"})

        spec = build(settings)
        app = service_app(spec)
        async with app.router.lifespan_context(app):
            letters = await eventually(
                lambda: stored(js, "dm.dlq.classifier", settings.stream_name),
                lambda found: len(found) == 2,
            )
            classified = await eventually(
                lambda: stored(js, CLASSIFIED, settings.stream_name),
                lambda found: len(found) >= GOOD,
            )
            info = await js.consumer_info(settings.stream_name, CLASSIFIER.durable)
            registry = spec.registry
            counted = {
                "failures": registry.get_sample_value("dmdesk_classification_failures_total"),
                "pulls": registry.get_sample_value(
                    "dmdesk_consumer_pull_seconds_count",
                    {"service": STAGE, "consumer": CLASSIFIER.durable},
                ),
            }
            classified_total = sum(
                sample.value
                for metric in registry.collect()
                if metric.name == "dmdesk_classified"
                for sample in metric.samples
                if sample.name == "dmdesk_classified_total"
            )
    finally:
        await client.close()

    # The first pull went to the model as one batch (then, as it raised, one by one).
    assert batches[0] == GOOD + 1
    # Every good DM classified and published once; the echo passed by.
    results = [ClassifiedMessage.model_validate_json(body) for body in classified]
    assert sorted(result.message.mid for result in results) == sorted(mids)
    assert classified_total == GOOD
    # Each message was delivered once, then the poison twice more; nothing else again.
    assert info.delivered.consumer_seq == GOOD + 3 + 2
    assert (info.num_ack_pending, info.num_pending) == (0, 0)
    bad_body, poison = sorted(
        (DeadLetter.model_validate_json(letter) for letter in letters),
        key=lambda letter: letter.deliveries,
    )
    assert (bad_body.error_type, bad_body.deliveries) == ("ValidationError", 1)
    assert (poison.error_type, poison.error, poison.deliveries) == (
        "RuntimeError",
        "the model fell over",
        3,
    )
    assert InboundMessage.model_validate_json(poison.original).mid == "poison"
    # Failed: the body that does not validate once, the poison three times.
    assert counted["failures"] == 4
    # Its pulls are timed by the consumers' own histogram (no second, classifier-only one).
    assert (counted["pulls"] or 0) >= 3
