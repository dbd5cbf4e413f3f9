"""The front doors under abuse: no 5xx, nothing taken down, no private data in a log line.

The whole abuse set of the hardening issue runs against the four services as real
processes; valid DMs go in before, during and after it. Afterwards every service is
healthy and ready, every valid DM is in the queue exactly once, nothing accepted was
dead-lettered, and no service logged the marker text or the card number it was sent.
"""

import base64
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.ingest.meta import sign
from tests.stack import META_APP_SECRET, Stack, eventually

pytestmark = pytest.mark.e2e

MARKER = "quokka-marker-5519"
CARD = "4111 1111 1111 1111"
PRIVATE_TEXT = f"{MARKER} my card is {CARD} exp 09/27 cvv 123, mail ana.marker@example.com"
PAGE = "page-abuse"
ONE_MIB = 1_048_576


def generic(mid: str, contact: str, **extra: Any) -> dict[str, Any]:
    body = {"id": mid, "account_id": PAGE, "contact": {"id": contact}, "text": "Where is my order?"}
    return body | extra


def messenger(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "page",
        "entry": [{"id": PAGE, "time": 1_700_000_000_000, "messaging": events}],
    }


def messenger_text(mid: str, sender: str, text: str) -> dict[str, Any]:
    return {
        "sender": {"id": sender},
        "recipient": {"id": PAGE},
        "timestamp": 1_700_000_000_000,
        "message": {"mid": mid, "text": text},
    }


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def forged_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


class Abuser:
    """Sends abuse; keeps every answer, and the valid DMs it expects in the queue."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.client = stack.client
        self.answers: list[tuple[str, int]] = []
        self.valid: dict[str, str] = {}  # mid -> contact

    async def send(self, what: str, request: Awaitable[httpx.Response]) -> httpx.Response:
        response = await request
        self.answers.append((what, response.status_code))
        return response

    async def webhook(self, what: str, raw: bytes, *, signed: bool = True) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if signed:
            headers["X-Hub-Signature-256"] = sign(raw, META_APP_SECRET)
        url = f"{self.stack.ingest_url}/webhooks/messenger"
        return await self.send(
            what, self.stack.ingest_client.post(url, content=raw, headers=headers)
        )

    async def dm(self, what: str, body: Any = None, *, raw: bytes | None = None) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        url = f"{self.stack.ingest_url}/v1/messages"
        headers = {"content-type": "application/json"}
        return await self.send(
            what, self.stack.ingest_client.post(url, content=content, headers=headers)
        )

    async def api(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.stack.api_url}{path}"
        return await self.send(what, self.client.request(method, url, **kwargs))

    async def valid_dm(self, mid: str) -> None:
        contact = f"c-{mid}"
        response = await self.dm(f"valid {mid}", generic(mid, contact))
        assert response.status_code == 202, response.text
        self.valid[mid] = contact

    async def valid_webhook(self, mid: str) -> None:
        contact = f"psid-{mid}"
        raw = json.dumps(messenger([messenger_text(mid, contact, "Do you ship to Canada?")]))
        response = await self.webhook(f"valid webhook {mid}", raw.encode())
        assert response.status_code == 200, response.text
        self.valid[mid] = contact


async def abuse_ingest(abuser: Abuser, step: Callable[[str], Awaitable[None]]) -> None:
    """The ingest findings: payload limits, validation, strict JSON, private text."""
    # A webhook under the HTTP limit whose bus message passes NATS's max_payload.
    unknown = {"sender": {"id": "psid-big"}, "recipient": {"id": PAGE}, "timestamp": 1,
               "mystery_event": {"blob": "x" * (ONE_MIB - 2_000)}}  # fmt: skip
    await abuser.webhook("oversized unknown event", json.dumps(messenger([unknown])).encode())
    await step("after oversized webhook")
    big_attachment = messenger_text("m-big-att", "psid-att", "photo")
    big_attachment["message"]["attachments"] = [
        {"type": "image", "payload": {"url": "https://x.invalid/" + "y" * (ONE_MIB - 3_000)}}
    ]
    await abuser.webhook("oversized attachment", json.dumps(messenger([big_attachment])).encode())
    await abuser.dm(
        "long id and big attachment",
        generic(
            "i" * 500, "c-big", attachments=[{"type": "file", "payload": {"b": "z" * 1_000_000}}]
        ),
    )
    await step("after oversized generic")
    await abuser.dm(
        "huge followers", generic("m-f", "c-f") | {"contact": {"id": "c-f", "followers": 2**70}}
    )
    await abuser.dm("year 1", generic("m-y1", "c-y1", timestamp="0001-01-01T00:00:00Z"))
    await abuser.dm("year 9999", generic("m-y9", "c-y9", timestamp="9999-12-31T23:59:59Z"))
    await abuser.dm(
        "deep attachment payload",
        generic("m-deep", "c-deep", attachments=[{"type": "file", "payload": nested(200)}]),
    )
    await abuser.dm(
        "deep json",
        raw=b'{"id": "m-dj", "contact": {"id": "c"}, "x": ' + b"[" * 900 + b"]" * 900 + b"}",
    )
    await abuser.dm("growing numbers", raw=("[" + ",".join(["1E9"] * 200_000) + "]").encode())
    await abuser.dm(
        "NaN followers",
        raw=b'{"id": "m-nan", "contact": {"id": "c-nan", "followers": NaN}, "text": "hi"}',
    )
    await abuser.dm(
        "lone surrogate", raw=b'{"id": "m-sur", "contact": {"id": "c-s"}, "text": "\\ud800"}'
    )
    await abuser.dm("invalid with private text", {"id": "", "contact": {}, "text": PRIVATE_TEXT})
    await abuser.dm(
        "many long tags",
        generic("m-tags", "c-tags") | {"contact": {"id": "c-t", "tags": ["t" * 10_000] * 50}},
    )
    await abuser.webhook("bad signature", json.dumps(messenger([])).encode(), signed=False)
    await abuser.webhook("not json", b"\xff\xfe{")
    await step("after ingest abuse")


async def abuse_api(abuser: Abuser, step: Callable[[str], Awaitable[None]]) -> None:
    """The api findings: forged cursors, naive times, forged Last-Event-ID, bounds."""
    for cursor in ('[1e999, "2026-01-01T00:00:00+00:00", 1]', "[" * 5000 + "]" * 5000,
                   '[1, "2026-01-01T00:00:00+00:00", 1180591620717411303424]'):  # fmt: skip
        await abuser.api(
            "forged cursor", "GET", "/v1/queue", params={"cursor": forged_cursor(cursor)}
        )
    conversation = (await abuser.stack.queue())[0]["id"]
    path = f"/v1/conversations/{conversation}"
    await abuser.api(
        "naive snooze", "POST", f"{path}/snooze", json={"until": "2030-01-01T00:00:00"}
    )
    await abuser.api("long tags", "POST", f"{path}/tags", json={"add": ["t" * 10_000] * 50})
    await abuser.api("private note too long", "POST", f"{path}/notes",
                     json={"author": "ben", "text": PRIVATE_TEXT * 1_000})  # fmt: skip
    await abuser.api(
        "forged Last-Event-ID", "GET", "/v1/events", headers={"Last-Event-ID": str(2**70)}
    )
    # Under DMDESK_API_AUTH_FAILURE_LIMIT (20/minute): the lock-out, which would shut this
    # test's own client out too, has a test of its own (tests/integration/test_api_limits.py).
    for attempt in range(15):
        await abuser.api(
            "wrong key", "GET", "/v1/queue", headers={"X-API-Key": f"dmd_wrong{attempt}"}
        )
    await step("after api abuse")


async def test_the_abuse_set_takes_nothing_down_and_loses_no_valid_dm(stack: Stack) -> None:
    abuser = Abuser(stack)
    for index in range(3):
        await abuser.valid_dm(f"before-{index}")
    await abuser.valid_webhook("before-hook")

    async def step(name: str) -> None:
        await abuser.valid_dm(name.replace(" ", "-"))

    await abuse_ingest(abuser, step)
    await abuse_api(abuser, step)
    for index in range(3):
        await abuser.valid_dm(f"after-{index}")
    await abuser.valid_webhook("after-hook")

    server_errors = [(what, code) for what, code in abuser.answers if code >= 500]
    assert server_errors == [], server_errors

    for name, service in stack.services.items():
        for probe in ("/healthz", "/readyz"):
            response = await stack.client.get(f"{service.url}{probe}")
            assert response.status_code == 200, (name, probe, response.text)

    def by_contact(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            found.setdefault(item["contact"]["platform_id"], []).append(item)
        return found

    expected = set(abuser.valid.values())
    queued = await eventually(
        stack.full_queue,
        lambda items: expected <= set(by_contact(items)),
        timeout=60,
    )
    grouped = by_contact(queued)
    assert {contact: len(grouped[contact]) for contact in expected} == dict.fromkeys(expected, 1)
    for mid, contact in abuser.valid.items():
        detail = await stack.conversation(grouped[contact][0]["id"])
        assert [m["mid"] for m in detail["messages"]].count(mid) == 1, (mid, detail["messages"])

    letters = (await stack.client.get(f"{stack.api_url}/v1/dead-letters")).json()
    assert letters == [], letters

    logs = stack.logs()
    assert MARKER not in logs
    # Every line's time of day goes first: its microseconds may read "...4111...".
    assert "4111" not in re.sub(r"\d{2}:\d{2}:\d{2}\.\d+", "", logs)
    assert "ana.marker@example.com" not in logs
