"""Agent actions through the api service in-process: real NATS, real database."""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import nats
import pytest
from fastapi import FastAPI

from services.api import projector
from services.api.app import build
from services.api.auth import create_key
from shared.db import transaction
from shared.events import (
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    InboundMessage,
    OutboundRequest,
    Priority,
    utcnow,
)
from shared.models import Scope
from shared.service import service_app
from shared.settings import Settings


class Api:
    def __init__(self, app: FastAPI, keys: dict[Scope, str]) -> None:
        self.app = app
        self.keys = keys

    def client(self, scope: Scope | None = Scope.ADMIN) -> httpx.AsyncClient:
        headers = {"X-API-Key": self.keys[scope]} if scope else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://api", headers=headers
        )

    async def seed(self, contact: str, priority: Priority = Priority.NORMAL) -> int:
        event = ClassifiedMessage(
            message=InboundMessage(
                mid=f"m-{contact}",
                channel=Channel.MESSENGER,
                account_id="page",
                contact=Contact(platform_id=contact, name=contact.title()),
                text="hello",
                platform_ts=utcnow(),
            ),
            classification=Classification(
                category=Category.INQUIRY, confidence=1, priority=priority, model_version="t"
            ),
        )
        async with transaction(self.app.state.sessions) as session:
            await session.run_sync(projector.project_classified, event)
        async with self.client() as client:
            items = (await client.get("/v1/queue", params={"limit": 200})).json()["items"]
        return next(i["id"] for i in items if i["contact"]["platform_id"] == contact)


@pytest.fixture
async def api(settings_factory: Callable[..., Settings], database_url: str) -> AsyncIterator[Api]:
    app = service_app(build(settings_factory(database_url=database_url)))
    async with app.router.lifespan_context(app):
        keys = {}
        async with transaction(app.state.sessions) as session:
            for scope in Scope:
                keys[scope] = (await create_key(session, scope.value, scope)).secret
        yield Api(app, keys)


async def test_every_endpoint_but_health_and_metrics_needs_a_key(api: Api) -> None:
    async with api.client(None) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/metrics")).status_code == 200
        missing = await anonymous.get("/v1/queue")
        assert missing.status_code == 401
        assert "missing API key" in missing.json()["detail"]
        wrong = await anonymous.get("/v1/queue", headers={"Authorization": "Bearer dmd_nope"})
        assert (wrong.status_code, wrong.json()["detail"]) == (401, "unknown or revoked API key")
    async with api.client(Scope.READ) as reader:
        assert (await reader.get("/v1/queue")).status_code == 200
        denied = await reader.post("/v1/queue/claim", json={"agent": "ana"})
        assert denied.status_code == 403
        assert "'agent' is needed" in denied.json()["detail"]


async def test_concurrent_claims_never_hand_out_a_conversation_twice(api: Api) -> None:
    for index in range(10):
        await api.seed(f"c{index}")
    async with api.client(Scope.AGENT) as client:
        for i in range(20):
            await client.put(f"/v1/agents/agent-{i}", json={"online": True})
        answers = await asyncio.gather(
            *(client.post("/v1/queue/claim", json={"agent": f"agent-{i}"}) for i in range(20))
        )
    won = [answer.json()["id"] for answer in answers if answer.status_code == 200]
    assert sorted(answer.status_code for answer in answers) == [200] * 10 + [204] * 10
    assert len(set(won)) == 10


async def test_claim_takes_the_most_urgent_first(api: Api) -> None:
    await api.seed("calm", Priority.LOW)
    urgent = await api.seed("fire", Priority.URGENT)
    async with api.client(Scope.AGENT) as client:
        await client.put("/v1/agents/ana", json={"online": True})
        claimed = await client.post("/v1/queue/claim", json={"agent": "ana"})
    assert (claimed.json()["id"], claimed.json()["assignee"]) == (urgent, "ana")


async def test_reply_publishes_an_outbound_request_once_per_idempotency_key(
    api: Api, settings_factory: Callable[..., Settings]
) -> None:
    conversation = await api.seed("ana")
    body = {"agent": "ben", "text": "Your parcel left today."}
    async with api.client(Scope.AGENT) as client:
        first = await client.post(
            f"/v1/conversations/{conversation}/reply", json=body, headers={"Idempotency-Key": "k1"}
        )
        again = await client.post(
            f"/v1/conversations/{conversation}/reply", json=body, headers={"Idempotency-Key": "k1"}
        )
        other = await client.post(
            f"/v1/conversations/{conversation}/reply",
            json=body | {"text": "different"},
            headers={"Idempotency-Key": "k1"},
        )
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert first.json()["private_info"] == []
    assert other.status_code == 409

    connection = await nats.connect(settings_factory().nats_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info("DMDESK")
        subscription = await js.pull_subscribe("dm.outbound.requested", stream="DMDESK")
        messages = await subscription.fetch(10, timeout=2)
    finally:
        await connection.close()
    requests = [OutboundRequest.model_validate_json(m.data) for m in messages]
    assert [r.request_id for r in requests] == [first.json()["request_id"]]
    assert requests[0].author == "agent"
    assert requests[0].conversation.contact_id == "ana"
    assert info.state.messages >= 1


async def test_reply_with_private_information_carries_a_warning(api: Api) -> None:
    conversation = await api.seed("ana")
    body = {
        "agent": "ben",
        "text": "Card 4111 1111 1111 1111 or mail ana@example.com",
        "confirm_private_info": ["card"],
    }
    async with api.client(Scope.AGENT) as client:
        reply = await client.post(f"/v1/conversations/{conversation}/reply", json=body)
    assert reply.status_code == 202
    assert reply.json()["private_info"] == ["card", "email"]


async def test_conversation_lifecycle(api: Api) -> None:
    conversation = await api.seed("ana")
    url = f"/v1/conversations/{conversation}"
    async with api.client(Scope.AGENT) as client:
        await client.put("/v1/agents/ben", json={})
        assigned = (await client.post(f"{url}/assign", json={"assignee": "ben"})).json()
        assert assigned["assignee"] == "ben"
        moved = (await client.post(f"{url}/transfer", json={"team": "billing"})).json()
        assert (moved["team"], moved["assignee"]) == ("billing", None)
        tagged = (await client.post(f"{url}/tags", json={"add": ["vip", "refund"]})).json()
        tagged = (await client.post(f"{url}/tags", json={"remove": ["vip"]})).json()
        assert tagged["tags"] == ["refund"]
        noted = (await client.post(f"{url}/notes", json={"author": "ben", "text": "called"})).json()
        assert [n["text"] for n in noted["notes"]] == ["called"]

        until = (utcnow() + timedelta(hours=2)).isoformat()
        snoozed = (await client.post(f"{url}/snooze", json={"until": until})).json()
        assert snoozed["status"] == "snoozed"
        assert {c["state"] for c in snoozed["sla"]} == {"paused"}
        past = await client.post(f"{url}/snooze", json={"until": "2020-01-01T00:00:00Z"})
        assert past.status_code == 422

        reopened = (await client.post(f"{url}/reopen")).json()
        assert reopened["status"] == "open"
        assert {c["state"] for c in reopened["sla"]} == {"running"}

        resolved = (await client.post(f"{url}/resolve")).json()
        assert resolved["status"] == "resolved"
        assert resolved["resolved_at"] is not None
        states = {c["metric"]: c["state"] for c in resolved["sla"]}
        # Resolved before anyone answered: its own outcome, not "met" (issue #16, finding 6).
        assert states == {"first_response": "cancelled", "resolution": "unanswered"}

        corrected = await client.post(
            f"{url}/classification",
            json={"agent": "ben", "category": "complaint", "priority": "high"},
        )
        assert (corrected.json()["category"], corrected.json()["priority"]) == ("complaint", "high")
        corrections = (await client.get("/v1/corrections")).json()
        assert [(c["old_category"], c["new_category"], c["text"]) for c in corrections] == [
            ("inquiry", "complaint", "hello")
        ]

        missing = await client.post("/v1/conversations/999999/resolve")
        assert missing.status_code == 404


async def test_metrics_export_the_fixed_names(api: Api) -> None:
    await api.seed("ana", Priority.HIGH)
    metrics = api.app.state.metrics
    async with transaction(api.app.state.sessions) as session:
        await metrics.refresh_queue_gauges(session, utcnow())
    async with api.client(None) as client:
        text = (await client.get("/metrics")).text
    for name in (
        "dmdesk_first_response_seconds",
        "dmdesk_resolution_seconds",
        "dmdesk_sla_breaches_total",
        "dmdesk_queue_oldest_waiting_seconds",
        "dmdesk_bot_containment_total",
        "dmdesk_bot_decisions_total",
        "dmdesk_dead_letters_total",
        "dmdesk_classifier_overrides_total",
        "dmdesk_queue_depth",
        "dmdesk_sla_next_deadline_seconds",
    ):
        assert f"# HELP {name} " in text, name
    assert 'dmdesk_queue_depth{priority="high",status="open",team="unassigned"} 1.0' in text
    assert "dmdesk_sla_next_deadline_seconds{" in text


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("snooze", {"until": "2030-01-01T00:00:00"}),
        ("snooze", {"until": "9999-12-31T23:59:59-23:59"}),
        ("snooze", {"until": "2999-01-01T00:00:00Z"}),
        ("tags", {"add": ["x" * 10_000]}),
        ("tags", {"add": [f"t{i}" for i in range(51)]}),
        ("tags", {"add": ["   "]}),
    ],
    ids=["naive-time", "past-year-9999", "centuries-ahead", "long-tag", "many-tags", "blank-tag"],
)
async def test_bad_action_bodies_are_422_with_a_reason(
    api: Api, action: str, body: dict[str, object]
) -> None:
    conversation = await api.seed("eve")
    async with api.client(Scope.AGENT) as client:
        response = await client.post(f"/v1/conversations/{conversation}/{action}", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_a_conversation_keeps_at_most_fifty_tags(api: Api) -> None:
    conversation = await api.seed("finn")
    url = f"/v1/conversations/{conversation}/tags"
    async with api.client(Scope.AGENT) as client:
        first = await client.post(url, json={"add": [f"a{i}" for i in range(30)]})
        assert first.status_code == 200
        more = await client.post(url, json={"add": [f"b{i}" for i in range(30)]})
        assert more.status_code == 422
        assert "50" in more.json()["detail"]
        kept = (await client.get(f"/v1/conversations/{conversation}")).json()
    assert len(kept["tags"]) == 30


@pytest.mark.parametrize("last_event_id", [str(2**70), "abc", "-1", "1.5", ""])
async def test_a_forged_last_event_id_is_a_422(api: Api, last_event_id: str) -> None:
    async with api.client(Scope.READ) as client:
        response = await client.get("/v1/events", headers={"Last-Event-ID": last_event_id})
    assert response.status_code == 422
    assert response.json()["detail"]
