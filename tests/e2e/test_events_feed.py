"""GET /v1/events: other systems follow conversation changes, and resume after a disconnect."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import nats
import pytest

from shared.events import ConversationChanged
from shared.settings import Settings
from shared.streams import MSG_ID_HEADER
from tests.stack import Stack, eventually

pytestmark = pytest.mark.e2e

Event = dict[str, Any]


async def read_events(
    stack: Stack,
    until: Callable[[Event], bool],
    subscribed: asyncio.Event | None = None,
    **headers: str,
) -> list[Event]:
    """The events of a fresh connection to the feed, up to the first that ``until`` accepts.

    ``subscribed`` is set when the feed says it is subscribed: changes committed after
    that must arrive.
    """
    events: list[Event] = []
    current: Event = {}
    async with stack.client.stream(
        "GET", f"{stack.api_url}/v1/events", headers=headers, timeout=20
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line == ": subscribed" and subscribed is not None:
                subscribed.set()
            elif line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif not line and "data" in current:
                events.append(current)
                current = {}
                if until(events[-1]):
                    return events
    return events


def handed_off(event: Event) -> bool:
    return bool(event["data"]["status"] == "open" and event["data"]["team"])


async def test_feed_streams_changes_and_resumes_from_last_event_id(stack: Stack) -> None:
    subscribed = asyncio.Event()
    listener = asyncio.create_task(read_events(stack, handed_off, subscribed))
    await asyncio.wait_for(subscribed.wait(), 20)
    response = await stack.post_dm(
        {"id": "sse-1", "contact": {"id": "ana"}, "text": "where is my order?"}
    )
    assert response.status_code == 202
    # Changes committed together are published once, so count none but the hand-off.
    changes = await asyncio.wait_for(listener, 20)

    assert {event["event"] for event in changes} == {"conversation.changed"}
    assert {event["data"]["contact_id"] for event in changes} == {"ana"}
    assert [int(event["id"]) for event in changes] == sorted(int(e["id"]) for e in changes)
    conversation_id = changes[-1]["data"]["conversation_id"]

    await eventually(stack.queue, lambda items: any(handed_off({"data": i}) for i in items))
    # Only a registered agent claims (issue #16, part 5).
    await stack.client.put(f"{stack.api_url}/v1/agents/ben", json={"online": True})
    claimed = await stack.client.post(f"{stack.api_url}/v1/queue/claim", json={"agent": "ben"})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["id"] == conversation_id

    # Disconnected since the hand-off: resuming replays what followed it, the claim.
    resumed = await asyncio.wait_for(
        read_events(
            stack,
            lambda event: event["data"]["assignee"] == "ben",
            **{"Last-Event-ID": changes[-1]["id"]},
        ),
        20,
    )
    assert all(int(event["id"]) > int(changes[-1]["id"]) for event in resumed)
    assert resumed[-1]["data"]["conversation_id"] == conversation_id


async def test_feed_events_are_json_with_a_dedupe_id_and_counted(stack: Stack) -> None:
    subscribed = asyncio.Event()
    listener = asyncio.create_task(read_events(stack, handed_off, subscribed))
    await asyncio.wait_for(subscribed.wait(), 20)
    response = await stack.post_dm(
        {"id": "sse-2", "contact": {"id": "eva"}, "text": "agent please"}
    )
    assert response.status_code == 202
    [*_, last] = await asyncio.wait_for(listener, 20)

    client = await nats.connect(stack.services["api"].env["DMDESK_NATS_URL"])
    try:
        stored = await client.jetstream().get_msg(Settings().stream_name, seq=int(last["id"]))
    finally:
        await client.close()
    change = ConversationChanged.model_validate_json(stored.data or b"")
    assert change.contact_id == "eva"
    assert stored.headers is not None
    assert stored.headers["content-type"] == "application/json"  # as faststream sends it
    assert stored.headers[MSG_ID_HEADER] == (
        f"changed:{change.conversation_id}:{change.updated_at.isoformat()}"
    )

    metrics = (await stack.client.get(f"{stack.api_url}/metrics")).text
    counted = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("dmdesk_conversation_changes_total{")
    }
    assert counted["published"] >= 1
    assert counted["failed"] == 0
