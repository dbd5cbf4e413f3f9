"""The api service: projects every ``dm.*`` event into the database and serves the REST API."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import projector
from services.api.actions import router as actions_router
from services.api.admin import router as admin_router
from services.api.housekeeping import Housekeeper
from services.api.metrics import ApiMetrics
from services.api.routes import router as queue_router
from services.api.sla_scheduler import SlaScheduler
from shared import streams
from shared.bus import durable_subscriber, event_publisher, make_broker, publish_event, stage_router
from shared.db import create_engine, migrate, ping, session_factory, transaction
from shared.events import (
    BotReply,
    ClassifiedMessage,
    DeadLetter,
    Handoff,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    SlaEvent,
    SlaEventKind,
    StatusEvent,
)
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings

STAGE = "api"
EventT = TypeVar("EventT", bound=BaseModel)
Projection = Callable[[AsyncSession, EventT, ApiMetrics], Awaitable[object]]


def build(settings: Settings) -> ServiceSpec:
    """Wire the api's database, projections, SLA scheduler, routes and metrics."""
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    engine = create_engine(settings.sqlalchemy_url)
    sessions = session_factory(engine)
    broker = make_broker(settings, STAGE, registry)
    router = stage_router(STAGE, settings)
    outbound_out = event_publisher(
        router,
        streams.OUTBOUND_REQUESTED,
        OutboundRequest,
        "An agent's reply to send.",
        title=f"{streams.OUTBOUND_REQUESTED} (agent replies)",
    )
    sla_out = {
        SlaEventKind.BREACHED: event_publisher(
            router, streams.SLA_BREACHED, SlaEvent, "An SLA target was breached."
        ),
        SlaEventKind.AT_RISK: event_publisher(
            router, streams.SLA_AT_RISK, SlaEvent, "An SLA target is close to its deadline."
        ),
    }

    async def publish_sla(event: SlaEvent) -> None:
        await publish_event(
            sla_out[event.kind],
            event,
            msg_id=f"sla:{event.kind.value}:{event.clock_id}",
            settings=settings,
        )

    scheduler = SlaScheduler(sessions, publish_sla, metrics)

    async def send_outbound(request: OutboundRequest) -> None:
        await publish_event(outbound_out, request, msg_id=request.request_id, settings=settings)

    housekeeper = Housekeeper(sessions, settings, send_outbound, metrics)

    def project(
        consumer: streams.Consumer, event_type: type[EventT], apply: Projection[EventT]
    ) -> None:
        """Subscribe ``apply`` to ``consumer``, one transaction per event.

        faststream validates the body against the handler's annotation, so the
        generic handler is given the concrete event type.
        """
        name = event_type.__name__

        async def handle(event: BaseModel) -> None:
            async with transaction(sessions) as session:
                await apply(session, event_type.model_validate(event), metrics)
            metrics.projected.labels(name).inc()
            scheduler.deadline_changed()
            housekeeper.poke()

        handle.__annotations__["event"] = event_type
        handle.__name__ = f"project_{name}"
        handle.__doc__ = f"Write {name} events into the queue database."
        durable_subscriber(router, consumer, settings, title=f"project {name}")(handle)

    project(streams.API_INBOUND, InboundMessage, projector.project_inbound)
    project(streams.API_STATUS, StatusEvent, projector.project_status)
    project(streams.API_CLASSIFIED, ClassifiedMessage, projector.project_classified)
    project(streams.API_HANDOFF, Handoff, projector.project_handoff)
    project(streams.API_BOT_REPLY, BotReply, projector.project_bot_reply)
    project(streams.API_OUTBOUND_REQUESTED, OutboundRequest, projector.project_outbound_requested)
    project(streams.API_OUTBOUND_RESULT, OutboundResult, projector.project_outbound_result)
    project(streams.API_DEAD_LETTER, DeadLetter, projector.project_dead_letter)
    broker.include_router(router)

    background: list[asyncio.Task[None]] = []

    async def start() -> None:
        await migrate(engine)
        background.append(asyncio.create_task(scheduler.run(), name="sla-scheduler"))
        background.append(
            asyncio.create_task(metrics.keep_gauges_fresh(sessions), name="queue-gauges")
        )
        background.append(asyncio.create_task(housekeeper.run(), name="housekeeping"))

    async def stop() -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await engine.dispose()

    async def database_ready() -> None:
        await ping(engine)

    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        consumers=(
            streams.API_INBOUND,
            streams.API_STATUS,
            streams.API_CLASSIFIED,
            streams.API_HANDOFF,
            streams.API_BOT_REPLY,
            streams.API_OUTBOUND_REQUESTED,
            streams.API_OUTBOUND_RESULT,
            streams.API_DEAD_LETTER,
        ),
        routers=(queue_router, actions_router, admin_router),
        checks={"database": database_ready},
        on_startup=(start,),
        on_shutdown=(stop,),
        title="dmdesk API",
        description="The agent queue, conversations, SLA figures and administration.",
        state={
            "sessions": sessions,
            "settings": settings,
            "metrics": metrics,
            "outbound": outbound_out,
            "scheduler": scheduler,
            "housekeeper": housekeeper,
            "broker": broker,
        },
    )


def main() -> None:
    """Run the api service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.api_port)
