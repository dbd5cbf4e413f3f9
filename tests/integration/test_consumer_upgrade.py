"""A stack upgraded in place: a new durable starts where the ones it replaces stopped."""

from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared import streams
from shared.settings import Settings
from shared.streams import MSG_ID_HEADER, OUTBOUND_REQUESTED, ROUTED_REPLY, provision


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
async def js(settings: Settings) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(settings.nats_url)
    yield client.jetstream()
    await client.close()


async def test_the_new_sender_starts_after_what_the_old_one_acked(
    settings: Settings, js: JetStreamContext
) -> None:
    await provision(js, settings)
    for n in range(3):
        await js.publish(OUTBOUND_REQUESTED, b"{}", headers={MSG_ID_HEADER: f"old-{n}"})
    # sender-v1 (as an older release defined it) sent and acked the first two.
    await js.add_consumer(
        settings.stream_name,
        ConsumerConfig(
            durable_name="sender-v1",
            filter_subject=OUTBOUND_REQUESTED,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
        ),
    )
    old = await js.pull_subscribe_bind("sender-v1", stream=settings.stream_name)
    for msg in await old.fetch(2, timeout=2):
        await msg.ack_sync()
    await js.publish(ROUTED_REPLY, b"{}", headers={MSG_ID_HEADER: "new-0"})

    await provision(js, settings, streams.SENDER)
    new = await js.pull_subscribe_bind(streams.SENDER.durable, stream=settings.stream_name)
    left = [msg.headers.get(MSG_ID_HEADER) for msg in await new.fetch(10, timeout=2)]
    assert left == ["old-2", "new-0"]

    # Provisioned again (a restart): it keeps its start and its position.
    await provision(js, settings, streams.SENDER)
    info = await js.consumer_info(settings.stream_name, streams.SENDER.durable)
    assert info.config.deliver_policy == DeliverPolicy.BY_START_SEQUENCE
    assert sorted(info.config.filter_subjects or []) == sorted(streams.SENDER.subjects)


async def test_a_new_stack_reads_the_stream_from_its_start(
    settings: Settings, js: JetStreamContext
) -> None:
    await provision(js, settings)
    await js.publish("dm.inbound.generic", b"{}", headers={MSG_ID_HEADER: "first"})
    await provision(js, settings, streams.RESPONDER_CONTACTS)
    info = await js.consumer_info(settings.stream_name, streams.RESPONDER_CONTACTS.durable)
    assert info.config.deliver_policy == DeliverPolicy.ALL
    assert info.num_pending == 1
