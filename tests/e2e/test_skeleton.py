"""A DM travels ingest -> classifier -> responder -> api, exactly once, whatever happens."""

import asyncio
import json
import signal
import time
from typing import Any

import nats
import pytest

from shared.events import DeadLetter
from shared.streams import MSG_ID_HEADER
from tests.stack import Stack, eventually

pytestmark = pytest.mark.e2e


def dm(mid: str, text: str, contact: str = "ana", **extra: Any) -> dict[str, Any]:
    return {
        "id": mid,
        "account_id": "page-1",
        "contact": {"id": contact, "name": contact.title()},
        "text": text,
        **extra,
    }


def routed(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in items if item["team"] is not None]


async def test_posted_dm_is_classified_and_routed_into_the_queue(
    stack: Stack, record_property: Any
) -> None:
    started = time.monotonic()
    response = await stack.post_dm(dm("m-1", "Hi, where is my order? It is late."))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}

    items = await eventually(stack.queue, lambda items: bool(routed(items)))
    record_property("webhook_to_routed_seconds", round(time.monotonic() - started, 3))

    [item] = routed(items)
    assert item["category"] == "order_shipping"
    assert item["team"] == "support"
    assert item["contact"]["platform_id"] == "ana"
    assert item["sla_due_at"] is not None

    # Classification and hand-off reach the api on separate consumers, in either order.
    def inbound(detail: dict[str, Any]) -> list[dict[str, Any]]:
        return [m for m in detail["messages"] if m["direction"] == "inbound"]

    detail = await eventually(
        lambda: stack.conversation(item["id"]),
        lambda d: bool(inbound(d)) and inbound(d)[0]["classification"] is not None,
    )
    [message] = inbound(detail)
    assert message["mid"] == "m-1"
    assert message["classification"]["model_version"]


async def test_same_dm_posted_twice_is_stored_once(stack: Stack) -> None:
    first = await stack.post_dm(dm("m-dup", "I was charged twice, refund please"))
    second = await stack.post_dm(dm("m-dup", "I was charged twice, refund please"))
    assert first.json() == {"accepted": 1, "duplicates": 0}
    assert second.json() == {"accepted": 1, "duplicates": 1}

    # A redelivery outside JetStream's dedupe window: same DM, another Nats-Msg-Id.
    client = await nats.connect(stack.services["api"].env["DMDESK_NATS_URL"])
    try:
        body = {
            "mid": "m-dup",
            "channel": "generic",
            "account_id": "page-1",
            "contact": {"platform_id": "ana"},
            "text": "I was charged twice, refund please",
            "platform_ts": "2026-11-28T10:00:00Z",
        }
        ack = await client.jetstream().publish(
            "dm.inbound.generic", json.dumps(body).encode(), headers={MSG_ID_HEADER: "late-retry"}
        )
        assert not ack.duplicate
    finally:
        await client.close()

    items = await eventually(stack.queue, lambda items: bool(routed(items)))
    [item] = routed(items)
    await asyncio.sleep(1.0)  # let the late copy reach every consumer
    detail = await stack.conversation(item["id"])
    inbound = [m["mid"] for m in detail["messages"] if m["direction"] == "inbound"]
    assert inbound == ["m-dup"]
    # The bot's hand-off message, once at most: the late copy decided nothing again.
    assert len([m for m in detail["messages"] if m["direction"] == "outbound"]) <= 1


async def test_invalid_dm_is_refused_with_the_field_and_reason(stack: Stack) -> None:
    response = await stack.post_dm({"id": "m-bad", "contact": {"name": "no id"}, "text": "hi"})
    assert response.status_code == 422
    assert response.json()["field"] == "contact.id", response.text
    assert "contact.id: Field required" in response.json()["detail"]

    empty = await stack.post_dm(dm("m-empty", "   "))
    assert empty.status_code == 422
    assert "text or at least one attachment" in empty.text


async def test_classifier_killed_mid_flow_loses_and_doubles_nothing(stack: Stack) -> None:
    total = 60

    async def post(index: int) -> None:
        response = await stack.post_dm(dm(f"k-{index}", f"order {index} is late", f"c{index}"))
        assert response.status_code == 202

    for index in range(total // 2):
        await post(index)
    await stack.services["classifier"].kill()
    for index in range(total // 2, total):
        await post(index)
    await stack.restart("classifier")

    items = await eventually(
        stack.full_queue, lambda items: len(routed(items)) == total, timeout=30
    )
    assert len(routed(items)) == total
    assert sorted(item["contact"]["platform_id"] for item in items) == sorted(
        f"c{index}" for index in range(total)
    )
    for item in items:
        detail = await eventually(
            lambda item=item: stack.conversation(item["id"]), lambda d: bool(d["messages"])
        )
        inbound = [m["mid"] for m in detail["messages"] if m["direction"] == "inbound"]
        assert inbound == [f"k-{item['contact']['platform_id'][1:]}"]
        assert len([m for m in detail["messages"] if m["direction"] == "outbound"]) <= 1


async def test_dm_the_classifier_cannot_process_is_dead_lettered(stack: Stack) -> None:
    poison = b'{"mid": "poison-1", "channel": "generic", "text": "no contact, no account"}'
    client = await nats.connect(stack.services["api"].env["DMDESK_NATS_URL"])
    try:
        js = client.jetstream()
        await js.publish("dm.inbound.generic", poison, headers={MSG_ID_HEADER: "poison-1"})

        async def last_dead_letter() -> DeadLetter | None:
            try:
                raw = await js.get_last_msg("DMDESK", "dm.dlq.classifier")
            except nats.js.errors.NotFoundError:
                return None
            return DeadLetter.model_validate_json(raw.data or b"")

        letter = await eventually(last_dead_letter, lambda found: found is not None)
    finally:
        await client.close()

    assert letter is not None
    assert letter.stage == "classifier"
    assert letter.subject == "dm.inbound.generic"
    assert letter.error_type == "ValidationError"
    assert "contact" in letter.error
    assert letter.original == poison.decode()


async def test_classifier_stopped_with_sigterm_exits_cleanly_and_loses_nothing(
    stack: Stack,
) -> None:
    total = 30
    batch = [dm(f"t-{index}", f"parcel {index} is missing", f"t{index}") for index in range(total)]
    assert (await stack.post_dm(batch)).status_code == 202
    # uvicorn re-raises SIGTERM after a graceful shutdown; a forced stop would be SIGKILL.
    assert await stack.services["classifier"].terminate() == -signal.SIGTERM
    assert '"message": "service stopped"' in stack.services["classifier"].log_path.read_text()
    await stack.restart("classifier")

    items = await eventually(
        stack.full_queue, lambda items: len(routed(items)) == total, timeout=30
    )
    assert sorted(item["contact"]["platform_id"] for item in routed(items)) == sorted(
        f"t{index}" for index in range(total)
    )
