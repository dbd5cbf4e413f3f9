"""Clients that go away mid-body, or never finish it, cost a connection for a bounded time."""

import asyncio
import logging
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ingest.metrics import IngestMetrics
from services.ingest.requests import MessageRequests
from services.ingest.routes import ingest_routers
from shared.settings import Settings
from tests.unit.ingest.conftest import FakeSink, MemoryContactStore

FIRST_CHUNK = b'{"id": "g-1", "contact": {"id": "ana"}, "text": "hel'


def app(**overrides: Any) -> FastAPI:
    settings = Settings(**({"ingest_open": True, "meta_app_secret": "s"} | overrides))
    application = FastAPI()
    metrics = IngestMetrics(CollectorRegistry())
    for router in ingest_routers(
        settings, FakeSink(), MessageRequests(MemoryContactStore()), metrics
    ):
        application.include_router(router)
    return application


async def call(application: FastAPI, path: str, after_first_chunk: str) -> list[dict[str, Any]]:
    """POST ``path`` sending one chunk, then disconnecting or never sending more."""
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": FIRST_CHUNK, "more_body": True}]

    async def receive() -> dict[str, Any]:
        if chunks:
            return chunks.pop()
        if after_first_chunk == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # a body that never finishes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"ingest.test")],
        "client": ("127.0.0.1", 5000),
        "server": ("ingest.test", 80),
    }
    await application(scope, receive, send)
    return sent


@pytest.mark.parametrize("path", ["/v1/messages", "/webhooks/messenger"])
async def test_a_client_gone_mid_body_is_not_an_error(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        await call(app(), path, "disconnect")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", ["/v1/messages", "/webhooks/messenger"])
async def test_a_body_that_never_finishes_is_408_after_the_timeout(path: str) -> None:
    sent = await asyncio.wait_for(
        call(app(ingest_body_timeout_seconds=0.2), path, "hang"), timeout=10
    )
    assert sent[0]["status"] == 408
