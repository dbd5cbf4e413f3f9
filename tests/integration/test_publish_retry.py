"""A publish retried after a PubAck timeout: stored once, and not reported as a duplicate."""

from collections.abc import Callable
from typing import Any

import nats
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from shared.bus import publish_event
from shared.events import Channel
from shared.settings import Settings
from shared.streams import inbound_subject, provision
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
