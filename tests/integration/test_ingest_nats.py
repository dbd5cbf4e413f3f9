"""Meta webhooks into a real JetStream: subjects, dedupe ids, retries and a NATS outage."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI

from dmdesk.natsserver import NatsServer, free_port
from services.ingest.app import build
from services.ingest.meta import sign
from shared.events import InboundMessage
from shared.service import service_app
from shared.settings import Settings
from shared.streams import MSG_ID_HEADER

APP_SECRET = "integration-app-secret"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "meta"
MID = "m_AGrHvO2rU5NQyPB4Y3B5bMz1aBz3jnZ2Dw8Vfhn0ABcdEfGhIjKlMnOpQrStUvWxYz0123456789"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


async def post(client: httpx.AsyncClient, channel: str, raw: bytes) -> httpx.Response:
    return await client.post(
        f"/webhooks/{channel}",
        content=raw,
        headers={"X-Hub-Signature-256": sign(raw, APP_SECRET), "Content-Type": "application/json"},
    )


async def stored(url: str, stream: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every message in ``stream``: (subject, Nats-Msg-Id, payload)."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        found = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, sequence)
            headers = message.headers or {}
            found.append((message.subject, headers[MSG_ID_HEADER], json.loads(message.data or b"")))
        return found
    finally:
        await client.close()


class Running:
    """An ingest app (lifespan started) and an HTTP client on it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: FastAPI = service_app(build(settings))
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://ingest.test", timeout=60
        )


async def running_ingest(settings: Settings) -> AsyncIterator[Running]:
    running = Running(settings)
    async with running.app.router.lifespan_context(running.app), running.client:
        yield running


@pytest.fixture
async def ingest(settings_factory: Callable[..., Settings]) -> AsyncIterator[Running]:
    settings = settings_factory(meta_app_secret=APP_SECRET, publish_timeout_seconds=2)
    async for running in running_ingest(settings):
        yield running


async def test_signed_webhook_events_land_on_their_subjects_with_dedupe_ids(
    ingest: Running,
) -> None:
    batch = await post(ingest.client, "messenger", fixture_bytes("messenger_batch"))
    assert batch.status_code == 200, batch.text
    assert (
        await post(ingest.client, "messenger", fixture_bytes("messenger_reaction_react"))
    ).status_code == 200
    assert (
        await post(ingest.client, "whatsapp", fixture_bytes("whatsapp_status_failed"))
    ).status_code == 200
    assert (
        await post(ingest.client, "instagram", fixture_bytes("instagram_comments_unknown"))
    ).status_code == 200

    messages = await stored(ingest.settings.nats_url, ingest.settings.stream_name)
    # Conversations are published concurrently: order holds within each, not across.
    assert sorted(subject for subject, _, _ in messages) == [
        "dm.inbound.messenger",
        "dm.inbound.messenger",
        "dm.inbound.messenger",
        "dm.raw.instagram",
        "dm.status.messenger",
        "dm.status.whatsapp",
        "dm.update.messenger",
    ]
    ids = {msg_id for _, msg_id, _ in messages}
    assert f"messenger:{MID}b1" in ids
    assert any(i.startswith("messenger:reaction:") for i in ids)
    assert (
        "whatsapp:status:wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjRBQjk0QjM5QTgwRjFDMjlEMQA=:failed"
        in ids
    )
    inbound = [
        InboundMessage.model_validate(p) for s, _, p in messages if s == "dm.inbound.messenger"
    ]
    # One person's two DMs keep their platform order within the conversation.
    first_contact = [m.text for m in inbound if m.contact.platform_id == "6243177389021456"]
    assert first_contact == ["first", "second"]
    assert all(m.is_request for m in inbound)


async def test_retried_identical_body_is_stored_once(ingest: Running) -> None:
    raw = fixture_bytes("messenger_batch")
    first = await post(ingest.client, "messenger", raw)
    again = await post(ingest.client, "messenger", raw)
    assert first.json() == {"received": 4, "duplicates": 0}
    assert again.json() == {"received": 4, "duplicates": 4}
    assert len(await stored(ingest.settings.nats_url, ingest.settings.stream_name)) == 4


async def test_echo_makes_later_dms_from_the_contact_ordinary(ingest: Running) -> None:
    await post(ingest.client, "messenger", fixture_bytes("messenger_echo_text"))
    await post(ingest.client, "messenger", fixture_bytes("messenger_text"))
    messages = await stored(ingest.settings.nats_url, ingest.settings.stream_name)
    # The echo goes to a subject of its own, with the same dedupe id as any inbound message.
    assert [subject for subject, _, _ in messages] == ["dm.echo.messenger", "dm.inbound.messenger"]
    echo, dm = (InboundMessage.model_validate(p) for _, _, p in messages)
    assert echo.is_echo
    assert messages[0][1] == f"messenger:{echo.mid}"
    assert not dm.is_request


async def test_unsigned_webhook_publishes_nothing(ingest: Running) -> None:
    response = await ingest.client.post(
        "/webhooks/messenger", content=fixture_bytes("messenger_text")
    )
    assert response.status_code == 401
    client = await nats.connect(ingest.settings.nats_url)
    try:
        info = await client.jetstream().stream_info(ingest.settings.stream_name)
        assert info.state.messages == 0
    finally:
        await client.close()


@pytest.mark.slow
async def test_nats_outage_is_503_and_the_retry_stores_exactly_one_copy(
    tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    port = free_port()
    server = NatsServer(tmp_path / "nats", port=port)
    server.start()
    settings = settings_factory(
        nats_url=server.url, meta_app_secret=APP_SECRET, publish_timeout_seconds=0.5
    )
    raw = fixture_bytes("messenger_batch")
    try:
        async for ingest in running_ingest(settings):
            server.stop()
            down = await post(ingest.client, "messenger", raw)
            assert down.status_code == 503, down.text
            assert down.json()["reason"] == "bus_unavailable"

            server.start()
            for _ in range(100):
                if (await ingest.client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            retried = await post(ingest.client, "messenger", raw)
            assert retried.status_code == 200, retried.text
            again = await post(ingest.client, "messenger", raw)
            assert again.json()["duplicates"] == 4
    finally:
        server.stop()
    server.start()
    try:
        messages = await stored(server.url, settings.stream_name)
    finally:
        server.stop()
    ids = [msg_id for _, msg_id, _ in messages]
    assert len(ids) == len(set(ids)) == 4
