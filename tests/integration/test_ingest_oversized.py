"""Bodies whose bus message would pass NATS' max_payload never cut ingest off from NATS."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from services.ingest.app import build
from services.ingest.meta import sign
from shared.events import InboundMessage
from shared.service import service_app
from shared.settings import Settings
from tests.integration.test_ingest_nats import APP_SECRET, Running, running_ingest, stored

ONE_MIB = 1_048_576
PAGE = "1234567890"


def messenger_body(event: dict[str, Any]) -> dict[str, Any]:
    envelope = {"sender": {"id": "psid-1"}, "recipient": {"id": PAGE}, "timestamp": 1_700_000_000}
    return {"object": "page", "entry": [{"id": PAGE, "time": 1, "messaging": [envelope | event]}]}


def padded(document: Callable[[str], dict[str, Any]], target: int) -> bytes:
    """``document(padding)`` encoded, with padding so the body is just under ``target`` bytes."""
    small = json.dumps(document("")).encode()
    return json.dumps(document("x" * (target - len(small) - 64))).encode()


def unknown_kind(padding: str) -> dict[str, Any]:
    return messenger_body({"mystery_event": {"blob": padding}})


def large_attachment(padding: str) -> dict[str, Any]:
    attachment = {"type": "file", "payload": {"url": "https://example.test/f", "blob": padding}}
    return messenger_body({"message": {"mid": "m_big", "attachments": [attachment]}})


def generic_large(padding: str) -> dict[str, Any]:
    return {
        "id": "g" * 512,
        "contact": {"id": "ana"},
        "attachments": [{"type": "file", "payload": {"blob": padding}}],
    }


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Running]:
    runs = running_ingest(settings)
    try:
        yield await anext(runs)
    finally:
        await runs.aclose()


async def post_signed(ingest: Running, raw: bytes) -> Any:
    return await ingest.client.post(
        "/webhooks/messenger",
        content=raw,
        headers={"X-Hub-Signature-256": sign(raw, APP_SECRET), "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("document", [unknown_kind, large_attachment])
@pytest.mark.parametrize("short_of_the_limit", [64, 300])
async def test_oversized_webhook_event_is_refused_alone_and_ingest_stays_connected(
    settings_factory: Callable[..., Settings],
    document: Callable[[str], dict[str, Any]],
    short_of_the_limit: int,
) -> None:
    settings = settings_factory(meta_app_secret=APP_SECRET, publish_timeout_seconds=2)
    async with serving(settings) as ingest:
        raw = padded(document, ONE_MIB - short_of_the_limit)
        assert len(raw) < settings.ingest_max_body_bytes
        response = await post_signed(ingest, raw)
        assert response.status_code == 200, response.text
        await assert_still_serving(ingest)
        normal = json.dumps(
            messenger_body({"message": {"mid": "m_normal", "text": "hello"}})
        ).encode()
        assert (await post_signed(ingest, normal)).status_code == 200
    messages = await stored(settings.nats_url, settings.stream_name)
    refused = [payload for subject, _, payload in messages if subject.startswith("dm.raw.")]
    assert len(refused) == 1
    assert refused[0]["body"] == {}
    assert "too large" in refused[0]["reason"]
    inbound = [InboundMessage.model_validate(p) for s, _, p in messages if "inbound" in s]
    assert [message.mid for message in inbound] == ["m_normal"]


@pytest.mark.parametrize("short_of_the_limit", [64, 1000])
async def test_oversized_generic_message_is_413_and_ingest_stays_connected(
    settings_factory: Callable[..., Settings], short_of_the_limit: int
) -> None:
    settings = settings_factory(ingest_open=True, publish_timeout_seconds=2)
    async with serving(settings) as ingest:
        raw = padded(generic_large, ONE_MIB - short_of_the_limit)
        response = await ingest.client.post(
            "/v1/messages", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert response.json()["reason"] == "event_too_large"
        await assert_still_serving(ingest)
        ok = await ingest.client.post(
            "/v1/messages", json={"id": "g-ok", "contact": {"id": "ana"}, "text": "hello"}
        )
        assert ok.status_code == 202, ok.text
    messages = await stored(settings.nats_url, settings.stream_name)
    assert [payload["mid"] for _, _, payload in messages] == ["g-ok"]


async def test_numbers_that_grow_when_re_encoded_are_not_a_bus_outage(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(meta_app_secret=APP_SECRET, publish_timeout_seconds=2)
    numbers = "[" + ",".join(["1E9"] * 200_000) + "]"  # 1000000000.0 once re-encoded
    raw = json.dumps(unknown_kind("")).replace('""', numbers)
    async with serving(settings) as ingest:
        assert len(raw) < settings.ingest_max_body_bytes
        response = await post_signed(ingest, raw.encode())
        assert response.status_code == 200, response.text
        await assert_still_serving(ingest)


async def assert_still_serving(ingest: Running) -> None:
    await asyncio.sleep(0.5)  # the server's -ERR, if any, closes the connection meanwhile
    assert (await ingest.client.get("/readyz")).status_code == 200
    assert (await ingest.client.get("/healthz")).status_code == 200


async def test_a_connection_the_server_closed_fails_healthz_and_readyz(
    settings_factory: Callable[..., Settings],
) -> None:
    spec = build(settings_factory())
    app = service_app(spec)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with app.router.lifespan_context(app), client:
        assert (await client.get("/healthz")).status_code == 200
        connection = spec.broker.connection
        # nats-py checks the payload alone; the server counts the headers too and closes.
        payload = b"x" * (connection.max_payload - 10)
        await connection.publish("dm.test.oversized", payload, headers={"h": "v" * 100})
        for _ in range(50):
            if connection.is_closed:
                break
            await asyncio.sleep(0.1)
        health = await client.get("/healthz")
        assert health.status_code == 503
        assert "closed" in health.json()["status"]
        assert (await client.get("/readyz")).status_code == 503
