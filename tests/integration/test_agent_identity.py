"""Agents act as themselves: a key bound to an agent acts only as that agent (issue #16, part 5)."""

import os
import subprocess
import sys

import httpx
import pytest

from services.api.auth import create_key
from shared.db import transaction
from shared.models import AgentRow, ApiKeyRow, Scope
from tests.integration.test_agent_actions import Api
from tests.integration.test_agent_actions import api as api  # noqa: PLC0414  # the fixture


async def _bound_key(api: Api, agent: str) -> str:
    async with transaction(api.app.state.sessions) as session:
        return (await create_key(session, f"{agent}'s tool", Scope.AGENT, agent=agent)).secret


def _as(api: Api, secret: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app),
        base_url="http://api",
        headers={"X-API-Key": secret},
    )


async def test_creating_a_bound_key_registers_its_agent_once(api: Api) -> None:
    await _bound_key(api, "ben")
    await _bound_key(api, "ben")
    async with transaction(api.app.state.sessions) as session:
        agents = (await session.execute(AgentRow.__table__.select())).all()  # type: ignore[attr-defined]
        keys = (await session.execute(ApiKeyRow.__table__.select())).all()  # type: ignore[attr-defined]
    assert [row.name for row in agents] == ["ben"]
    assert sorted(row.agent or "" for row in keys if row.agent) == ["ben", "ben"]


async def test_only_an_agent_scope_key_can_be_bound(api: Api) -> None:
    async with transaction(api.app.state.sessions) as session:
        with pytest.raises(ValueError, match="agent scope"):
            await create_key(session, "x", Scope.ADMIN, agent="ben")


async def test_a_bound_key_acts_as_its_agent_without_naming_it(api: Api) -> None:
    conversation = await api.seed("ana")
    url = f"/v1/conversations/{conversation}"
    async with _as(api, await _bound_key(api, "ben")) as ben:
        await ben.put("/v1/agents/ben", json={"online": True})
        replied = await ben.post(f"{url}/reply", json={"text": "On its way."})
        noted = await ben.post(f"{url}/notes", json={"text": "called her"})
        corrected = await ben.post(f"{url}/classification", json={"priority": "high"})
        await ben.post(f"{url}/resolve")
        log = (await ben.get(f"{url}/activity")).json()
    assert replied.status_code == 202, replied.text
    assert noted.status_code == 200, noted.text
    assert [n["author"] for n in noted.json()["notes"]] == ["ben"]
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["assignee"] == "ben", "a reply by a registered agent takes it"
    async with api.client() as admin:
        corrections = (await admin.get("/v1/corrections")).json()
    assert [c["agent"] for c in corrections] == ["ben"]
    assert ("status", "ben") in [(e["kind"], e["actor"]) for e in log], "the agent, not the key"


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("reply", {"agent": "ana", "text": "hi"}),
        ("notes", {"author": "ana", "text": "called"}),
        ("classification", {"agent": "ana", "priority": "high"}),
        ("assign", {"assignee": "ana"}),
    ],
)
async def test_a_bound_key_naming_another_agent_is_refused(
    api: Api, action: str, body: dict[str, object]
) -> None:
    conversation = await api.seed("eve")
    async with api.client() as admin:
        await admin.put("/v1/agents/ana", json={"online": True})
    async with _as(api, await _bound_key(api, "ben")) as ben:
        refused = await ben.post(f"/v1/conversations/{conversation}/{action}", json=body)
        detail = (await ben.get(f"/v1/conversations/{conversation}")).json()
    assert refused.status_code == 403
    assert "'ben'" in refused.json()["detail"]
    assert "'ana'" in refused.json()["detail"]
    assert (detail["assignee"], detail["notes"]) == (None, [])


async def test_a_bound_key_claims_and_registers_only_for_itself(api: Api) -> None:
    await api.seed("eve")
    async with _as(api, await _bound_key(api, "ben")) as ben:
        other = await ben.put("/v1/agents/ana", json={"online": True})
        await ben.put("/v1/agents/ben", json={"online": True})
        for_ana = await ben.post("/v1/queue/claim", json={"agent": "ana"})
        mine = await ben.post("/v1/queue/claim", json={})
    assert other.status_code == 403
    assert for_ana.status_code == 403
    assert (mine.status_code, mine.json()["assignee"]) == (200, "ben")


async def test_an_admin_key_acts_for_any_agent(api: Api) -> None:
    conversation = await api.seed("eve")
    async with api.client() as admin:
        await admin.put("/v1/agents/ana", json={"online": True})
        assigned = await admin.post(
            f"/v1/conversations/{conversation}/assign", json={"assignee": "ana"}
        )
        noted = await admin.post(
            f"/v1/conversations/{conversation}/notes", json={"author": "ana", "text": "x"}
        )
    assert assigned.status_code == noted.status_code == 200


async def test_an_unbound_key_names_the_agent_as_before(api: Api) -> None:
    conversation = await api.seed("eve")
    async with api.client(Scope.AGENT) as client:
        await client.put("/v1/agents/ana", json={"online": True})
        nameless = await client.post(f"/v1/conversations/{conversation}/reply", json={"text": "x"})
        named = await client.post(
            f"/v1/conversations/{conversation}/reply", json={"agent": "ana", "text": "x"}
        )
        log = (await client.get(f"/v1/conversations/{conversation}/activity")).json()
    assert nameless.status_code == 422
    assert "agent" in str(nameless.json()["detail"])
    assert named.status_code == 202
    assert [e["actor"] for e in log if e["kind"] == "assigned"] == ["agent"], "the key's name"


@pytest.mark.parametrize("assignee", ["", "nobody"])
async def test_assigning_to_an_unknown_agent_is_a_422(api: Api, assignee: str) -> None:
    conversation = await api.seed("eve")
    async with api.client(Scope.AGENT) as client:
        refused = await client.post(
            f"/v1/conversations/{conversation}/assign", json={"assignee": assignee}
        )
        detail = (await client.get(f"/v1/conversations/{conversation}")).json()
    assert refused.status_code == 422
    assert refused.json()["detail"]
    assert detail["assignee"] is None


async def test_claiming_for_an_unknown_agent_is_a_422(api: Api) -> None:
    await api.seed("eve")
    async with api.client(Scope.AGENT) as client:
        refused = await client.post("/v1/queue/claim", json={"agent": "nobody"})
        queue = (await client.get("/v1/queue", params={"assignee": "none"})).json()
    assert refused.status_code == 422
    assert "nobody" in refused.json()["detail"]
    assert len(queue["items"]) == 1, "still unassigned"


async def test_a_reply_by_an_unknown_name_does_not_take_the_conversation(api: Api) -> None:
    conversation = await api.seed("eve")
    async with api.client(Scope.AGENT) as client:
        replied = await client.post(
            f"/v1/conversations/{conversation}/reply", json={"agent": "nobody", "text": "x"}
        )
        detail = (await client.get(f"/v1/conversations/{conversation}")).json()
    assert replied.status_code == 202
    assert detail["assignee"] is None


def _dmdesk(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmdesk", "apikey", *args],
        env={**os.environ, "DMDESK_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_command_binds_a_key_to_an_agent_and_lists_it(database_url: str) -> None:
    created = _dmdesk(
        database_url, "create", "--name", "ben-inbox", "--scope", "agent", "--agent", "ben"
    )
    refused = _dmdesk(database_url, "create", "--name", "x", "--scope", "admin", "--agent", "ben")
    listed = _dmdesk(database_url, "list")
    assert created.returncode == 0, created.stderr
    assert "registered agent 'ben'" in created.stdout
    assert "acting as agent 'ben'" in created.stdout
    assert created.stdout.strip().splitlines()[-1].startswith("dmd_")
    assert refused.returncode == 2
    assert "--scope agent" in refused.stdout
    assert "ben-inbox  (agent ben)" in listed.stdout
