"""Health, readiness and metrics endpoints, the same on every service."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Response, status
from faststream.nats import NatsBroker
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from pydantic import BaseModel

from shared.settings import Settings

ReadinessCheck = Callable[[], Awaitable[None]]
LivenessCheck = Callable[[], str | None]
CHECK_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    """Liveness: the process answers and can recover by itself (``status`` says why not)."""

    status: str = "ok"
    service: str


def service_registry() -> CollectorRegistry:
    """A service's metrics registry, with its process's CPU time, memory and open files
    (``process_*``) and CPython's garbage collections (``python_gc_*``, ``python_info``):
    prometheus-client's own collectors, per replica on the dashboards."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def nats_closed(broker: NatsBroker) -> str | None:
    """Why the process cannot recover: its NATS connection is closed for good (never retried).

    nats-py closes the connection, without reconnecting, on an error the server sends
    (``maximum payload exceeded``...); a restart is the way back.
    """
    state = broker.config.broker_config.connection_state
    if state and state.connection.is_closed:
        return "NATS connection closed for good"
    return None


class Readiness(BaseModel):
    """Readiness: every dependency answered; ``checks`` names each with ``ok`` or the error."""

    ready: bool
    service: str
    checks: dict[str, str]


def nats_checks(broker: NatsBroker, settings: Settings) -> dict[str, ReadinessCheck]:
    """Checks that NATS is connected and the stream exists."""

    async def nats_connected() -> None:
        if (closed := nats_closed(broker)) is not None:
            raise ConnectionError(closed)
        if not await broker.ping(timeout=CHECK_TIMEOUT_SECONDS / 2):
            raise ConnectionError("not connected to NATS")

    async def stream_present() -> None:
        await broker.connection.jetstream().stream_info(settings.stream_name)

    return {"nats": nats_connected, "stream": stream_present}


def ops_router(
    service: str,
    registry: CollectorRegistry,
    checks: Mapping[str, ReadinessCheck],
    liveness: LivenessCheck = lambda: None,
) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics`` for one service."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Health}})
    async def healthz(response: Response) -> Health:
        """The process is alive and can recover by itself (503: restart it)."""
        failure = liveness()
        if failure is not None:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            return Health(status=failure, service=service)
        return Health(service=service)

    @router.get(
        "/readyz",
        responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Readiness}},
    )
    async def readyz(response: Response) -> Readiness:
        """Every dependency (NATS, the stream, the database) answers."""
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
            except Exception as exc:
                results[name] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                results[name] = "ok"
        ready = all(value == "ok" for value in results.values())
        if not ready:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Readiness(ready=ready, service=service, checks=results)

    @router.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus exposition of this service's metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
