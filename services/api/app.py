"""The api service: projects every ``dm.*`` event into the database and serves the queue."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import projector
from services.api.routes import router as queue_router
from shared import streams
from shared.bus import durable_subscriber, make_broker, stage_router
from shared.db import create_engine, migrate, ping, session_factory, transaction
from shared.events import (
    BotReply,
    ClassifiedMessage,
    DeadLetter,
    Handoff,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    StatusEvent,
)
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings

STAGE = "api"
EventT = TypeVar("EventT", bound=BaseModel)


def build(settings: Settings) -> ServiceSpec:
    """Wire the api's database, projections, routes and metrics."""
    registry = CollectorRegistry()
    projected_total = Counter(
        "dmdesk_projected_events_total",
        "Events written to the queue database, by event type.",
        ["event"],
        registry=registry,
    )
    dead_letters_total = Counter(
        "dmdesk_dead_letters_total",
        "Messages a stage gave up on, by stage.",
        ["stage"],
        registry=registry,
    )
    engine = create_engine(settings.sqlalchemy_url)
    sessions = session_factory(engine)
    broker = make_broker(settings, STAGE, registry)
    router = stage_router(STAGE, settings)

    def project(
        consumer: streams.Consumer,
        event_type: type[EventT],
        apply: Callable[[AsyncSession, EventT], Awaitable[object]],
    ) -> None:
        """Subscribe ``apply`` to ``consumer``, one transaction per event.

        faststream validates the body against the handler's annotation, so the
        generic handler is given the concrete event type.
        """
        name = event_type.__name__

        async def handle(event: BaseModel) -> None:
            async with transaction(sessions) as session:
                await apply(session, event_type.model_validate(event))
            projected_total.labels(name).inc()

        handle.__annotations__["event"] = event_type
        handle.__name__ = f"project_{name}"
        handle.__doc__ = f"Write {name} events into the queue database."
        durable_subscriber(router, consumer, settings, title=f"project {name}")(handle)

    project(streams.API_INBOUND, InboundMessage, projector.project_inbound)
    project(streams.API_STATUS, StatusEvent, projector.project_status)
    project(streams.API_CLASSIFIED, ClassifiedMessage, projector.project_classified)
    project(streams.API_HANDOFF, Handoff, projector.project_handoff)
    project(streams.API_BOT_REPLY, BotReply, _ignore)
    project(streams.API_OUTBOUND_REQUESTED, OutboundRequest, projector.project_outbound_requested)
    project(streams.API_OUTBOUND_RESULT, OutboundResult, projector.project_outbound_result)

    async def record_dead_letter(session: AsyncSession, letter: DeadLetter) -> None:
        await projector.project_dead_letter(session, letter)
        dead_letters_total.labels(letter.stage).inc()

    project(streams.API_DEAD_LETTER, DeadLetter, record_dead_letter)
    broker.include_router(router)

    async def start_database() -> None:
        await migrate(engine)

    async def stop_database() -> None:
        await engine.dispose()

    async def database_ready() -> None:
        await ping(engine)

    spec = ServiceSpec(
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
        routers=(queue_router,),
        checks={"database": database_ready},
        on_startup=(start_database,),
        on_shutdown=(stop_database,),
        title="dmdesk API",
        description="The agent queue, conversations and SLA figures.",
    )
    spec.state["sessions"] = sessions
    return spec


async def _ignore(_session: AsyncSession, _event: BotReply) -> None:
    """Bot replies show up through their outbound request; nothing more to write yet."""


def main() -> None:
    """Run the api service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.api_port)
