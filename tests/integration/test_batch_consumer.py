"""BatchConsumer on a real JetStream: a pull per call, and a stop that lets the pull finish."""

import asyncio
from collections.abc import Callable

import nats
from nats.aio.msg import Msg

from shared.bus import BatchConsumer
from shared.events import Channel, InboundMessage
from shared.settings import Settings
from shared.streams import CLASSIFIER, inbound_subject, provision
from tests.stack import eventually


async def test_stop_lets_the_pull_in_hand_finish_then_pulls_no_more(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(graceful_timeout_seconds=10)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    release = asyncio.Event()
    pulls: list[list[bytes]] = []

    async def handle(messages: list[Msg]) -> None:
        pulls.append([msg.data for msg in messages])
        await release.wait()
        for msg in messages:
            await msg.ack()

    consumer = BatchConsumer(CLASSIFIER, settings, handle, schema=InboundMessage, title="test")
    try:
        await provision(js, settings, CLASSIFIER)
        subject = inbound_subject(Channel.GENERIC)
        for body in (b"1", b"2", b"3"):
            await js.publish(subject, body)
        consumer.start(js)
        await eventually(lambda: asyncio.sleep(0, pulls), bool)
        stopping = asyncio.create_task(consumer.stop())
        await asyncio.sleep(0.5)
        waited_for_the_pull = not stopping.done()
        release.set()
        await asyncio.wait_for(stopping, timeout=5)
        await js.publish(subject, b"after the stop")
        await asyncio.sleep(0.5)
        info = await js.consumer_info(settings.stream_name, CLASSIFIER.durable)
    finally:
        release.set()
        await consumer.stop()
        await client.close()

    assert pulls == [[b"1", b"2", b"3"]]  # what was stored, in one call
    assert waited_for_the_pull
    # The pull in hand was acked, and nothing was pulled after the stop.
    assert (info.num_ack_pending, info.num_pending) == (0, 1)


async def test_a_handler_that_raises_does_not_end_the_pulling(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(ack_wait_seconds=1)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    pulls: list[list[bytes]] = []

    async def handle(messages: list[Msg]) -> None:
        pulls.append([msg.data for msg in messages])
        if len(pulls) == 1:
            raise ConnectionError("NATS went away while acking")
        for msg in messages:
            await msg.ack()

    consumer = BatchConsumer(CLASSIFIER, settings, handle, schema=InboundMessage, title="test")
    try:
        await provision(js, settings, CLASSIFIER)
        await js.publish(inbound_subject(Channel.GENERIC), b"1")
        consumer.start(js)
        await eventually(lambda: asyncio.sleep(0, pulls), lambda found: len(found) == 2)
        await js.publish(inbound_subject(Channel.GENERIC), b"2")
        await eventually(lambda: asyncio.sleep(0, pulls), lambda found: len(found) == 3)
    finally:
        await consumer.stop()
        await client.close()

    # Redelivered after the ack wait, then the next message as usual.
    assert pulls == [[b"1"], [b"1"], [b"2"]]


async def test_after_a_small_pull_it_lingers_so_a_steady_flow_comes_in_batches(
    settings_factory: Callable[..., Settings],
) -> None:
    # A pull smaller than the batch size: the next waits DMDESK_PULL_LINGER_SECONDS, and
    # what arrived meanwhile comes as one pull, not one pull per message.
    settings = settings_factory(pull_linger_seconds=0.5)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    pulls: list[list[bytes]] = []

    async def handle(messages: list[Msg]) -> None:
        pulls.append([msg.data for msg in messages])
        for msg in messages:
            await msg.ack()

    consumer = BatchConsumer(CLASSIFIER, settings, handle, schema=InboundMessage, title="test")
    try:
        await provision(js, settings, CLASSIFIER)
        subject = inbound_subject(Channel.GENERIC)
        consumer.start(js)
        await js.publish(subject, b"first")
        await eventually(lambda: asyncio.sleep(0, pulls), bool)
        for body in (b"2", b"3", b"4"):  # one at a time, while it lingers
            await js.publish(subject, body)
            await asyncio.sleep(0.05)
        await eventually(lambda: asyncio.sleep(0, pulls), lambda seen: len(seen) >= 2)
    finally:
        await consumer.stop()
        await client.close()

    assert pulls == [[b"first"], [b"2", b"3", b"4"]]
