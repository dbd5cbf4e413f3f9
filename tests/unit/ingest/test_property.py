"""Whatever arrives, the webhooks never answer 500 and never publish an unsigned body."""

import json
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
