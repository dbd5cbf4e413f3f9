"""The live SLA state of each conversation in the queue and its detail (issue #16, finding 10)."""

import asyncio
from datetime import timedelta
from types import SimpleNamespace

from fastapi.sse import ServerSentEvent
from sqlalchemy import select

from services.api import changes
from shared.db import transaction
from shared.events import SlaEvent, utcnow
from shared.models import SlaClockRow
from tests.integration.test_agent_actions import Api
from tests.integration.test_agent_actions import api as api  # noqa: PLC0414  # the fixture


async def _set_clock(api: Api, conversation: int, metric: str, **values: object) -> None:
    async with transaction(api.app.state.sessions) as session:
        clock = (
            await session.execute(
                select(SlaClockRow).where(
                    SlaClockRow.conversation_id == conversation, SlaClockRow.metric == metric
                )
            )
        ).scalar_one()
        for name, value in values.items():
            setattr(clock, name, value)


async def test_the_queue_and_the_conversation_show_the_live_sla_state(api: Api) -> None:
    await api.seed("calm")
    risky, late = await api.seed("risky"), await api.seed("late")
    now = utcnow()
    await _set_clock(api, risky, "first_response", at_risk_at=now - timedelta(seconds=1))
    await _set_clock(api, late, "first_response", due_at=now - timedelta(seconds=10))
    async with api.client() as client:
        items = (await client.get("/v1/queue")).json()["items"]
        detail = (await client.get(f"/v1/conversations/{late}")).json()
    states = {item["contact"]["platform_id"]: item["sla_state"] for item in items}
    assert states["calm"]["state"] == "ok"
    assert states["risky"]["state"] == "at_risk"
    assert (states["late"]["state"], states["late"]["metric"]) == ("breached", "first_response")
    assert detail["sla_state"] == states["late"]
    assert [c["state"] for c in detail["sla"]] == ["running", "running"]


async def test_at_risk_and_breach_events_reach_the_sse_feed(api: Api) -> None:
    conversation = await api.seed("sse")
    past = utcnow() - timedelta(seconds=1)
    await _set_clock(api, conversation, "first_response", due_at=past, at_risk_at=past)
    await api.app.state.scheduler.fire_due(utcnow())
    request = SimpleNamespace(app=api.app)
    feed = changes.conversation_events(request, None, team=None, last_event_id="0")  # type: ignore[arg-type]

    async def first_sla_events() -> list[ServerSentEvent]:
        found: list[ServerSentEvent] = []
        async for event in feed:
            if event.event and event.event.startswith("sla."):
                found.append(event)
                if event.event == "sla.breached":
                    return found
        return found

    try:
        events = await asyncio.wait_for(first_sla_events(), 20)
    finally:
        await feed.aclose()
    assert [e.event for e in events] == ["sla.at_risk", "sla.breached"]
    breach = events[-1]
    assert isinstance(breach.data, SlaEvent)
    assert (breach.data.conversation_id, breach.data.metric) == (conversation, "first_response")
