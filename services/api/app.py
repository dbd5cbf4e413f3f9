"""The api service: projects the ``dm.*`` events into the database and serves the REST API."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from faststream.nats import NatsRouter
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from services.api import projector
from services.api.actions import router as actions_router
from services.api.admin import router as admin_router
from services.api.attachments import router as attachments_router
from services.api.auth import ApiLimits
from services.api.changes import ChangeFeed
from services.api.changes import router as events_router
from services.api.contacts import router as contacts_router
from services.api.housekeeping import Housekeeper
from services.api.late import LateDecisions
from services.api.metrics import ApiMetrics
from services.api.routes import router as queue_router
from services.api.rules_routes import rules_router
from services.api.sla_scheduler import SlaScheduler
from services.api.writer import Group, Load, ProjectionWriter, Work, writer_sessions
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
from shared.db import (
    UnfitDatabaseError,
    create_engine,
    create_sync_engine,
    ping,
    prepare,
    read_engine,
    session_factory,
    transaction,
)
from shared.events import (
    AttachmentCopied,
    ContactProfile,
    ConversationChanged,
    DeadLetter,
    InboundMessage,
    MessageUpdate,
    OutboundRequest,
    OutboundResult,
    RoutedMessage,
    SlaEvent,
    StatusEvent,
)
from shared.ops import service_registry
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings
from shared.tasks import stop_task

STAGE = "api"
logger = logging.getLogger("dmdesk.api")
EventT = TypeVar("EventT", bound=BaseModel)
Projection = Callable[[Session, EventT, ApiMetrics], object]


@dataclass(frozen=True)
class Projecting(Generic[EventT]):
    """How the api projects one kind of event: its type, its projection, and what loads
    a pull's rows for it with a few multi-row statements (see the writer)."""

    event_type: type[EventT]
    apply: Projection[EventT]
    prefetch: Callable[[Session, list[EventT]], object] | None = None


def _loading(loads: list[tuple[Projecting[Any], list[Any]]]) -> list[Load]:
    """What a pull's projections need loaded, kind by kind in the order the consumer lists
    them (a reply's request before its result)."""
    return [Load(kind.prefetch, events) for kind, events in loads if kind.prefetch and events]


@dataclass
class Api:
    """The api's moving parts, shared by its handlers, routes and background tasks."""

    settings: Settings
    metrics: ApiMetrics
    sessions: async_sessionmaker[AsyncSession]
    scheduler: SlaScheduler
    housekeeper: Housekeeper
    changes: ChangeFeed
    writer: ProjectionWriter
    bus: EventBus
    batches: list[BatchConsumer] = field(default_factory=list)

    def project(
        self, consumer: streams.Consumer, *kinds: Projecting[Any], follows: bool = False
    ) -> None:
        """Project ``consumer``'s events, a pull at a time (:class:`BatchConsumer`).

        ``kinds`` is one per subject the consumer reads, in its order (a consumer of
        several subjects gets them in stream order, mixed in its pulls). Each message of
        a pull is validated on its own; the pull's projections go to the writer in one
        call, which commits them with whatever else is waiting (group commit). Each
        message is acked once committed, or settled on its own (redelivered, or
        dead-lettered) when it fails. ``follows``: the events are about messages other
        events bring (receipts, profiles), so in a group their pull is applied after
        the others.
        """
        if len(kinds) != len(consumer.subjects):
            raise ValueError(f"{consumer.durable}: one projection per subject it reads")
        by_subject = dict(zip(consumer.subjects, kinds, strict=True))
        counters = {
            kind.event_type: (
                self.metrics.projected.labels(kind.event_type.__name__),
                self.metrics.projection_failures.labels(kind.event_type.__name__),
            )
            for kind in kinds
        }

        def kind_of(subject: str) -> Projecting[Any]:
            for pattern, kind in by_subject.items():
                if streams.subject_matches(pattern, subject):
                    return kind
            raise ValueError(f"{consumer.durable} reads no subject {subject}")

        def bind(kind: Projecting[EventT], event: EventT) -> Work:
            return lambda session: kind.apply(session, event, self.metrics)

        async def handle(messages: list[Msg]) -> None:
            outcomes: list[Exception | None] = [None] * len(messages)
            kinds_of = [kind_of(msg.subject) for msg in messages]
            works: list[Work] = []
            pulled: dict[Projecting[Any], list[Any]] = {kind: [] for kind in kinds}
            valid: list[int] = []
            for index, (msg, kind) in enumerate(zip(messages, kinds_of, strict=True)):
                try:
                    event = kind.event_type.model_validate_json(msg.data)
                except ValidationError as error:
                    outcomes[index] = error
                    continue
                pulled[kind].append(event)
                works.append(bind(kind, event))
                valid.append(index)
            loads = _loading(list(pulled.items()))
            try:
                applied = await self.writer.apply_all(works, loads, order=int(follows))
                for index, outcome in zip(valid, applied, strict=True):
                    outcomes[index] = outcome
            finally:  # cancelled (shutdown): what the writer did not answer is left unacked
                for msg, kind, outcome in zip(messages, kinds_of, outcomes, strict=True):
                    if outcome is not None:
                        counters[kind.event_type][1].inc()
                        await settle_failure(msg, outcome, stage=STAGE, bus=self.bus)
            for msg, kind, outcome in zip(messages, kinds_of, outcomes, strict=True):
                if outcome is None:
                    await msg.ack()
                    counters[kind.event_type][0].inc()

        self.batches.append(
            BatchConsumer(
                consumer,
                self.settings,
                handle,
                schema={subject: kind.event_type for subject, kind in by_subject.items()},
                title="project " + ", ".join(kind.event_type.__name__ for kind in kinds),
            )
        )

    def record_dead_letters(self) -> None:
        """Record dead letters through the async engine, one transaction each.

        Not through the writer: a dead letter is often there because the writer's path
        failed, and recording it must not fail the same way. One that cannot be recorded
        is never dead-lettered again (``settle_failure``): it stays in the stream, and
        ``dmdesk_projection_failures_total{event="DeadLetter"}`` says so.
        """
        recorded = self.metrics.projected.labels(DeadLetter.__name__)
        failed = self.metrics.projection_failures.labels(DeadLetter.__name__)

        async def record(msg: Msg) -> None:
            letter = DeadLetter.model_validate_json(msg.data)
            async with transaction(self.sessions) as session:
                await session.run_sync(projector.project_dead_letter, letter, self.metrics)

        async def handle(messages: list[Msg]) -> None:
            for msg in messages:
                try:
                    await record(msg)
                except Exception as error:  # settled alone: redelivered, never dead-lettered
                    failed.inc()
                    await settle_failure(msg, error, stage=STAGE, bus=self.bus)
                else:
                    await msg.ack()
                    recorded.inc()

        self.batches.append(
            BatchConsumer(
                streams.API_DEAD_LETTER,
                self.settings,
                handle,
                schema=DeadLetter,
                title="record DeadLetter",
            )
        )


def _wire(
    settings: Settings,
    bus: EventBus,
    router: NatsRouter,
    metrics: ApiMetrics,
    sessions: async_sessionmaker[AsyncSession],
    read_sessions: async_sessionmaker[AsyncSession],
    writer_sessions: sessionmaker[Session],
) -> Api:
    # Declared for the AsyncAPI document; published through the EventBus.
    event_publisher(
        router,
        streams.OUTBOUND_REQUESTED,
        OutboundRequest,
        "An agent's reply to send.",
        title=f"{streams.OUTBOUND_REQUESTED} (agent replies)",
    )
    event_publisher(router, streams.SLA_BREACHED, SlaEvent, "An SLA target was breached.")
    event_publisher(
        router, streams.SLA_AT_RISK, SlaEvent, "An SLA target is close to its deadline."
    )
    event_publisher(
        router,
        streams.CONVERSATION_CHANGED,
        ConversationChanged,
        "A conversation's state after every change (GET /v1/events streams them).",
    )

    async def publish_sla(event: SlaEvent) -> None:
        await bus.publish(streams.SLA_EVENT, event)

    async def send_outbound(request: OutboundRequest) -> None:
        await bus.publish(streams.OUTBOUND_REQUESTED_EVENT, request)

    changes = ChangeFeed(read_sessions, bus, metrics.conversation_changes)
    scheduler = SlaScheduler(sessions, publish_sla, metrics)
    housekeeper = Housekeeper(sessions, settings, send_outbound, metrics, changes.publish)

    async def committed(group: Group) -> None:
        await changes.publish_changes(group.changed)
        if group.earliest_deadline is not None:
            scheduler.deadline_changed(group.earliest_deadline)
        if group.changed:
            housekeeper.poke()

    return Api(
        settings=settings,
        metrics=metrics,
        sessions=sessions,
        scheduler=scheduler,
        housekeeper=housekeeper,
        changes=changes,
        writer=ProjectionWriter(writer_sessions, committed),
        bus=bus,
    )


def build(settings: Settings) -> ServiceSpec:
    """Wire the api's database, projections, SLA scheduler, routes and metrics."""
    registry = service_registry()
    metrics = ApiMetrics(registry)
    engine = create_engine(settings.sqlalchemy_url)
    sessions = session_factory(engine)
    reader = read_engine(settings.sqlalchemy_url, engine)
    read_sessions = session_factory(reader)
    writer_engine = create_sync_engine(settings.sqlalchemy_url)
    group_sessions = writer_sessions(writer_engine)
    broker = make_broker(settings, STAGE)
    router = stage_router(STAGE)
    bus = EventBus(broker, settings, PublishMetrics.register(registry, STAGE))
    api = _wire(settings, bus, router, metrics, sessions, read_sessions, group_sessions)
    scheduler, housekeeper = api.scheduler, api.housekeeper

    api.project(
        streams.API_ROUTED,
        Projecting(RoutedMessage, projector.project_routed, projector.prefetch_routed),
        Projecting(OutboundRequest, projector.project_outbound_requested),
        Projecting(OutboundResult, projector.project_outbound_result, projector.prefetch_results),
    )
    api.project(
        streams.API_ECHO, Projecting(InboundMessage, projector.project_inbound, projector.prefetch)
    )
    api.project(streams.API_STATUS, Projecting(StatusEvent, projector.project_status), follows=True)
    api.project(
        streams.API_UPDATE, Projecting(MessageUpdate, projector.project_update), follows=True
    )
    api.record_dead_letters()
    api.project(
        streams.API_CONTACT_PROFILE,
        Projecting(ContactProfile, projector.project_contact_profile),
        follows=True,
    )
    api.project(
        streams.API_ATTACHMENT,
        Projecting(AttachmentCopied, projector.project_attachment),
        follows=True,
    )
    broker.include_router(router)

    background: list[asyncio.Task[None]] = []

    async def start() -> None:
        try:
            await prepare(engine)
        except UnfitDatabaseError as unfit:
            logger.critical("database unfit; the api does not start", extra={"reason": str(unfit)})
            raise
        background.append(asyncio.create_task(scheduler.run(), name="sla-scheduler"))
        background.append(
            asyncio.create_task(metrics.keep_gauges_fresh(read_sessions), name="queue-gauges")
        )
        background.append(asyncio.create_task(housekeeper.run(), name="housekeeping"))
        late = LateDecisions(
            lambda: broker.connection.jetstream(),  # noqa: PLW0108  (connected later)
            api.writer,
            settings,
            metrics,
        )
        background.append(asyncio.create_task(late.run(), name="late-decisions"))

    async def stop() -> None:
        await api.writer.stop()
        for task in background:
            await stop_task(task)
        await engine.dispose()
        await reader.dispose()
        writer_engine.dispose()

    async def database_ready() -> None:
        await ping(engine)

    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        batch_consumers=tuple(api.batches),
        retired=streams.RETIRED_API_DURABLES,
        routers=(
            queue_router,
            actions_router,
            admin_router,
            events_router,
            contacts_router,
            attachments_router,
            # A lambda: the connection exists only once the broker has connected.
            rules_router(lambda: broker.connection, settings),
        ),
        checks={"database": database_ready},
        on_startup=(start,),
        on_shutdown=(stop,),
        title="dmdesk API",
        description="The agent queue, conversations, SLA figures and administration.",
        state={
            "sessions": sessions,
            "read_sessions": read_sessions,
            "settings": settings,
            "metrics": metrics,
            "bus": bus,
            "scheduler": scheduler,
            "housekeeper": housekeeper,
            "changes": api.changes,
            "broker": broker,
            "limits": ApiLimits(settings, metrics.rate_limited),
        },
    )


def main() -> None:
    """Run the api service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.api_port)
