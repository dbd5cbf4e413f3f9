"""SLA policies through the api: validated, conflicts refused (issue #16, finding 5)."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.api import projector
from shared.db import transaction
from shared.events import BotReply, Channel, Contact, InboundMessage
from shared.models import ConversationRow, SlaClockRow, SlaPolicyRow
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


async def test_a_policy_chooses_the_statuses_that_pause_its_clocks(api: Api) -> None:
    """Waiting on the customer pauses the default policy's clocks; this policy's run on."""
    runs_while_pending = {
        "name": "normal",
        "priority": "normal",
        "first_response_seconds": 600,
        "pausing_statuses": ["snoozed"],
    }
    async with api.client() as client:
        bad = await client.post(
            "/v1/sla/policies", json={**runs_while_pending, "pausing_statuses": ["open"]}
        )
        assert bad.status_code == 422, "an open conversation's clocks always run"
        stored = await client.post("/v1/sla/policies", json=runs_while_pending)
        assert stored.status_code == 201
        assert stored.json()["pausing_statuses"] == ["snoozed"]
    at = datetime(2026, 11, 28, 9, tzinfo=UTC)
    message = InboundMessage(
        mid="m-1",
        channel=Channel.WHATSAPP,
        account_id="waba",
        contact=Contact(platform_id="1"),
        text="hello",
        platform_ts=at,
    )
    reply = BotReply(
        conversation=message.conversation,
        trigger_mid="m-1",
        request_id="b-1",
        rule_id="faq",
        text="We open at 9.",
        decided_at=at + timedelta(seconds=1),
    )
    async with transaction(api.app.state.sessions) as session:
        await session.run_sync(projector.project_inbound, message)
        await session.run_sync(projector.project_bot_reply, reply)
    async with api.app.state.sessions() as session:
        conversation = (await session.execute(select(ConversationRow))).scalar_one()
        clocks = (await session.execute(select(SlaClockRow))).scalars().all()
    assert conversation.status == "pending", "the bot answered: waiting on the customer"
    assert [(c.metric, c.state) for c in clocks] == [("first_response", "running")]
    assert conversation.sla_due_at is not None, "its deadline stays in the queue"
    async with api.client() as client:
        detail = (await client.get(f"/v1/conversations/{conversation.id}")).json()
    (clock,) = detail["sla"]
    assert clock["wall_seconds"] is None, "no wall time before the clock stops"
