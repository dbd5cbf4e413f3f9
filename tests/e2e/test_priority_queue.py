"""The classifier's priority decides the queue: an urgent complaint overtakes routine questions."""

from typing import Any

import pytest

from tests.stack import Stack, eventually

pytestmark = pytest.mark.e2e

ROUTINE = (
    "Do you ship to Italy?",
    "What are your opening hours on Saturday?",
    "Can I pay with PayPal?",
    "Is the blue jacket available in size M?",
    "How long does delivery to Berlin take?",
)


def dm(mid: str, text: str, contact: str) -> dict[str, Any]:
    return {"id": mid, "account_id": "page", "contact": {"id": contact}, "text": text}


async def test_urgent_complaint_behind_fifty_inquiries_reaches_the_head_of_the_queue(
    stack: Stack,
) -> None:
    routine = [dm(f"q-{i}", ROUTINE[i % len(ROUTINE)], f"asker-{i}") for i in range(50)]
    assert (await stack.post_dm(routine)).status_code == 202
    urgent = dm(
        "u-1",
        "Someone hacked my account and made fraudulent payments with my card! "
        "This is unacceptable, I am calling my lawyer.",
        "victim",
    )
    assert (await stack.post_dm(urgent)).status_code == 202

    def classified(items: list[dict[str, Any]]) -> bool:
        return len([i for i in items if i["category"] is not None]) == 51

    items = await eventually(stack.full_queue, classified, timeout=60)
    head = items[0]
    assert head["contact"]["platform_id"] == "victim", [
        (i["contact"]["platform_id"], i["priority"]) for i in items[:5]
    ]
    assert head["priority"] == "urgent"
    assert {i["priority"] for i in items[1:]} <= {"normal", "low", "high"}
