"""What ingest lets in: keys, trusted fields, rate limits, and bounds every stage can hold."""

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.events import InboundMessage, RawEvent
from tests.unit.ingest.conftest import Ingest, make_ingest

KEY = "ingest-key"
TRUSTED_KEY = "trusted-ingest-key"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def dm(mid: str = "g-1", **fields: Any) -> dict[str, Any]:
    contact = fields.pop("contact", {})
    return {"id": mid, "contact": {"id": "ana", **contact}, "text": "hello"} | fields


@pytest.fixture
def door() -> Iterator[Ingest]:
    app = make_ingest(
        ingest_api_key_hashes=[digest(KEY)], ingest_trusted_key_hashes=[digest(TRUSTED_KEY)]
    )
    yield app
    app.client.close()


@pytest.fixture
def opened() -> Iterator[Ingest]:
    app = make_ingest(ingest_open=True)
    yield app
    app.client.close()


def post(ingest: Ingest, body: Any, key: str | None = KEY) -> Any:
    headers = {"X-API-Key": key} if key else {}
    return ingest.client.post("/v1/messages", json=body, headers=headers)


def post_raw(ingest: Ingest, raw: bytes | str, key: str | None = KEY) -> Any:
    headers = {"Content-Type": "application/json"} | ({"X-API-Key": key} if key else {})
    content = raw.encode() if isinstance(raw, str) else raw
    return ingest.client.post("/v1/messages", content=content, headers=headers)


def stored_message(ingest: Ingest) -> InboundMessage:
    event = ingest.sink.stored[-1].event
    assert isinstance(event, InboundMessage)
    return event


# Closed by default; trusted fields ------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"contact": {"vip": True}}, "contact.vip"),
        ({"contact": {"followers": 10}}, "contact.followers"),
        ({"contact": {"tags": ["gold"]}}, "contact.tags"),
        ({"timestamp": "2020-01-01T00:00:00Z"}, "timestamp"),
        ({"timestamp": "0001-01-01T00:00:00Z"}, "timestamp"),
    ],
)
def test_fields_only_a_trusted_system_sets_need_a_trusted_key(
    door: Ingest, fields: dict[str, Any], named: str
) -> None:
    refused = post(door, dm(**fields))
    assert refused.status_code == 403, refused.text
    assert refused.json()["reason"] == "untrusted_fields"
    assert named in refused.json()["field"]
    assert door.sink.stored == []


def test_a_trusted_key_sets_vip_followers_tags_and_a_past_timestamp(door: Ingest) -> None:
    moment = datetime.now(UTC) - timedelta(days=2)
    body = dm(
        contact={"vip": True, "followers": 10, "tags": ["gold"]}, timestamp=moment.isoformat()
    )
    response = post(door, body, key=TRUSTED_KEY)
    assert response.status_code == 202, response.text
    message = stored_message(door)
    assert message.contact.vip
    assert message.platform_ts == moment


def test_an_open_endpoint_still_refuses_the_trusted_fields(opened: Ingest) -> None:
    assert post(opened, dm(contact={"vip": True}), key=None).status_code == 403
    assert post(opened, dm(), key=None).status_code == 202


def test_a_timestamp_in_year_one_or_9999_starts_the_clocks_at_receipt(door: Ingest) -> None:
    before = datetime.now(UTC)
    assert post(door, dm("g-9999", timestamp="9999-12-31T23:59:59Z")).status_code == 202
    assert before <= stored_message(door).platform_ts <= datetime.now(UTC)
    old = post(door, dm("g-0001", timestamp="0001-01-01T00:00:00Z"), key=TRUSTED_KEY)
    assert old.status_code == 202, old.text
    assert before <= stored_message(door).platform_ts <= datetime.now(UTC)


# Rate limits ----------------------------------------------------------------------


def test_a_source_over_its_rate_gets_429_with_retry_after() -> None:
    app = make_ingest(ingest_open=True, ingest_rate_limit="3/hour")
    try:
        codes = [post(app, dm(f"g-{i}"), key=None).status_code for i in range(3)]
        assert codes == [202, 202, 202]
        limited = post(app, dm("g-4"), key=None)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert len(app.sink.stored) == 3
    finally:
        app.client.close()


def test_signed_webhooks_are_never_rate_limited() -> None:
    app = make_ingest(ingest_open=True, ingest_rate_limit="1/hour")
    body = {"object": "page", "entry": []}
    try:
        from shared.events import Channel

        assert all(app.post_webhook(Channel.MESSENGER, body).status_code == 200 for _ in range(5))
    finally:
        app.client.close()


# Bounds ---------------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (dm(contact={"followers": 2**70}), "contact.followers"),
        (dm(contact={"tags": ["t" * 10_000]}), "contact.tags.0"),
        (dm(contact={"tags": [f"t{i}" for i in range(50)]}), "contact.tags"),
        (dm(attachments=[{"type": "file", "payload": nested(200)}]), "attachments.0.payload"),
        (dm(mid="m" * 600), "id"),
    ],
)
def test_values_no_stage_can_hold_are_422_naming_the_field(
    door: Ingest, body: dict[str, Any], field: str
) -> None:
    response = post(door, body, key=TRUSTED_KEY)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert door.sink.stored == []


@pytest.mark.parametrize(
    "raw",
    [
        '{"id": "g", "contact": {"id": "a", "followers": NaN}, "text": "hi"}',
        '{"id": "g", "contact": {"id": "a", "followers": Infinity}, "text": "hi"}',
        '{"id": "g", "contact": {"id": "a"}, "text": "\\ud800 lone"}',
        "[" * 300 + "]" * 300,
        '{"id": "g", "contact": {"id": "a"}, "text": "x", "attachments": '
        + "[" * 900
        + "]" * 900
        + "}",
        b'{"id": "g", "contact": {"id": "a"}, "text": "\xff\xfe"}',
    ],
)
def test_non_strict_json_is_400_never_500(door: Ingest, raw: str | bytes) -> None:
    response = post_raw(door, raw)
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "invalid_body"
    assert door.sink.stored == []


def test_a_refusal_never_echoes_what_was_sent(door: Ingest) -> None:
    marker = "MARKER-4111111111111111"
    body = dm(text=marker, contact={"followers": -1, "name": marker})
    response = post(door, body, key=TRUSTED_KEY)
    assert response.status_code == 422
    assert marker not in response.text


@pytest.mark.parametrize("depth", [40, 256, 900])
def test_a_deeply_nested_webhook_event_is_never_a_500(depth: int) -> None:
    app = make_ingest()
    item = {
        "sender": {"id": "psid"},
        "recipient": {"id": "page"},
        "timestamp": 1_700_000_000_000,
        "mystery": nested(depth),
    }
    body = {"object": "page", "entry": [{"id": "page", "time": 1, "messaging": [item]}]}
    try:
        from shared.events import Channel

        response = app.post_webhook(Channel.MESSENGER, json.dumps(body).encode())
        assert response.status_code in {200, 400}, response.text
        if response.status_code == 200:
            event = app.sink.stored[-1].event
            assert isinstance(event, RawEvent)
            assert event.body == {}
    finally:
        app.client.close()
