"""A publish retried after a PubAck timeout: stored once, and not reported as a duplicate;
what the EventBus counts."""

from collections.abc import Callable
from typing import Any

import nats
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck
from prometheus_client import CollectorRegistry

from shared.bus import EventBus, PublishMetrics, make_broker, publish_event
from shared.events import Channel
from shared.settings import Settings
from shared.streams import INBOUND_EVENT, inbound_subject, provision
from tests.events import generic_inbound
from tests.stack import stored


class SlowFirstAnswer(JetStreamContext):
    """The server stores the first publish but its PubAck comes too late (a timeout)."""

    attempts = 0

    async def publish(self, *args: Any, **kwargs: Any) -> PubAck:
        SlowFirstAnswer.attempts += 1
        ack = await super().publish(*args, **kwargs)
        if SlowFirstAnswer.attempts == 1:
            raise nats.errors.TimeoutError
        return ack


async def test_the_retry_of_a_timed_out_publish_is_not_a_duplicate(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    client = await nats.connect(settings.nats_url)
    try:
        js = client.jetstream()
        await provision(js, settings)
        slow = SlowFirstAnswer(client)
        subject = inbound_subject(Channel.GENERIC)
        first = await publish_event(
            slow, generic_inbound("m-1"), subject=subject, msg_id="generic:m-1", settings=settings
        )
        # A later delivery of the same event (a webhook retried by the platform) is one.
        again = await publish_event(
            js, generic_inbound("m-1"), subject=subject, msg_id="generic:m-1", settings=settings
        )
        bodies = await stored(js, subject, settings.stream_name)
    finally:
        await client.close()

    assert SlowFirstAnswer.attempts == 2
    assert not first.duplicate, "stored by this very call: its first attempt's answer was late"
    assert again.duplicate
    assert len(bodies) == 1


async def test_the_event_bus_counts_what_it_stored_and_what_the_stream_already_held(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    registry = CollectorRegistry()
    broker = make_broker(settings, "test")
    bus = EventBus(broker, settings, PublishMetrics.register(registry, "test"))
    await broker.connect()
    try:
        js = broker.connection.jetstream()
        await provision(js, settings)
        first = await bus.publish(INBOUND_EVENT, generic_inbound("m-1"))
        again = await bus.publish(INBOUND_EVENT, generic_inbound("m-1"))
        other = await bus.publish(INBOUND_EVENT, generic_inbound("m-2"))
        bodies = await stored(js, inbound_subject(Channel.GENERIC), settings.stream_name)
    finally:
        await broker.stop()

    assert [bool(ack.duplicate) for ack in (first, again, other)] == [False, True, False]
    assert len(bodies) == 2
    subject = inbound_subject(Channel.GENERIC)

    def published(outcome: str) -> float | None:
        return registry.get_sample_value(
            "dmdesk_published_messages_total",
            {"service": "test", "subject": subject, "outcome": outcome},
        )

    assert (published("stored"), published("duplicate")) == (2.0, 1.0)
    assert registry.get_sample_value("dmdesk_publish_seconds_count", {"service": "test"}) == 3.0
