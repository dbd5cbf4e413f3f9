"""Whatever arrives, the webhooks never answer 500 and never publish an unsigned body."""

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.meta import sign
from shared.events import Channel
from tests.unit.ingest.conftest import (
    APP_SECRET,
    OWN_FIXTURES,
    SHARED_FIXTURES,
    fixture_channel,
    load_body,
    make_ingest,
)

REAL_BODIES: list[tuple[Channel, dict[str, Any]]] = [
    (fixture_channel(path), load_body(path))
    for folder in (OWN_FIXTURES, SHARED_FIXTURES)
    if folder.exists()
    for path in sorted(Path(folder).glob("*.json"))
    if not path.name.startswith("sendapi")
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
channels = st.sampled_from([Channel.MESSENGER, Channel.INSTAGRAM, Channel.WHATSAPP])
FIELD_NAMES = st.sampled_from(
    [
        "object",
        "entry",
        "id",
        "time",
        "messaging",
        "changes",
        "value",
        "message",
        "mid",
        "sender",
        "recipient",
        "timestamp",
        "text",
        "attachments",
        "payload",
        "statuses",
        "messages",
        "metadata",
        "phone_number_id",
        "from",
        "type",
        "watermark",
        "reaction",
    ]
)


@st.composite
def mutated_real_bodies(draw: st.DrawFn) -> tuple[Channel, Any]:
    """A real fixture with a few values replaced, keys removed or keys added."""
    channel, original = draw(st.sampled_from(REAL_BODIES))
    document: Any = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 4))):
        containers: list[Any] = []
        stack = [document]
        while stack:
            node = stack.pop()
            if isinstance(node, dict | list):
                containers.append(node)
                stack += list(node.values() if isinstance(node, dict) else node)
        target = draw(st.sampled_from(containers))
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)))
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                target[key] = draw(json_values)
            elif action == "delete":
                del target[key]
            else:
                target[draw(FIELD_NAMES)] = draw(json_values)
        elif isinstance(target, list) and target:
            target[draw(st.integers(0, len(target) - 1))] = draw(json_values)
    return channel, document


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(channel=channels, document=json_values)
def test_arbitrary_signed_json_is_never_a_500(channel: Channel, document: Any) -> None:
    ingest = make_ingest()
    try:
        response = ingest.post_webhook(channel, json.dumps(document).encode())
        assert response.status_code in {200, 400}, response.text
    finally:
        ingest.client.close()


@PROPERTY
@given(mutated=mutated_real_bodies())
def test_mutated_real_payloads_are_never_a_500(mutated: tuple[Channel, Any]) -> None:
    channel, document = mutated
    ingest = make_ingest()
    try:
        response = ingest.post_webhook(channel, json.dumps(document).encode())
        assert response.status_code in {200, 400}, response.text
        if response.status_code == 400:
            assert ingest.sink.stored == []
            assert response.json()["detail"]
    finally:
        ingest.client.close()


@PROPERTY
@given(
    mutated=mutated_real_bodies(),
    signature=st.one_of(
        st.none(),
        st.text(max_size=80),
        st.builds(lambda s: sign(b"other body", s), st.text(min_size=1, max_size=10)),
        st.just("sha256=" + "0" * 64),
    ),
)
def test_unsigned_or_wrongly_signed_bodies_publish_nothing(
    mutated: tuple[Channel, Any], signature: str | None
) -> None:
    channel, document = mutated
    raw = json.dumps(document).encode()
    ingest = make_ingest()
    try:
        if signature is None:
            response = ingest.post_webhook(channel, raw, secret=None)
        else:
            # httpx sends header values as ASCII; anything else cannot reach the app.
            header = signature.encode("ascii", "replace").decode("ascii").strip()
            if header == sign(raw, APP_SECRET):
                return
            response = ingest.post_webhook(channel, raw, signature=header)
        assert response.status_code in {401, 403}, response.text
        assert ingest.sink.stored == []
    finally:
        ingest.client.close()


@PROPERTY
@given(raw=st.binary(max_size=300))
def test_arbitrary_signed_bytes_are_never_a_500(raw: bytes) -> None:
    ingest = make_ingest()
    try:
        response = ingest.post_webhook(Channel.MESSENGER, raw)
        assert response.status_code in {200, 400}, response.text
    finally:
        ingest.client.close()


# Hostile values: what an attacker sends, beside what a platform does. ---------------


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


hostile_leaves = (
    st.integers()  # unbounded: 2**70 and beyond
    | st.floats()  # NaN and Infinity, once encoded leniently
    | st.sampled_from([1e9, 1e300, -0.0, 2**53, 2**63, -(2**64)])
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)  # lone surrogates
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1970-01-01T00:00:00",
            "2999-01-01T00:00:00+14:00",
            "x" * 5000,
        ]
    )
    | st.integers(30, 400).map(nested)
)
hostile_values = st.recursive(
    hostile_leaves,
    lambda children: (
        st.lists(children, max_size=25)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
HOSTILE = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
GENERIC_PATHS = [
    ("id",),
    ("account_id",),
    ("text",),
    ("timestamp",),
    ("contact", "id"),
    ("contact", "name"),
    ("contact", "tags"),
    ("contact", "vip"),
    ("contact", "followers"),
    ("attachments",),
    ("attachments", 0, "type"),
    ("attachments", 0, "url"),
    ("attachments", 0, "payload"),
    ("attachments", 0, "payload", "nested"),
]


def lenient_json(document: Any) -> bytes:
    """JSON as a careless client writes it: NaN, Infinity and lone surrogates included."""
    return json.dumps(document, allow_nan=True, ensure_ascii=True).encode()


def assert_projectable(ingest: Any) -> None:
    """Everything stored re-encodes, fits one bus message and holds bounded values."""
    from services.ingest.publisher import bus_size
    from shared.events import EARLIEST_MOMENT, MAX_COUNT, InboundMessage, RawEvent, json_depth

    for normalised in ingest.sink.stored:
        event = normalised.event
        encoded = event.model_dump_json()
        assert type(event).model_validate_json(encoded) == event
        assert bus_size(normalised) <= ingest.sink.room()
        if isinstance(event, InboundMessage):
            assert EARLIEST_MOMENT <= event.platform_ts <= event.received_at + timedelta(minutes=5)
            assert event.contact.followers is None or event.contact.followers <= MAX_COUNT
            for attachment in event.attachments:
                assert json_depth(attachment.payload) <= 32
        if isinstance(event, RawEvent):
            assert json_depth(event.body) <= 32


@HOSTILE
@given(
    edits=st.lists(st.tuples(st.sampled_from(GENERIC_PATHS), hostile_values), max_size=4),
    trusted=st.booleans(),
    max_payload=st.sampled_from([4_000, 1_048_576]),
)
def test_hostile_generic_dms_are_refused_with_a_4xx_or_stored_projectable(
    edits: list[tuple[tuple[Any, ...], Any]], trusted: bool, max_payload: int
) -> None:
    key = "property-key"
    digest = hashlib.sha256(key.encode()).hexdigest()
    hashes = {"ingest_trusted_key_hashes" if trusted else "ingest_api_key_hashes": [digest]}
    ingest = make_ingest(
        ingest_max_body_bytes=1_048_576, ingest_rate_limit="1000000/second", **hashes
    )
    ingest.sink.max_payload = max_payload
    document: dict[str, Any] = {
        "id": "g-1",
        "contact": {"id": "ana"},
        "text": "hello",
        "attachments": [{"type": "file", "payload": {}}],
    }
    for path, value in edits:
        target: Any = document
        for step in path[:-1]:
            if isinstance(target, dict):
                target = target.get(step)
            elif isinstance(target, list) and isinstance(step, int) and step < len(target):
                target = target[step]
            else:
                target = None
        if isinstance(target, dict):
            target[path[-1]] = value
    try:
        response = ingest.client.post(
            "/v1/messages",
            content=lenient_json(document),
            headers={"Content-Type": "application/json", "X-API-Key": key},
        )
        assert response.status_code in {202, 400, 403, 413, 422}, response.text
        if response.status_code != 202:
            assert ingest.sink.stored == []
            assert response.json()["reason"]
        assert_projectable(ingest)
    finally:
        ingest.client.close()


@HOSTILE
@given(
    mutated=mutated_real_bodies(),
    hostile=st.lists(st.tuples(FIELD_NAMES, hostile_values), max_size=3),
    max_payload=st.sampled_from([4_000, 1_048_576]),
)
def test_hostile_values_in_real_webhooks_are_never_a_5xx_and_stored_projectable(
    mutated: tuple[Channel, Any], hostile: list[tuple[str, Any]], max_payload: int
) -> None:
    channel, document = mutated
    containers: list[dict[str, Any]] = []
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            containers.append(node)
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    for index, (name, value) in enumerate(hostile):
        if containers:
            containers[(index * 7) % len(containers)][name] = value
    ingest = make_ingest(ingest_max_body_bytes=1_048_576)
    ingest.sink.max_payload = max_payload
    try:
        response = ingest.post_webhook(channel, lenient_json(document))
        assert response.status_code in {200, 400}, response.text
        assert_projectable(ingest)
    finally:
        ingest.client.close()
