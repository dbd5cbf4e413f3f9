"""The webhook and generic routes over HTTP, with a fake sink in place of JetStream."""

import hashlib
import json
from typing import Any

from services.ingest.meta import sign
from shared.events import Channel, InboundMessage
from tests.unit.ingest.conftest import (
    APP_SECRET,
    OTHER_APP_SECRET,
    OWN_FIXTURES,
    VERIFY_TOKEN,
    Ingest,
    load_body,
    make_ingest,
)


def body(name: str) -> dict[str, Any]:
    return load_body(OWN_FIXTURES / f"{name}.json")


def test_signed_webhook_is_stored_and_answered_200(ingest: Ingest) -> None:
    response = ingest.post_webhook(Channel.MESSENGER, body("messenger_batch"))
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 4, "duplicates": 0}
    assert [e.kind for e in ingest.sink.stored] == ["message", "message", "message", "read"]
    assert ingest.metric("dmdesk_ingest_events_total", channel="messenger", kind="message") == 0
    # Counting received events is the sink's job once stored; the fake does not count.


def test_webhook_signed_by_a_second_app_is_accepted(ingest: Ingest) -> None:
    response = ingest.post_webhook(Channel.WHATSAPP, body("whatsapp_text"), secret=OTHER_APP_SECRET)
    assert response.status_code == 200


def test_missing_signature_is_401_and_nothing_is_published(ingest: Ingest) -> None:
    response = ingest.post_webhook(Channel.MESSENGER, body("messenger_text"), secret=None)
    assert response.status_code == 401
    assert response.json()["reason"] == "signature_missing"
    assert response.json()["field"] == "X-Hub-Signature-256"
    assert ingest.sink.stored == []
    assert ingest.metric("dmdesk_ingest_rejected_total", reason="signature_missing") == 1


def test_wrong_signature_is_403_and_nothing_is_published(ingest: Ingest) -> None:
    response = ingest.post_webhook(Channel.MESSENGER, body("messenger_text"), secret="not-it")
    assert response.status_code == 403
    assert response.json()["reason"] == "signature_mismatch"
    assert ingest.sink.stored == []
    assert ingest.metric("dmdesk_ingest_rejected_total", reason="signature_mismatch") == 1


def test_without_a_configured_secret_every_webhook_is_refused() -> None:
    app = make_ingest(meta_app_secret="", meta_app_secrets={})
    try:
        response = app.post_webhook(Channel.MESSENGER, body("messenger_text"), secret="anything")
        assert response.status_code == 403
        assert response.json()["reason"] == "app_secret_not_configured"
        assert app.sink.stored == []
    finally:
        app.client.close()


def test_body_over_the_limit_is_413_before_anything_else(ingest: Ingest) -> None:
    huge = json.dumps({"object": "page", "entry": [], "pad": "x" * 70_000}).encode()
    response = ingest.post_webhook(Channel.MESSENGER, huge)
    assert response.status_code == 413
    assert response.json()["reason"] == "body_too_large"
    assert ingest.sink.stored == []


def test_malformed_json_is_400_with_the_reason(ingest: Ingest) -> None:
    response = ingest.post_webhook(Channel.MESSENGER, b'{"object": "page", "entry": [')
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid_body"
    assert "malformed JSON" in response.json()["detail"]


def test_a_body_for_another_channel_is_400_naming_the_field(ingest: Ingest) -> None:
    response = ingest.post_webhook(Channel.MESSENGER, body("whatsapp_text"))
    assert response.status_code == 400
    assert response.json()["field"] == "object"
    assert ingest.sink.stored == []


def test_nats_down_is_503_so_meta_retries(ingest: Ingest) -> None:
    ingest.sink.down = True
    response = ingest.post_webhook(Channel.INSTAGRAM, body("instagram_text"))
    assert response.status_code == 503
    assert response.json()["reason"] == "bus_unavailable"


def test_unknown_event_kinds_are_accepted_as_raw_events(ingest: Ingest) -> None:
    response = ingest.post_webhook(Channel.MESSENGER, body("messenger_optin_unknown"))
    assert response.status_code == 200
    [raw] = ingest.sink.stored
    assert raw.kind == "raw"


def test_handshake_echoes_the_challenge(ingest: Ingest) -> None:
    for channel in ("messenger", "instagram", "whatsapp"):
        response = ingest.client.get(
            f"/webhooks/{channel}",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY_TOKEN,
                "hub.challenge": "1158201444",
            },
        )
        assert response.status_code == 200
        assert response.text == "1158201444"


def test_handshake_with_a_wrong_token_is_403(ingest: Ingest) -> None:
    response = ingest.client.get(
        "/webhooks/messenger",
        params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
    )
    assert response.status_code == 403
    assert ingest.metric("dmdesk_ingest_rejected_total", reason="handshake_refused") == 1


def test_first_dm_from_a_stranger_is_a_message_request(ingest: Ingest) -> None:
    ingest.post_webhook(Channel.MESSENGER, body("messenger_text"))
    ingest.post_webhook(Channel.MESSENGER, body("messenger_quick_reply"))
    first, second = (e.event for e in ingest.sink.stored)
    assert isinstance(first, InboundMessage)
    assert isinstance(second, InboundMessage)
    assert first.is_request
    assert second.is_request, "still a request: the page has not answered yet"


def test_dm_after_the_page_wrote_is_not_a_request(ingest: Ingest) -> None:
    ingest.post_webhook(Channel.MESSENGER, body("messenger_echo_text"))
    ingest.post_webhook(Channel.MESSENGER, body("messenger_text"))
    _echo, dm = (e.event for e in ingest.sink.stored)
    assert isinstance(dm, InboundMessage)
    assert not dm.is_request


def test_whatsapp_send_status_makes_the_contact_known(ingest: Ingest) -> None:
    ingest.post_webhook(Channel.WHATSAPP, body("whatsapp_status_delivered"))
    ingest.post_webhook(Channel.WHATSAPP, body("whatsapp_text"))
    dm = ingest.sink.stored[-1].event
    assert isinstance(dm, InboundMessage)
    assert not dm.is_request


def generic(mid: str = "g-1") -> dict[str, Any]:
    return {"id": mid, "contact": {"id": "ana"}, "text": "hello"}


def test_generic_endpoint_is_closed_without_a_key_unless_opened(ingest: Ingest) -> None:
    assert ingest.client.post("/v1/messages", json=generic()).status_code == 401
    opened = make_ingest(ingest_open=True)
    try:
        response = opened.client.post("/v1/messages", json=[generic("g-1"), generic("g-2")])
        assert response.status_code == 202
        assert response.json() == {"accepted": 2, "duplicates": 0}
        again = opened.client.post("/v1/messages", json=generic("g-1"))
        assert again.json() == {"accepted": 1, "duplicates": 1}
    finally:
        opened.client.close()


def test_generic_endpoint_reports_the_bad_field() -> None:
    ingest = make_ingest(ingest_open=True)
    response = ingest.client.post("/v1/messages", json={"id": "g", "contact": {"id": "a"}})
    assert response.status_code == 422
    assert "text or at least one attachment" in response.text


def test_generic_endpoint_needs_a_configured_key() -> None:
    key = "ingest-key-1"
    app = make_ingest(ingest_api_key_hashes=[hashlib.sha256(key.encode()).hexdigest()])
    try:
        assert app.client.post("/v1/messages", json=generic()).status_code == 401
        wrong = app.client.post("/v1/messages", json=generic(), headers={"X-API-Key": "other"})
        assert wrong.status_code == 403
        ok = app.client.post("/v1/messages", json=generic(), headers={"X-API-Key": key})
        assert ok.status_code == 202
        bearer = app.client.post(
            "/v1/messages", json=generic("g-2"), headers={"Authorization": f"Bearer {key}"}
        )
        assert bearer.status_code == 202
        assert app.metric("dmdesk_ingest_rejected_total", reason="api_key_missing") == 1
        assert app.metric("dmdesk_ingest_rejected_total", reason="api_key_invalid") == 1
    finally:
        app.client.close()


def test_generic_endpoint_is_503_when_nats_is_down() -> None:
    ingest = make_ingest(ingest_open=True)
    ingest.sink.down = True
    assert ingest.client.post("/v1/messages", json=generic()).status_code == 503


def test_webhook_signature_covers_the_exact_bytes(ingest: Ingest) -> None:
    raw = json.dumps(body("messenger_text"), indent=4).encode()
    compact_signature = sign(json.dumps(body("messenger_text")).encode(), APP_SECRET)
    refused = ingest.post_webhook(Channel.MESSENGER, raw, signature=compact_signature)
    assert refused.status_code == 403
    assert ingest.post_webhook(Channel.MESSENGER, raw).status_code == 200
