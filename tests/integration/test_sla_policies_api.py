"""SLA policies through the api: validated, conflicts refused (issue #16, finding 5)."""

from datetime import UTC, datetime

from sqlalchemy import select

from services.api import projector
from shared.db import transaction
from shared.events import Channel, Contact, InboundMessage
from shared.models import SlaClockRow, SlaPolicyRow
from tests.integration.test_agent_actions import Api
from tests.integration.test_agent_actions import api as api  # noqa: PLC0414  # the fixture

URGENT = {"name": "urgent-vip", "priority": "urgent", "first_response_seconds": 60}


async def test_a_calendar_without_opening_hours_is_refused_with_the_reason(api: Api) -> None:
    closed = {**URGENT, "calendar": {"timezone": "Europe/Paris", "hours": {}}}
    async with api.client() as client:
        refused = await client.post("/v1/sla/policies", json=closed)
    assert refused.status_code == 422
    assert "no opening hours" in refused.text


async def test_a_second_policy_for_the_same_conversations_is_a_conflict(api: Api) -> None:
    async with api.client() as client:
        clash = await client.post("/v1/sla/policies", json={**URGENT, "name": "urgent-2"})
        assert clash.status_code == 409
        assert "'urgent'" in clash.json()["detail"], "names the policy it conflicts with"
        replaced = await client.post("/v1/sla/policies", json={**URGENT, "name": "urgent"})
        assert replaced.status_code == 201, "the same name replaces the policy"
        narrower = {**URGENT, "name": "urgent-wa", "channel": "whatsapp"}
        assert (await client.post("/v1/sla/policies", json=narrower)).status_code == 201
        listed = [p["name"] for p in (await client.get("/v1/sla/policies")).json()]
    assert listed.index("urgent-wa") < listed.index("urgent"), "listed in match order"


async def test_a_dm_never_fails_its_projection_because_of_a_policy(api: Api) -> None:
    async with transaction(api.app.state.sessions) as session:
        # A calendar stored before the api refused them: it has no working time.
        for row in (await session.execute(select(SlaPolicyRow))).scalars():
            if row.name == "normal":
                row.calendar = {"timezone": "UTC", "hours": {}}
    message = InboundMessage(
        mid="m-1",
        channel=Channel.WHATSAPP,
        account_id="waba",
        contact=Contact(platform_id="1"),
        text="hello",
        platform_ts=datetime(2026, 11, 28, 9, tzinfo=UTC),
    )
    async with transaction(api.app.state.sessions) as session:
        assert await session.run_sync(projector.project_inbound, message)
    async with api.app.state.sessions() as session:
        assert (await session.execute(select(SlaClockRow))).first() is None
