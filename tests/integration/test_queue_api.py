"""GET /v1/queue and GET /v1/conversations/{id} over a real database."""

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import Counter

from services.api import projector
from services.api.auth import ApiLimits, create_key
from services.api.routes import router
from shared.db import create_engine, migrate, session_factory, transaction
from shared.events import (
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    InboundMessage,
    Priority,
)
from shared.models import Scope
from shared.settings import Settings

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def classified(contact: str, priority: Priority, minutes: int) -> ClassifiedMessage:
    return ClassifiedMessage(
        message=InboundMessage(
            mid=f"m-{contact}",
            channel=Channel.GENERIC,
            account_id="page",
            contact=Contact(platform_id=contact),
            text="hi",
            platform_ts=T0 + timedelta(minutes=minutes),
        ),
        classification=Classification(
            category=Category.INQUIRY, confidence=1, priority=priority, model_version="t"
        ),
    )


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    engine = create_engine(database_url)
    await migrate(engine)
    app = FastAPI()
    app.include_router(router)
    app.state.sessions = app.state.read_sessions = session_factory(engine)
    app.state.limits = ApiLimits(Settings(), Counter("rejected", "", ["reason"], registry=None))
    seeds = [
        classified("low-early", Priority.LOW, 0),
        classified("normal-late", Priority.NORMAL, 30),
        classified("urgent", Priority.URGENT, 50),
        classified("normal-early", Priority.NORMAL, 10),
        classified("high", Priority.HIGH, 40),
    ]
    for seed in seeds:
        async with transaction(app.state.sessions) as session:
            await session.run_sync(projector.project_classified, seed)
    async with transaction(app.state.sessions) as session:
        key = await create_key(session, "reader", Scope.READ)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"X-API-Key": key.secret},
    ) as http:
        yield http
    await engine.dispose()


async def test_queue_is_ordered_by_priority_then_deadline(client: httpx.AsyncClient) -> None:
    page = (await client.get("/v1/queue")).json()
    assert [item["contact"]["platform_id"] for item in page["items"]] == [
        "urgent",
        "high",
        "normal-early",
        "normal-late",
        "low-early",
    ]
    assert page["next_cursor"] is None


async def test_cursor_pages_through_the_queue_without_gaps_or_repeats(
    client: httpx.AsyncClient,
) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/queue", params=params)).json()
        seen += [item["contact"]["platform_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["urgent", "high", "normal-early", "normal-late", "low-early"]


async def test_bad_cursor_and_unknown_conversation_are_clear_errors(
    client: httpx.AsyncClient,
) -> None:
    bad = await client.get("/v1/queue", params={"cursor": "not-a-cursor"})
    assert (bad.status_code, bad.json()) == (400, {"detail": "invalid cursor"})
    missing = await client.get("/v1/conversations/999999")
    assert (missing.status_code, missing.json()) == (404, {"detail": "no such conversation"})
    limit = await client.get("/v1/queue", params={"limit": 0})
    assert limit.status_code == 422


async def test_conversation_shows_its_messages(client: httpx.AsyncClient) -> None:
    first = (await client.get("/v1/queue")).json()["items"][0]
    detail = (await client.get(f"/v1/conversations/{first['id']}")).json()
    assert [m["mid"] for m in detail["messages"]] == ["m-urgent"]
    assert detail["messages"][0]["classification"]["priority"] == "urgent"


def forged(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        forged('[1e999, "2026-11-28T09:00:00+00:00", 1]'),
        forged('[1, "2026-11-28T09:00:00+00:00", 1180591620717411303424]'),
        forged("[" * 5000 + "]" * 5000),
        forged('[1, "2026-11-28T09:00:00+00:00", 1.5]'),
        forged('[true, "2026-11-28T09:00:00+00:00", 1]'),
        forged('[1, "not a time", 1]'),
        forged('[1, "2026-11-28T09:00:00", 1]'),
        forged('[1, "9999-12-31T23:59:59-23:59", 1]'),
        forged('{"a": 1}'),
        base64.urlsafe_b64encode(b"\xff\xfe[1]").decode(),
        "x" * 10_000,
    ],
    ids=[
        "infinity",
        "huge-id",
        "deep",
        "float",
        "bool",
        "bad-time",
        "naive",
        "year-10000",
        "object",
        "not-utf8",
        "long",
    ],
)
async def test_forged_cursor_is_a_400_never_a_500(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/v1/queue", params={"cursor": cursor})
    assert response.status_code in {400, 422}
    assert response.json()["detail"]
