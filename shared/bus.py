"""The NATS plumbing every service shares: broker, durable subscribers, publishing, dead letters."""

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import asyncpg.exceptions  # type: ignore[import-untyped]
import nats.errors
import sqlalchemy.exc
from faststream.nats import NatsBroker, NatsRouter, PubAck
from faststream.nats.publisher.usecase import LogicPublisher
from faststream.nats.security import NatsUserPassword
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError

from shared.events import DeadLetter
from shared.logs import error_fields
from shared.settings import Settings
from shared.streams import (
    DEAD_LETTER_EVENT,
    MSG_ID_HEADER,
    Consumer,
    Subject,
    dead_letter_subject,
    is_dead_letter,
)
from shared.tasks import stop_task

logger = logging.getLogger("dmdesk.bus")
E = TypeVar("E", bound=BaseModel)

PUBLISH_ATTEMPTS = 3
RETRYABLE_PUBLISH_ERRORS = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
)
MAX_REDELIVERY_DELAY_SECONDS = 30.0
# A message that does not decode or validate will fail the same way on every delivery.
PERMANENT_ERRORS = (ValidationError, UnicodeDecodeError, json.JSONDecodeError)


class RetryLater(Exception):  # noqa: N818 - it names what the handler asks for
    """The message is fine but cannot be handled yet (another worker is at it): redeliver."""


# A dependency that is down (the database, NATS) says nothing about the message: it is
# redelivered with back-off for as long as the outage lasts, never dead-lettered for it.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RetryLater,
    ConnectionError,
    TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    nats.errors.ConnectionClosedError,
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
)
# JetStream answers 503 (nats-py's ServiceUnavailableError) both when nobody serves the
# request now and when a stream refuses this very message (err_code 10077, a per-subject
# limit), which must be dead-lettered. The first kind is an outage: no error code at all
# (nats-py's no-responders, say a KV get while the stream elects a leader) or 10008,
# "JetStream system temporarily unavailable".
JETSTREAM_UNAVAILABLE_CODES = frozenset({None, 10008})


def nats_credentials(settings: Settings) -> dict[str, str]:
    """``nats.connect`` keyword arguments for the service's NATS user (none without one)."""
    if not settings.nats_user:
        return {}
    return {"user": settings.nats_user, "password": settings.nats_password.get_secret_value()}


def make_broker(settings: Settings, service: str) -> NatsBroker:
    """A broker that reconnects forever and drains on stop.

    The services publish through :class:`EventBus` and read through :class:`BatchConsumer`,
    which count what they do in ``dmdesk_*`` metrics: nothing passes through faststream's
    publishers or subscribers, so its Prometheus middleware would export nothing.
    """
    return NatsBroker(
        servers=settings.nats_url.split(","),
        name=f"dmdesk-{service}",
        security=(
            NatsUserPassword(settings.nats_user, settings.nats_password.get_secret_value())
            if settings.nats_user
            else None
        ),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=settings.graceful_timeout_seconds,
        logger=logging.getLogger(f"dmdesk.{service}.faststream"),
        # faststream logs every message received and processed: keep that off the hot path.
        log_level=logging.DEBUG,
    )


def stage_router(stage: str) -> NatsRouter:
    """The router a stage declares its publishers on (the AsyncAPI document), its dead
    letters' subject included."""
    router = NatsRouter()
    router.publisher(
        dead_letter_subject(stage),
        schema=DeadLetter,
        title=f"dead letters of {stage}",
        description="What this stage gave up on, with the error and the original message.",
    )
    return router


def event_publisher(
    router: NatsRouter,
    subject: str,
    schema: type[BaseModel],
    description: str = "",
    title: str | None = None,
) -> LogicPublisher:
    """A documented publisher of ``schema`` events on ``subject`` (see publish_event).

    ``title`` names the AsyncAPI channel; give one when two services publish on
    the same subject.
    """
    return router.publisher(subject, schema=schema, title=title or subject, description=description)


BatchHandler = Callable[[list[Msg]], Awaitable[None]]
FETCH_WAIT_SECONDS = 5.0
REBIND_DELAY_SECONDS = 1.0


PULL_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclasses.dataclass(frozen=True)
class PullMetrics:
    """What a service's :class:`BatchConsumer` pulls record (the pipeline dashboard's
    handled messages, processing latency and messages in process)."""

    service: str
    handled: Counter
    seconds: Histogram
    in_process: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry, service: str) -> "PullMetrics":
        """The metrics in ``registry``, labelled with ``service``."""
        labels = ["service", "consumer"]
        return cls(
            service=service,
            handled=Counter(
                "dmdesk_consumer_handled_messages_total",
                "Messages handed to a durable consumer's handler (settled by it: acked, or"
                " redelivered / dead-lettered, which dmdesk_dead_letters_total counts).",
                labels,
                registry=registry,
            ),
            seconds=Histogram(
                "dmdesk_consumer_pull_seconds",
                "Time a durable consumer's handler took over one pull (all its messages).",
                labels,
                buckets=PULL_SECONDS_BUCKETS,
                registry=registry,
            ),
            in_process=Gauge(
                "dmdesk_consumer_messages_in_process",
                "Messages a durable consumer's handler holds now.",
                labels,
                registry=registry,
            ),
        )

    def pulled(self, consumer: str, messages: int) -> Callable[[], None]:
        """Record a pull of ``messages`` handed over now; call the answer once handled."""
        started = time.perf_counter()
        in_process = self.in_process.labels(self.service, consumer)
        in_process.inc(messages)

        def handled() -> None:
            in_process.dec(messages)
            self.handled.labels(self.service, consumer).inc(messages)
            self.seconds.labels(self.service, consumer).observe(time.perf_counter() - started)

        return handled


@dataclasses.dataclass(frozen=True)
class PublishMetrics:
    """What a service's :class:`EventBus` publishes record (the pipeline dashboard's
    published events and publish latency)."""

    service: str
    published: Counter
    seconds: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry, service: str) -> "PublishMetrics":
        """The metrics in ``registry``, labelled with ``service``."""
        return cls(
            service=service,
            published=Counter(
                "dmdesk_published_messages_total",
                "Events a service published to the stream, by subject; outcome duplicate:"
                " the stream already held one with its Nats-Msg-Id (a retry or a redelivery).",
                ["service", "subject", "outcome"],
                registry=registry,
            ),
            seconds=Histogram(
                "dmdesk_publish_seconds",
                "Time from publishing an event to the stream's acknowledgement (retries included).",
                ["service"],
                buckets=PULL_SECONDS_BUCKETS,
                registry=registry,
            ),
        )


class EventBus:
    """Where a service publishes its events: :func:`publish_event` on nats-py's JetStream
    context, counted in :class:`PublishMetrics`.

    faststream's publishers cost about twice the CPU of a nats-py publish (their
    per-publish middlewares), on a path every DM takes several times. The subjects are
    still declared on the services' routers (``event_publisher``), so the AsyncAPI document
    lists them.
    """

    def __init__(self, broker: NatsBroker, settings: Settings, metrics: PublishMetrics) -> None:
        self.broker = broker
        self.settings = settings
        self.metrics = metrics
        self._seconds = metrics.seconds.labels(metrics.service)
        self._js: JetStreamContext | None = None

    def jetstream(self) -> JetStreamContext:
        """The connection's JetStream context (the broker connects at startup: looked up at
        first use; nats-py keeps the same client across reconnections)."""
        if self._js is None:
            self._js = self.broker.connection.jetstream()
        return self._js

    async def publish(self, definition: Subject[E], event: E) -> PubAck:
        """Publish ``event`` as its definition in ``shared.streams`` says: on its subject,
        with its dedupe id."""
        return await self.publish_event(
            event, subject=definition.subject(event), msg_id=definition.msg_id(event)
        )

    async def publish_event(self, event: BaseModel, *, subject: str, msg_id: str) -> PubAck:
        """Publish ``event`` on ``subject`` with ``msg_id`` (see :func:`publish_event`)."""
        started = time.perf_counter()
        ack = await publish_event(
            self.jetstream(), event, subject=subject, msg_id=msg_id, settings=self.settings
        )
        self._seconds.observe(time.perf_counter() - started)
        outcome = "duplicate" if ack.duplicate else "stored"
        self.metrics.published.labels(self.metrics.service, subject, outcome).inc()
        return ack


class BatchConsumer:
    """A durable pull consumer whose handler gets each pull's messages in one call.

    The api's projections and the classifier use it: one call per pull keeps
    faststream's per-message work (middlewares, context, dependency injection) off
    their hottest paths; the api's writer commits a pull in one transaction, the
    classifier's model takes a pull as one batch. The handler settles every message
    itself: ``msg.ack()`` once its effect is durable, :func:`settle_failure` when it
    fails, so one bad message fails alone.

    A handler that raises (NATS gone while it acked, say) does not end the pulling: what
    it left unsettled is redelivered once the consumer's ack wait has passed.

    It pulls with nats-py's ``fetch``, which hands over what the server has as soon
    as there is one message (up to ``pull_batch_size``): a batch adds no wait when
    the stream is quiet and grows with the load. faststream's batch subscriber waits
    to fill a batch up to its timeout instead, which costs either latency or, with a
    short timeout, a stream of empty pulls while idle. After a pull smaller than the
    batch size it waits ``pull_linger_seconds`` (10 ms) before the next: a steady flow
    of a few hundred DMs a second then comes in pulls of several messages rather than
    one each, which cost the stack about a seventh less CPU per DM (docs/benchmarks.md),
    for at most that wait per stage.
    """

    def __init__(
        self,
        consumer: Consumer,
        settings: Settings,
        handle: BatchHandler,
        *,
        schema: type[BaseModel] | Mapping[str, type[BaseModel]],
        title: str,
    ) -> None:
        self.consumer = consumer
        self.settings = settings
        self.handle = handle
        # The event each message holds, by subject when it reads several (AsyncAPI).
        self.schemas = (
            dict(schema)
            if isinstance(schema, Mapping)
            else dict.fromkeys(consumer.subjects, schema)
        )
        self.title = title
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._handling = False
        self._metrics: PullMetrics | None = None

    def start(self, js: JetStreamContext, metrics: PullMetrics | None = None) -> None:
        """Start pulling (the durable is provisioned, the connection up)."""
        self._metrics = metrics
        self._running = True
        self._task = asyncio.create_task(self._run(js), name=f"pull {self.consumer.durable}")

    async def stop(self) -> None:
        """Stop pulling; a batch in hand gets ``graceful_timeout_seconds`` to finish.

        What is not acked by then is redelivered (after the consumer's ack wait).
        """
        self._running = False
        if self._task is not None and self._handling:
            await asyncio.wait({self._task}, timeout=self.settings.graceful_timeout_seconds)
        await stop_task(self._task)

    async def _run(self, js: JetStreamContext) -> None:
        subscription: JetStreamContext.PullSubscription | None = None
        try:
            while self._running:
                try:
                    if subscription is None:
                        subscription = await js.pull_subscribe_bind(
                            self.consumer.durable, stream=self.settings.stream_name
                        )
                    messages = await subscription.fetch(
                        self.settings.pull_batch_size, timeout=FETCH_WAIT_SECONDS
                    )
                except TimeoutError:  # nothing to do for a while (nats-py's subclasses it)
                    continue
                except Exception as error:  # NATS away or restarting: bind again shortly
                    logger.warning(
                        "pull failed; retrying",
                        extra={
                            "consumer": self.consumer.durable,
                            "error_type": type(error).__name__,
                        },
                    )
                    await _unsubscribe(subscription)
                    subscription = None
                    await asyncio.sleep(REBIND_DELAY_SECONDS)
                    continue
                self._handling = True
                done = (
                    self._metrics.pulled(self.consumer.durable, len(messages))
                    if self._metrics is not None
                    else None
                )
                try:
                    await self.handle(messages)
                except Exception as error:  # e.g. NATS went away while it acked: pull on
                    logger.exception(
                        "batch handler failed; its unsettled messages are redelivered",
                        extra={
                            "consumer": self.consumer.durable,
                            "messages": len(messages),
                            "error_type": type(error).__name__,
                        },
                    )
                finally:
                    self._handling = False
                    if done is not None:
                        done()
                linger = self.settings.pull_linger_seconds
                if linger and len(messages) < self.settings.pull_batch_size and self._running:
                    await asyncio.sleep(linger)
        finally:
            await _unsubscribe(subscription)


async def _unsubscribe(subscription: JetStreamContext.PullSubscription | None) -> None:
    if subscription is not None:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


async def publish_event(
    js: JetStreamContext,
    event: BaseModel,
    *,
    subject: str,
    msg_id: str,
    settings: Settings,
) -> PubAck:
    """Publish ``event`` on ``subject`` to the stream and wait for its PubAck.

    ``js`` is nats-py's JetStream context (what :class:`EventBus` publishes with).
    ``msg_id`` is the JetStream dedupe key: a publish that timed out may still have been
    stored, so it is retried with the same id and stored once.

    The PubAck's ``duplicate`` says whether the event was stored before this call: when
    an attempt timed out and the retry is told "duplicate", the attempt that timed out
    stored it (a server slow to answer), so it is reported as stored by this call.
    """
    timed_out = False
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            ack = await js.publish(
                subject,
                event.model_dump_json().encode(),
                timeout=settings.publish_timeout_seconds,
                stream=settings.stream_name,
                headers={MSG_ID_HEADER: msg_id, "content-type": "application/json"},
            )
        except RETRYABLE_PUBLISH_ERRORS as error:
            if attempt == PUBLISH_ATTEMPTS:
                raise
            timed_out = timed_out or isinstance(error, nats.errors.TimeoutError)
            await asyncio.sleep(0.2 * 2**attempt)
        else:
            return dataclasses.replace(ack, duplicate=False) if timed_out else ack
    raise AssertionError("unreachable")  # pragma: no cover


def redelivery_delay(deliveries: int) -> float:
    """Back-off before the next delivery of a message that failed ``deliveries`` times."""
    return float(min(MAX_REDELIVERY_DELAY_SECONDS, 0.5 * 2 ** (deliveries - 1)))


async def settle_failure(msg: Msg, error: Exception, *, stage: str, bus: EventBus) -> None:
    """Redeliver a failed message with back-off, or dead-letter it when retrying is futile.

    A message that fails validation is dead-lettered at once (it would fail the same
    way forever); any other failure after ``max_deliveries`` deliveries, unless a
    dependency is down. The dead letter is published on ``bus`` (counted with the
    service's other publishes) with a PubAck before the original is acked, so nothing
    is dropped.
    """
    settings = bus.settings
    metadata = msg.metadata
    deliveries = metadata.num_delivered or 1
    permanent = isinstance(error, PERMANENT_ERRORS)
    unavailable = dependency_unavailable(error)
    if is_dead_letter(msg.subject):
        await _keep_dead_letter(msg, error, deliveries, permanent=permanent, stage=stage)
        return
    if permanent or (deliveries >= settings.max_deliveries and not unavailable):
        await _dead_letter(msg, error, deliveries, stage=stage, bus=bus)
        await msg.ack()
        return
    delay = redelivery_delay(deliveries)
    logger.warning(
        "handler failed; redelivering",
        extra={
            "stage": stage,
            "subject": msg.subject,
            "deliveries": deliveries,
            "delay_s": delay,
            "dependency_unavailable": unavailable,
        }
        | error_fields(error),
    )
    await msg.nak(delay=delay)


async def _keep_dead_letter(
    msg: Msg, error: Exception, deliveries: int, *, permanent: bool, stage: str
) -> None:
    """A dead letter that could not be recorded stays in the stream: never a dead letter's.

    One that does not even decode is terminated (it stays stored; replaying is by hand);
    any other is redelivered with back-off until it is recorded.
    """
    fields = {"stage": stage, "subject": msg.subject, "deliveries": deliveries}
    if permanent:
        logger.error(
            "dead letter unreadable; left in the stream",
            extra=fields | {"stream_sequence": msg.metadata.sequence.stream} | error_fields(error),
        )
        await msg.term()
        return
    delay = redelivery_delay(deliveries)
    logger.error(
        "dead letter not recorded; redelivering",
        extra=fields | {"delay_s": delay} | error_fields(error),
    )
    await msg.nak(delay=delay)


async def _dead_letter(
    msg: Msg,
    error: Exception,
    deliveries: int,
    *,
    stage: str,
    bus: EventBus,
) -> None:
    sequence = msg.metadata.sequence.stream
    letter = DeadLetter(
        stage=stage,
        subject=msg.subject,
        stream_sequence=sequence,
        deliveries=deliveries,
        error_type=type(error).__name__,
        error=str(error)[:4000],
        original=msg.data.decode("utf-8", errors="replace"),
        headers={k: v for k, v in (msg.headers or {}).items() if isinstance(v, str)},
    )
    await bus.publish(DEAD_LETTER_EVENT, letter)
    logger.error(
        "message dead-lettered",
        extra={
            "stage": stage,
            "subject": msg.subject,
            "stream_sequence": sequence,
            "deliveries": deliveries,
        }
        | error_fields(error),
    )


def dependency_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says a dependency is down, not the message bad."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, UNAVAILABLE_ERRORS):
            return True
        if (
            isinstance(seen, ServiceUnavailableError)
            and seen.err_code in JETSTREAM_UNAVAILABLE_CODES
        ):
            return True
        original = getattr(seen, "orig", None)
        if isinstance(original, BaseException) and dependency_unavailable(original):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
