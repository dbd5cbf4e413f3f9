"""Claim by the same rules as round robin: capacity, online status, team (issue #16, finding 8)."""

import asyncio
from datetime import timedelta

from sqlalchemy import select, update
from sqlmodel import col

from shared.db import transaction
from shared.events import utcnow
from shared.models import ConversationRow, Scope
from tests.integration.test_agent_actions import Api
from tests.integration.test_agent_actions import api as api  # noqa: PLC0414  # the fixture


async def _queue(api: Api, team: str, *contacts: str) -> list[int]:
    ids = [await api.seed(contact) for contact in contacts]
    async with transaction(api.app.state.sessions) as session:
        await session.execute(
            update(ConversationRow).where(ConversationRow.id.in_(ids)).values(team=team)  # type: ignore[union-attr]
        )
    return ids


async def test_claim_respects_capacity_online_status_and_team(api: Api) -> None:
    await _queue(api, "support", "s1", "s2", "s3")
    await _queue(api, "billing", "b1")
    async with api.client(Scope.AGENT) as client:
        await client.put(
            "/v1/agents/ana", json={"teams": ["support"], "online": True, "capacity": 1}
        )
        await client.put("/v1/agents/bob", json={"teams": ["support"], "online": False})
        await client.put("/v1/agents/cid", json={"teams": ["billing"], "online": True})

        first = await client.post("/v1/queue/claim", json={"agent": "ana"})
        assert first.status_code == 200
        second = await client.post("/v1/queue/claim", json={"agent": "ana"})
        assert second.status_code == 409, "capacity 1"
        assert "capacity" in second.json()["detail"]

        offline = await client.post("/v1/queue/claim", json={"agent": "bob"})
        assert offline.status_code == 409
        assert "offline" in offline.json()["detail"]

        other_team = await client.post("/v1/queue/claim", json={"agent": "cid", "team": "support"})
        assert other_team.status_code == 409
        assert "support" in other_team.json()["detail"]
        own = await client.post("/v1/queue/claim", json={"agent": "cid"})
        assert (own.status_code, own.json()["team"]) == (200, "billing"), "from their own team"

        # Snoozed conversations count towards capacity (a documented choice).
        mine = first.json()["id"]
        snoozed = await client.post(
            f"/v1/conversations/{mine}/snooze",
            json={"until": (utcnow() + timedelta(hours=2)).isoformat()},
        )
        assert snoozed.status_code == 200
        still = await client.post("/v1/queue/claim", json={"agent": "ana"})
        assert still.status_code == 409


async def test_a_claim_waits_for_a_conversation_another_transaction_holds(api: Api) -> None:
    # The projection writer locks the conversations of its group for a few milliseconds;
    # an agent claiming meanwhile gets the conversation, not "nothing to claim".
    [held] = await _queue(api, "support", "held")
    async with api.client(Scope.AGENT) as client:
        await client.put("/v1/agents/ana", json={"teams": ["support"], "online": True})
        async with transaction(api.app.state.sessions) as session:
            await session.execute(
                select(ConversationRow).where(col(ConversationRow.id) == held).with_for_update()
            )
            claiming = asyncio.create_task(client.post("/v1/queue/claim", json={"agent": "ana"}))
            await asyncio.sleep(0.3)
        claimed = await claiming
    assert claimed.status_code == 200, claimed.text
    assert (claimed.json()["id"], claimed.json()["assignee"]) == (held, "ana")
