"""Ingest unit tests: the FastAPI app with a fake sink and an in-memory contact store."""

import asyncio
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ingest.meta import Normalised, sign
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import BusUnavailableError
from services.ingest.requests import MessageRequests
from services.ingest.routes import ingest_routers
from shared.events import Channel
from shared.settings import Settings

REPO = Path(__file__).parents[3]
OWN_FIXTURES = REPO / "tests" / "fixtures" / "meta"
SHARED_FIXTURES = REPO / ".." / "shared" / "fixtures" / "meta"
APP_SECRET = "unit-app-secret"
OTHER_APP_SECRET = "second-app-secret"
VERIFY_TOKEN = "unit-verify-token"
OBJECTS = {
    Channel.MESSENGER: "page",
    Channel.INSTAGRAM: "instagram",
    Channel.WHATSAPP: "whatsapp_business_account",
}


def fixture_channel(path: Path) -> Channel:
    """The channel a fixture file is for, from its name."""
    return Channel(path.name.split("_", 1)[0])


def load_body(path: Path) -> dict[str, Any]:
    """A fixture as a whole webhook body: single ``messaging`` events wrapped in a page body.

    Some public fixtures omit ``object`` (the tool passed only ``entry`` on); it is added.
    """
    document: dict[str, Any] = json.loads(path.read_text())
    channel = fixture_channel(path)
    if "entry" not in document:
        document = {
            "entry": [
                {
                    "id": document["recipient"]["id"],
                    "time": document.get("timestamp"),
                    "messaging": [document],
                }
            ]
        }
    return {"object": OBJECTS[channel], **document}


@dataclass
class FakeSink:
    """Records what would be stored; ``down`` makes it fail like an unreachable NATS."""

    stored: list[Normalised] = field(default_factory=list)
    down: bool = False
    seen: set[str] = field(default_factory=set)
    max_payload: int = 1_048_576

    def room(self) -> int:
        return self.max_payload

    async def store(self, events: Sequence[Normalised]) -> int:
        if self.down:
            raise BusUnavailableError("TimeoutError")
        duplicates = 0
        for event in events:
            duplicates += event.msg_id in self.seen
            self.seen.add(event.msg_id)
            self.stored.append(event)
        return duplicates


@dataclass
class MemoryContactStore:
    """A dict standing in for the NATS KV bucket."""

    states: dict[str, bytes] = field(default_factory=dict)

    async def get(self, key: str) -> bytes | None:
        return self.states.get(key)

    async def put(self, key: str, state: bytes) -> None:
        self.states[key] = state


class SyncClient:
    """An httpx client on the ASGI app, driven from synchronous tests (hypothesis)."""

    def __init__(self, app: FastAPI) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest.test"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@dataclass
class Ingest:
    """The ingest routes on a bare FastAPI app, and what they published."""

    client: SyncClient
    sink: FakeSink
    contacts: MemoryContactStore
    metrics: IngestMetrics
    registry: CollectorRegistry

    def post_webhook(
        self,
        channel: Channel,
        body: bytes | dict[str, Any],
        *,
        secret: str | None = APP_SECRET,
        signature: str | None = None,
    ) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        elif secret is not None:
            headers["X-Hub-Signature-256"] = sign(raw, secret)
        return self.client.post(f"/webhooks/{channel.value}", content=raw, headers=headers)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def make_ingest(**overrides: Any) -> Ingest:
    """A fresh unit-level ingest app with ``Settings`` overrides."""
    values: dict[str, Any] = {
        "meta_app_secret": APP_SECRET,
        "meta_app_secrets": {"second-app": OTHER_APP_SECRET},
        "meta_verify_token": VERIFY_TOKEN,
        "ingest_max_body_bytes": 64 * 1024,
    }
    settings = Settings(**(values | overrides))
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    sink = FakeSink()
    contacts = MemoryContactStore()
    app = FastAPI()
    for router in ingest_routers(settings, sink, MessageRequests(contacts), metrics):
        app.include_router(router)
    return Ingest(SyncClient(app), sink, contacts, metrics, registry)


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    """The ingest app with one extra Meta app configured."""
    app = make_ingest()
    yield app
    app.client.close()
