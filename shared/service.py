"""What a dmdesk service process is: a FastAPI app whose lifespan runs the broker.

Each service builds a :class:`ServiceSpec` and hands it to :func:`service_app`;
:func:`serve` runs it under uvicorn, whose SIGTERM handling lets the broker
finish in-flight messages (``graceful_timeout``) before the process exits.
"""

import asyncio
import contextlib
import gc
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from nats.js.errors import ServiceUnavailableError
from prometheus_client import CollectorRegistry

from shared.bus import BatchConsumer, PullMetrics, dependency_unavailable
from shared.lag import ConsumerLagCollector
from shared.logs import configure_logging
from shared.ops import ReadinessCheck, nats_checks, nats_closed, ops_router
from shared.settings import Settings
from shared.streams import Consumer, provision, retire
from shared.tasks import stop_task

logger = logging.getLogger("dmdesk.service")

Hook = Callable[[], Awaitable[None]]
STARTUP_PATIENCE_SECONDS = 60.0
MAX_STARTUP_DELAY_SECONDS = 5.0
CONNECTION_WATCH_SECONDS = 1.0
# Allocations between two collections of the youngest generation (CPython's default: 700).
YOUNG_GC_THRESHOLD = 10_000


@dataclass
class ServiceSpec:
    """Everything that makes one service, wired by :func:`service_app`."""

    name: str
    settings: Settings
    broker: NatsBroker
    registry: CollectorRegistry
    retired: Sequence[str] = ()  # durables of an earlier version, deleted once empty
    batch_consumers: Sequence[BatchConsumer] = ()
    routers: Sequence[APIRouter] = ()
    checks: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    on_startup: Sequence[Hook] = ()
    on_shutdown: Sequence[Hook] = ()
    title: str = ""
    description: str = ""
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def durables(self) -> tuple[Consumer, ...]:
        """Every durable consumer the service reads (each through a BatchConsumer)."""
        return tuple(batch.consumer for batch in self.batch_consumers)


def service_app(spec: ServiceSpec) -> FastAPI:
    """The ASGI app of one service: its routes plus health, readiness and metrics."""

    lag = consumer_lag(spec)
    pulls = PullMetrics.register(spec.registry, spec.name) if spec.batch_consumers else None

    async def connect_and_provision() -> None:
        await spec.broker.connect()
        js = spec.broker.connection.jetstream()
        await provision(js, spec.settings, *spec.durables)
        await retire(js, spec.settings, *spec.retired, successors=spec.durables)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for hook in spec.on_startup:
            await patiently(hook)
        await patiently(connect_and_provision)
        js = spec.broker.connection.jetstream()
        await spec.broker.start()
        for batch_consumer in spec.batch_consumers:
            batch_consumer.start(js, pulls)
        lag_task = asyncio.create_task(lag.keep_fresh(js)) if lag else None
        watchdog = asyncio.create_task(stop_when_connection_closed(spec, _app))
        if getattr(_app.state, "owns_process", False):
            freeze_startup_heap()
        logger.info(
            "service started",
            extra={
                "consumers": [c.durable for c in spec.durables],
                "gc_frozen_objects": gc.get_freeze_count(),
            },
        )
        try:
            yield
        finally:
            await stop_task(watchdog)
            await stop_task(lag_task)
            for batch_consumer in spec.batch_consumers:
                await batch_consumer.stop()
            # A connection closed for good has nothing left to drain.
            with contextlib.suppress(nats.errors.ConnectionClosedError):
                await spec.broker.stop()
            for hook in spec.on_shutdown:
                await hook()
            logger.info("service stopped")

    app = FastAPI(
        title=spec.title or f"dmdesk {spec.name}",
        description=spec.description,
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, refused_input)
    for key, value in spec.state.items():
        setattr(app.state, key, value)
    checks = {**nats_checks(spec.broker, spec.settings), **spec.checks}
    app.include_router(
        ops_router(spec.name, spec.registry, checks, liveness=lambda: nats_closed(spec.broker))
    )
    for router in spec.routers:
        app.include_router(router)
    return app


def freeze_startup_heap() -> None:
    """Leave what startup built out of every later garbage collection, and collect the
    young objects less often.

    CPython's full collection walks every object the process tracks, and a service
    tracks 120,000-210,000 after startup (modules, the model, the rules, the FAQ index).
    Measured under ``dmdesk bench`` (about a minute): the responder ran 25-28 full
    collections of up to 0.5-0.6 s (5-7 s in all, the GIL held: a stall for every DM in
    flight) and the api 12-13 of up to 0.5-0.7 s. Collected once, then frozen
    (``gc.freeze``), the startup objects are no longer walked (reference counting still
    frees any that is dropped; only a cycle among them would stay). The youngest
    generation's threshold (700 allocations by default) is raised to
    :data:`YOUNG_GC_THRESHOLD`: a DM's objects die before a collection sees them, so fewer
    are promoted to be walked again later. Done once startup is over, in a service's own
    process only (:func:`serve`): tests run services inside pytest's process.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


async def stop_when_connection_closed(spec: ServiceSpec, app: FastAPI) -> None:
    """Stop the server (see :func:`serve`) once the NATS connection is closed for good.

    Meanwhile ``/healthz`` answers 503, so an orchestrator restarts the service too.
    """
    while nats_closed(spec.broker) is None:  # noqa: ASYNC110 - nats-py has no event for it
        await asyncio.sleep(CONNECTION_WATCH_SECONDS)
    logger.error("NATS connection closed for good; stopping so that the service is restarted")
    app.state.connection_closed = True
    stop_server: Callable[[], None] | None = getattr(app.state, "stop_server", None)
    if stop_server is not None:
        stop_server()


async def refused_input(_request: Request, exc: Exception) -> JSONResponse:
    """A 422 that says which field and why, without echoing the input back.

    The input may be private text, and may not even be encodable (an unpaired
    surrogate): FastAPI's default answer echoes it and then fails with a 500.
    """
    assert isinstance(exc, RequestValidationError)
    errors = [
        {key: error[key] for key in ("type", "loc", "msg") if key in error}
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


async def patiently(step: Hook) -> None:
    """Run a start-up step, retrying while a dependency is not up yet.

    NATS answers "no responders" until JetStream has a leader (a cluster just
    started) and 503 while JetStream gets ready; the database refuses connections
    while it starts: a service that starts first waits for them, for up to
    ``STARTUP_PATIENCE_SECONDS``.
    """
    deadline = time.monotonic() + STARTUP_PATIENCE_SECONDS
    for attempt in itertools.count():
        try:
            await step()
        except Exception as exc:
            starting = dependency_unavailable(exc) or isinstance(exc, ServiceUnavailableError)
            if not starting or time.monotonic() > deadline:
                raise
            delay = min(MAX_STARTUP_DELAY_SECONDS, 0.25 * 2**attempt)
            logger.warning(
                "a dependency is not up yet; retrying start-up",
                extra={"error_type": type(exc).__name__, "delay_s": delay},
            )
            await asyncio.sleep(delay)
        else:
            return


def consumer_lag(spec: ServiceSpec) -> ConsumerLagCollector | None:
    """The consumer-lag collector of a service that reads durables, on its registry."""
    if not spec.durables:
        return None
    collector = ConsumerLagCollector(
        spec.settings.stream_name, [consumer.durable for consumer in spec.durables]
    )
    spec.registry.register(collector)
    return collector


def serve(app: FastAPI, service: str, settings: Settings, port: int) -> None:
    """Run ``app`` until SIGINT/SIGTERM, logging JSON.

    A service whose NATS connection closed for good stops and exits with status 1,
    so that the supervisor (``dmdesk up``, compose, Kubernetes) starts it again.
    """
    configure_logging(service, settings.log_level)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
    )
    server = uvicorn.Server(config)

    def stop_server() -> None:
        server.should_exit = True

    app.state.stop_server = stop_server
    app.state.owns_process = True  # its lifespan may tune the process (freeze_startup_heap)
    server.run()
    if getattr(app.state, "connection_closed", False):
        raise SystemExit(1)
