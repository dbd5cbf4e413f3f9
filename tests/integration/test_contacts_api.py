"""GET/PATCH /v1/contacts over a real database (SQLite and PostgreSQL)."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import Counter

from services.api import projector
from services.api.auth import ApiLimits, create_key
from services.api.contacts import router
from shared.db import create_engine, migrate, session_factory, transaction
from shared.events import (
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    ContactProfile,
    ConversationRef,
    InboundMessage,
    Priority,
    ProfileSource,
)
from shared.models import Scope
from shared.settings import Settings

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def classified(channel: Channel, contact: Contact, mid: str) -> ClassifiedMessage:
    return ClassifiedMessage(
        message=InboundMessage(
            mid=mid,
            channel=channel,
            account_id="acct",
            contact=contact,
            text="hi",
            platform_ts=T0,
        ),
        classification=Classification(
            category=Category.INQUIRY, confidence=1, priority=Priority.NORMAL, model_version="t"
        ),
    )


class Notified:
    """Stands for the SLA scheduler and the change feed: what the api told them."""

    def __init__(self) -> None:
        self.published: list[int] = []
        self.deadlines = 0

    def deadline_changed(self) -> None:
        self.deadlines += 1

    async def publish(self, conversation_ids: list[int]) -> None:
        self.published += conversation_ids


@pytest.fixture
async def keys(database_url: str) -> AsyncIterator[tuple[FastAPI, str, str]]:
    engine = create_engine(database_url)
    await migrate(engine)
    app = FastAPI()
    app.include_router(router)
    app.state.sessions = app.state.read_sessions = session_factory(engine)
    app.state.limits = ApiLimits(Settings(), Counter("rejected", "", ["reason"], registry=None))
    app.state.scheduler = app.state.changes = Notified()
    seeds = [
        classified(Channel.WHATSAPP, Contact(platform_id="34600111222", name="Ana Gómez"), "w1"),
        classified(Channel.INSTAGRAM, Contact(platform_id="igsid-9", tags=["press"]), "i1"),
        classified(Channel.MESSENGER, Contact(platform_id="psid-7", name="Bob Stone"), "f1"),
    ]
    for seed in seeds:
        async with transaction(app.state.sessions) as session:
            await session.run_sync(projector.project_classified, seed)
    profile = ContactProfile(
        conversation=ConversationRef(
            channel=Channel.INSTAGRAM, account_id="acct", contact_id="igsid-9"
        ),
        source=ProfileSource.GRAPH,
        name="Carla Reyes",
        username="carla.writes",
        followers=2_000,
    )
    async with transaction(app.state.sessions) as session:
        await session.run_sync(projector.project_contact_profile, profile)
        reader = await create_key(session, "reader", Scope.READ)
        agent = await create_key(session, "agent", Scope.AGENT)
    yield app, reader.secret, agent.secret
    await engine.dispose()


@pytest.fixture
async def client(keys: tuple[FastAPI, str, str]) -> AsyncIterator[httpx.AsyncClient]:
    app, reader, _ = keys
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"X-API-Key": reader},
    ) as http:
        yield http


async def names(client: httpx.AsyncClient, **params: object) -> list[str | None]:
    response = await client.get("/v1/contacts", params=params)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


async def test_contacts_are_found_by_name_username_phone_and_tag(
    client: httpx.AsyncClient,
) -> None:
    assert await names(client, q="gómez") == ["Ana Gómez"]
    assert await names(client, q="CARLA.W") == ["Carla Reyes"]
    assert await names(client, q="600111") == ["Ana Gómez"]
    assert await names(client, tag="press") == ["Carla Reyes"]
    assert await names(client, tag="pres") == []
    assert await names(client, channel="messenger") == ["Bob Stone"]
    assert await names(client, q="nobody") == []


async def test_cursor_pages_through_every_contact_once(client: httpx.AsyncClient) -> None:
    seen: list[str | None] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/contacts", params=params)).json()
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(name or "" for name in seen) == ["Ana Gómez", "Bob Stone", "Carla Reyes"]


async def test_a_contact_shows_profile_tags_and_conversations(client: httpx.AsyncClient) -> None:
    [item] = (await client.get("/v1/contacts", params={"q": "carla"})).json()["items"]
    detail = (await client.get(f"/v1/contacts/{item['id']}")).json()
    assert detail["username"] == "carla.writes"
    assert detail["followers"] == 2_000
    assert detail["tags"] == ["press"]
    assert detail["vip"] is False
    [conversation] = detail["conversations"]
    assert conversation["channel"] == "instagram"
    assert (await client.get("/v1/contacts/999999")).status_code == 404


async def test_agents_set_tags_vip_and_notes_and_a_vip_moves_up(
    client: httpx.AsyncClient, keys: tuple[FastAPI, str, str]
) -> None:
    _, _, agent = keys
    [item] = (await client.get("/v1/contacts", params={"q": "bob"})).json()["items"]
    url = f"/v1/contacts/{item['id']}"
    body = {"tags": ["wholesale", "wholesale"], "vip": True, "notes": "Prefers e-mail"}
    refused = await client.patch(url, json=body)
    assert refused.status_code == 403
    response = await client.patch(url, json=body, headers={"X-API-Key": agent})
    assert response.status_code == 200, response.text
    detail = response.json()
    assert (detail["tags"], detail["vip"], detail["notes"]) == (
        ["wholesale"],
        True,
        "Prefers e-mail",
    )
    [conversation] = detail["conversations"]
    assert conversation["priority"] == "high"
    assert conversation["priority_reason"] == "VIP contact -> high"
    assert keys[0].state.changes.published == [conversation["id"]]
    assert await names(client, vip=True) == ["Bob Stone"]


async def test_bad_patches_are_4xx(
    client: httpx.AsyncClient, keys: tuple[FastAPI, str, str]
) -> None:
    _, _, agent = keys
    headers = {"X-API-Key": agent}
    too_long = {"notes": "x" * 10_001}
    assert (await client.patch("/v1/contacts/1", json=too_long, headers=headers)).status_code == 422
    assert (
        await client.patch("/v1/contacts/999999", json={"vip": True}, headers=headers)
    ).status_code == 404


async def test_contacts_linked_across_channels_read_as_one_person(
    client: httpx.AsyncClient, keys: tuple[FastAPI, str, str]
) -> None:
    _, _, agent = keys
    headers = {"X-API-Key": agent}
    [ana] = (await client.get("/v1/contacts", params={"q": "ana"})).json()["items"]
    [bob] = (await client.get("/v1/contacts", params={"q": "bob"})).json()["items"]
    [carla] = (await client.get("/v1/contacts", params={"q": "carla"})).json()["items"]
    linked = await client.post(
        f"/v1/contacts/{ana['id']}/links", json={"contact_id": bob["id"]}, headers=headers
    )
    assert linked.status_code == 200, linked.text
    await client.post(
        f"/v1/contacts/{carla['id']}/links", json={"contact_id": bob["id"]}, headers=headers
    )
    detail = (await client.get(f"/v1/contacts/{ana['id']}")).json()
    assert sorted(c["name"] for c in detail["linked"]) == ["Bob Stone", "Carla Reyes"]
    assert sorted(c["channel"] for c in detail["conversations"]) == [
        "instagram",
        "messenger",
        "whatsapp",
    ]
    unlinked = await client.delete(f"/v1/contacts/{carla['id']}/links", headers=headers)
    assert unlinked.json()["linked"] == []
    detail = (await client.get(f"/v1/contacts/{bob['id']}")).json()
    assert [c["name"] for c in detail["linked"]] == ["Ana Gómez"]
    missing = await client.post(
        f"/v1/contacts/{ana['id']}/links", json={"contact_id": 999999}, headers=headers
    )
    assert missing.status_code == 404
    refused = await client.post(f"/v1/contacts/{ana['id']}/links", json={"contact_id": bob["id"]})
    assert refused.status_code == 403
