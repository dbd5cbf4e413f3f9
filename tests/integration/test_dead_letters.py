"""The dead-letter path on a real JetStream: retried with back-off, then parked with its error."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from shared.bus import BatchConsumer, EventBus, PublishMetrics, make_broker, settle_failure
from shared.events import Channel, DeadLetter, InboundMessage
from shared.settings import Settings
from shared.streams import CLASSIFIER, MSG_ID_HEADER, inbound_subject, provision
from tests.events import generic_inbound
from tests.stack import eventually, stored


@pytest.fixture
async def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(max_deliveries=3)


@pytest.fixture
async def js(settings: Settings) -> AsyncIterator[nats.js.JetStreamContext]:
    client = await nats.connect(settings.nats_url)
    yield client.jetstream()
    await client.close()


@contextlib.asynccontextmanager
async def stage(
    settings: Settings, handler: Callable[[InboundMessage], Awaitable[None]]
) -> AsyncIterator[CollectorRegistry]:
    """A stage as the services build one: a BatchConsumer whose handler acks each message
    it handled and settles each failure alone; yields its bus's metrics."""
    broker = make_broker(settings, "test")
    registry = CollectorRegistry()
    bus = EventBus(broker, settings, PublishMetrics.register(registry, "test"))

    async def on_pull(messages: list[Msg]) -> None:
        for msg in messages:
            try:
                await handler(InboundMessage.model_validate_json(msg.data))
            except Exception as error:
                await settle_failure(msg, error, stage="classifier", bus=bus)
            else:
                await msg.ack()

    consumer = BatchConsumer(CLASSIFIER, settings, on_pull, schema=InboundMessage, title="test")
    await broker.connect()
    js = broker.connection.jetstream()
    await provision(js, settings, CLASSIFIER)
    consumer.start(js)
    try:
        yield registry
    finally:
        await consumer.stop()
        await broker.stop()


async def dead_letters(js: nats.js.JetStreamContext, settings: Settings) -> list[DeadLetter]:
    found = await stored(js, "dm.dlq.classifier", settings.stream_name, count=10)
    return [DeadLetter.model_validate_json(data) for data in found]


async def test_failing_handler_is_retried_then_dead_lettered(
    settings: Settings, js: nats.js.JetStreamContext
) -> None:
    attempts: list[str] = []

    async def always_fails(message: InboundMessage) -> None:
        attempts.append(message.mid)
        raise RuntimeError("downstream exploded")

    async with stage(settings, always_fails) as registry:
        await js.publish(
            inbound_subject(Channel.GENERIC),
            generic_inbound("m-1").model_dump_json().encode(),
            headers={MSG_ID_HEADER: "generic:m-1"},
        )
        letters = await eventually(lambda: dead_letters(js, settings), bool)
    # Published through the service's bus: counted with its other publishes.
    labels = {"service": "test", "subject": "dm.dlq.classifier", "outcome": "stored"}
    assert registry.get_sample_value("dmdesk_published_messages_total", labels) == 1

    [letter] = letters
    assert attempts == ["m-1", "m-1", "m-1"]
    assert letter.deliveries == 3
    assert letter.error_type == "RuntimeError"
    assert letter.error == "downstream exploded"
    assert InboundMessage.model_validate_json(letter.original).mid == "m-1"
    assert letter.stream_sequence == 1


async def test_handler_that_recovers_processes_the_message_once(
    settings: Settings, js: nats.js.JetStreamContext
) -> None:
    attempts: list[str] = []
    done: list[str] = []

    async def fails_once(message: InboundMessage) -> None:
        attempts.append(message.mid)
        if len(attempts) == 1:
            raise ConnectionError("database briefly away")
        done.append(message.mid)

    async with stage(settings, fails_once):
        await js.publish(
            inbound_subject(Channel.GENERIC), generic_inbound("m-2").model_dump_json().encode()
        )
        await eventually(lambda: asyncio.sleep(0, done), bool)
        await asyncio.sleep(1.0)  # a wrong ack would show up as a third attempt

    assert done == ["m-2"]
    assert attempts == ["m-2", "m-2"]
    assert await dead_letters(js, settings) == []


async def test_message_that_does_not_validate_is_dead_lettered_at_once(
    settings: Settings, js: nats.js.JetStreamContext
) -> None:
    handled: list[InboundMessage] = []

    async def handler(message: InboundMessage) -> None:
        handled.append(message)

    async with stage(settings, handler):
        await js.publish(inbound_subject(Channel.GENERIC), b'{"mid": "x"}')
        await js.publish(inbound_subject(Channel.GENERIC), b"not json at all")
        letters = await eventually(
            lambda: dead_letters(js, settings), lambda found: len(found) == 2, timeout=10
        )

    assert handled == []
    assert [letter.deliveries for letter in letters] == [1, 1]
    assert [letter.original for letter in letters] == ['{"mid": "x"}', "not json at all"]
    assert letters[0].error_type == "ValidationError"
