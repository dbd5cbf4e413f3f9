"""GET /v1/events: other systems follow conversation changes, and resume after a disconnect."""

import asyncio
import json
from typing import Any

import pytest

from tests.stack import Stack, eventually

pytestmark = pytest.mark.e2e


async def read_events(stack: Stack, count: int, **headers: str) -> list[dict[str, Any]]:
    """The first ``count`` events of a fresh connection to the feed."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with stack.client.stream(
        "GET", f"{stack.api_url}/v1/events", headers=headers, timeout=20
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif not line and "data" in current:
                events.append(current)
                current = {}
                if len(events) == count:
                    return events
    return events


async def test_feed_streams_changes_and_resumes_from_last_event_id(stack: Stack) -> None:
    listener = asyncio.create_task(read_events(stack, 2))
    await asyncio.sleep(0.5)  # subscribed before the DM arrives
    response = await stack.post_dm(
        {"id": "sse-1", "contact": {"id": "ana"}, "text": "where is my order?"}
    )
    assert response.status_code == 202
    first_two = await asyncio.wait_for(listener, 20)

    assert {event["event"] for event in first_two} == {"conversation.changed"}
    assert {event["data"]["contact_id"] for event in first_two} == {"ana"}
    conversation_id = first_two[0]["data"]["conversation_id"]

    # The bot may answer first (status pending) before the hand-off opens it for agents.
    await eventually(
        stack.queue, lambda items: any(i["status"] == "open" and i["team"] for i in items)
    )
    claimed = await stack.client.post(f"{stack.api_url}/v1/queue/claim", json={"agent": "ben"})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["id"] == conversation_id

    resumed = await asyncio.wait_for(
        read_events(stack, 1, **{"Last-Event-ID": first_two[-1]["id"]}), 20
    )
    assert int(resumed[0]["id"]) > int(first_two[-1]["id"])
    assert resumed[0]["data"]["conversation_id"] == conversation_id
