"""Poison messages: dead-lettered with their error, visible in the api, and replayable.

Two kinds are tested, because dmdesk treats them differently:

- A payload that can never be processed (it does not validate) is dead-lettered at
  once, after one delivery: retrying cannot help. Replaying it as-is republishes it
  and it is dead-lettered again, never dropped.
- A DM that fails only while a cause lasts is redelivered with back-off and
  dead-lettered after ``DMDESK_MAX_DELIVERIES`` deliveries. The cause here is the
  stream refusing the classifier's output (``dm.classified`` is held at one message
  per subject with new messages discarded, as a full stream with ``discard: new``
  refuses), so the classifier's handler raises for that DM on every delivery. Once
  the stream is restored, replaying the dead letter takes the DM all the way into
  the queue, stored once.
"""

import json
from typing import Any

import nats
import pytest
from nats.js.api import DiscardPolicy

from shared.events import utcnow
from shared.settings import Settings
from shared.streams import MSG_ID_HEADER
from tests.stack import Stack, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STREAM = Settings().stream_name


async def dead_letters(stack: Stack, stage: str) -> list[dict[str, Any]]:
    response = await stack.client.get(f"{stack.api_url}/v1/dead-letters", params={"stage": stage})
    response.raise_for_status()
    letters: list[dict[str, Any]] = response.json()
    return letters


async def routed_conversation(stack: Stack, contact: str) -> dict[str, Any] | None:
    items = await stack.full_queue()
    found = [i for i in items if i["contact"]["platform_id"] == contact and i["team"]]
    return found[0] if found else None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_invalid_dm_is_dead_lettered_at_once_and_replay_republishes_it(
    stack: Stack,
) -> None:
    poison = b'{"mid": "poison-1", "channel": "generic", "text": "no contact, no account"}'
    client = await nats.connect(stack.services["api"].env["DMDESK_NATS_URL"])
    try:
        js = client.jetstream()
        await js.publish("dm.inbound.generic", poison, headers={MSG_ID_HEADER: "poison-1"})
        [letter] = await eventually(lambda: dead_letters(stack, "classifier"), bool)
        assert letter["subject"] == "dm.inbound.generic"
        assert letter["deliveries"] == 1, "a payload that cannot validate is not retried"
        assert letter["error_type"] == "ValidationError"
        assert "contact" in letter["error"]
        assert letter["original"] == poison.decode()
        assert letter["replayed_at"] is None

        # A client that retries its replay request (same Idempotency-Key) replays once.
        url = f"{stack.api_url}/v1/dead-letters/{letter['id']}/replay"
        replay = await stack.client.post(url, headers={"Idempotency-Key": "replay-1"})
        assert replay.status_code == 200, replay.text
        assert replay.json()["replayed_at"] is not None
        again = await stack.client.post(url, headers={"Idempotency-Key": "replay-1"})
        assert again.status_code == 200, again.text
        assert again.json() == replay.json()
        republished = await js.get_last_msg(STREAM, "dm.inbound.generic")
        assert republished.data == poison
        assert (republished.headers or {})[MSG_ID_HEADER] == f"replay:{letter['id']}:replay-1"
        info = await js.stream_info(STREAM, subjects_filter="dm.inbound.generic")
        assert info.state.subjects == {"dm.inbound.generic": 2}, "the original and one replay"

        # Still poison: dead-lettered again under its new sequence, not dropped.
        letters = await eventually(
            lambda: dead_letters(stack, "classifier"), lambda found: len(found) == 2
        )
        assert len(letters) == 2
        assert {item["original"] for item in letters} == {poison.decode()}
    finally:
        await client.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_dm_failing_until_its_cause_is_fixed_is_retried_then_replayed_into_the_queue(
    stack: Stack,
) -> None:
    max_deliveries = int(stack.services["classifier"].env["DMDESK_MAX_DELIVERIES"])
    warm = await stack.post_dm(
        {"id": "warm-1", "contact": {"id": "warm"}, "text": "where is my order?"}
    )
    assert warm.status_code == 202
    assert await eventually(lambda: routed_conversation(stack, "warm"), bool)

    client = await nats.connect(stack.services["api"].env["DMDESK_NATS_URL"])
    try:
        js = client.jetstream()
        healthy = (await js.stream_info(STREAM)).config
        refusing = json.loads(json.dumps(healthy.as_dict()))
        refusing |= {
            "max_msgs_per_subject": 1,
            "discard": DiscardPolicy.NEW.value,
            "discard_new_per_subject": True,
        }
        await js.update_stream(type(healthy).from_response(refusing))
        dm = {
            "mid": "stuck-1",
            "channel": "messenger",
            "account_id": "page-1",
            "contact": {"platform_id": "stuck", "name": "Stuck"},
            "text": "Please send me an invoice for my last payment",
            "platform_ts": utcnow().isoformat(),
        }
        await js.publish(
            "dm.inbound.messenger", json.dumps(dm).encode(), headers={MSG_ID_HEADER: "stuck-1"}
        )
        [letter] = await eventually(lambda: dead_letters(stack, "classifier"), bool, timeout=30)
        assert letter["deliveries"] == max_deliveries
        assert letter["subject"] == "dm.inbound.messenger"
        assert "maximum messages per subject" in letter["error"], letter["error"]
        assert json.loads(letter["original"])["mid"] == "stuck-1"
        assert await routed_conversation(stack, "stuck") is None

        await js.update_stream(healthy)  # the cause is fixed
    finally:
        await client.close()

    replay = await stack.client.post(f"{stack.api_url}/v1/dead-letters/{letter['id']}/replay")
    assert replay.status_code == 200, replay.text
    item = await eventually(lambda: routed_conversation(stack, "stuck"), bool, timeout=30)
    assert item is not None, "the replayed DM never reached the queue"
    assert item["team"] == "billing"
    detail = await eventually(
        lambda: stack.conversation(item["id"]),
        lambda d: any(m["classification"] for m in d["messages"]),
    )
    customer = [m for m in detail["messages"] if m["author"] == "customer"]
    assert [m["mid"] for m in customer] == ["stuck-1"]
    assert customer[0]["classification"] is not None
