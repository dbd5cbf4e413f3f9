"""Every move of a conversation, with time and actor (issue #16, item 8)."""

from datetime import timedelta

from shared.events import utcnow
from shared.models import Scope
from tests.integration.test_agent_actions import Api
from tests.integration.test_agent_actions import api as api  # noqa: PLC0414  # the fixture
from tests.integration.test_sla_live_state import _set_clock


async def test_the_activity_log_tells_who_did_what_and_when(api: Api) -> None:
    conversation = await api.seed("ana")
    url = f"/v1/conversations/{conversation}"
    async with api.client(Scope.AGENT) as client:
        await client.put("/v1/agents/ben", json={})
        await client.post(f"{url}/assign", json={"assignee": "ben"})
        await client.post(f"{url}/transfer", json={"team": "billing"})
        until = (utcnow() + timedelta(hours=1)).isoformat()
        await client.post(f"{url}/snooze", json={"until": until})
        await client.post(f"{url}/reopen")
    past = utcnow() - timedelta(seconds=1)
    await _set_clock(api, conversation, "first_response", due_at=past, at_risk_at=past)
    await api.app.state.scheduler.fire_due(utcnow())
    async with api.client(Scope.AGENT) as client:
        await client.post(f"{url}/resolve")
        log = await client.get(f"{url}/activity")
        missing = await client.get("/v1/conversations/999999/activity")
    assert log.status_code == 200
    entries = [(e["kind"], e["actor"], e["detail"]) for e in log.json()]
    assert entries == [
        ("assigned", "agent", {"assignee": "ben"}),
        ("transferred", "agent", {"team": "billing"}),
        ("status", "agent", {"from": "open", "to": "snoozed"}),
        ("status", "agent", {"from": "snoozed", "to": "open"}),
        ("sla.at_risk", "sla", {"metric": "first_response"}),
        ("sla.breached", "sla", {"metric": "first_response"}),
        ("status", "agent", {"from": "open", "to": "resolved"}),
    ]
    times = [e["at"] for e in log.json()]
    assert times == sorted(times)
    assert missing.status_code == 404
