"""Signed Meta webhooks through the four services: an echo, a delivery and a read receipt."""

from pathlib import Path
from typing import Any

import pytest

from services.ingest.meta import sign
from tests.stack import META_APP_SECRET, META_VERIFY_TOKEN, Stack, eventually

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parents[1] / "fixtures" / "meta"
PSID = "6243177389021456"
MID = "m_AGrHvO2rU5NQyPB4Y3B5bMz1aBz3jnZ2Dw8Vfhn0ABcdEfGhIjKlMnOpQrStUvWxYz0123456789"
ECHO_MID = MID + "echo"


async def post_fixture(stack: Stack, channel: str, name: str) -> None:
    raw = (FIXTURES / f"{name}.json").read_bytes()
    response = await stack.client.post(
        f"{stack.ingest_url}/webhooks/{channel}",
        content=raw,
        headers={"X-Hub-Signature-256": sign(raw, META_APP_SECRET)},
    )
    assert response.status_code == 200, response.text


def message(detail: dict[str, Any], mid: str) -> dict[str, Any] | None:
    return next((m for m in detail["messages"] if m["mid"] == mid), None)


async def test_handshake_answers_meta_with_the_challenge(stack: Stack) -> None:
    response = await stack.client.get(
        f"{stack.ingest_url}/webhooks/messenger",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": META_VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert response.status_code == 200
    assert response.text == "1158201444"


async def test_echo_delivery_and_read_receipt_change_the_page_message(stack: Stack) -> None:
    await post_fixture(stack, "messenger", "messenger_text")
    items = await eventually(
        stack.full_queue,
        lambda items: any(i["contact"]["platform_id"] == PSID for i in items),
        timeout=30,
    )
    [item] = [i for i in items if i["contact"]["platform_id"] == PSID]
    assert item["channel"] == "messenger"
    assert item["is_request"], "a first DM from a stranger is a message request"

    await post_fixture(stack, "messenger", "messenger_echo_text")
    detail = await eventually(
        lambda: stack.conversation(item["id"]), lambda d: message(d, ECHO_MID) is not None
    )
    echo = message(detail, ECHO_MID)
    assert echo is not None
    assert echo["direction"] == "outbound"
    assert echo["status"] == "sent"
    assert echo["text"] == "Hi! Yes, it ships tomorrow."

    await post_fixture(stack, "messenger", "messenger_delivery")
    detail = await eventually(
        lambda: stack.conversation(item["id"]),
        lambda d: (message(d, ECHO_MID) or {}).get("status") == "delivered",
    )
    assert (message(detail, ECHO_MID) or {})["status"] == "delivered"

    await post_fixture(stack, "messenger", "messenger_read")
    detail = await eventually(
        lambda: stack.conversation(item["id"]),
        lambda d: (message(d, ECHO_MID) or {}).get("status") == "read",
    )
    assert (message(detail, ECHO_MID) or {})["status"] == "read"
    customer = message(detail, MID)
    assert customer is not None
    assert customer["direction"] == "inbound"
    assert customer["status"] == "received", "receipts only move the page's messages"
