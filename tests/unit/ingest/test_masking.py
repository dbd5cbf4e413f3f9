"""Card data never reaches the stream in clear; other kinds follow the setting."""

import json
from collections.abc import Iterator

import pytest

from shared.events import Channel, InboundMessage, PrivateInfoKind, RawEvent
from tests.unit.ingest.conftest import Ingest, make_ingest

CARD_TEXTS = {
    "en": "My card is 4111 1111 1111 1111 exp 09/27 cvv 123",
    "es": "Mi tarjeta es 4111111111111111 y el código de seguridad es 123",
    "de": "Meine Karte 4111-1111-1111-1111, Prüfziffer 123",
    "fr": "Ma carte 4111 1111 1111 1111 cryptogramme 123",
    "it": "La mia carta 4111111111111111 codice di sicurezza 123",
    "pt": "Meu cartão 4111111111111111 código de segurança: 123",
}
IBAN = "DE89 3704 0044 0532 0130 00"


@pytest.fixture
def opened() -> Iterator[Ingest]:
    app = make_ingest(ingest_open=True)
    yield app
    app.client.close()


def inbound(ingest: Ingest) -> InboundMessage:
    event = ingest.sink.stored[-1].event
    assert isinstance(event, InboundMessage)
    return event


@pytest.mark.parametrize("language", sorted(CARD_TEXTS))
def test_a_card_number_and_its_security_code_are_masked_before_publishing(
    opened: Ingest, language: str
) -> None:
    body = {"id": f"g-{language}", "contact": {"id": "ana"}, "text": CARD_TEXTS[language]}
    assert opened.client.post("/v1/messages", json=body).status_code == 202
    message = inbound(opened)
    assert message.text is not None
    assert "4111" not in message.text
    assert "\u2022\u2022\u2022\u2022 1111" in message.text  # the last four stay
    assert "123" not in message.text
    assert message.masked == [PrivateInfoKind.CARD]


def test_a_card_in_a_webhook_dm_is_masked(opened: Ingest) -> None:
    item = {
        "sender": {"id": "psid"},
        "recipient": {"id": "page"},
        "timestamp": 1_700_000_000_000,
        "message": {"mid": "m_card", "text": CARD_TEXTS["en"]},
    }
    body = {"object": "page", "entry": [{"id": "page", "time": 1, "messaging": [item]}]}
    assert opened.post_webhook(Channel.MESSENGER, body).status_code == 200
    assert inbound(opened).masked == [PrivateInfoKind.CARD]
    assert "1111 1111 1111 1111" not in (inbound(opened).text or "")


def test_a_card_in_an_unknown_event_kept_raw_is_masked(opened: Ingest) -> None:
    item = {
        "sender": {"id": "psid"},
        "recipient": {"id": "page"},
        "timestamp": 1_700_000_000_000,
        "mystery": {"note": CARD_TEXTS["en"]},
    }
    body = {"object": "page", "entry": [{"id": "page", "time": 1, "messaging": [item]}]}
    assert opened.post_webhook(Channel.MESSENGER, body).status_code == 200
    event = opened.sink.stored[-1].event
    assert isinstance(event, RawEvent)
    assert "4111 1111 1111 1111" not in json.dumps(event.body)


def test_an_iban_is_kept_and_flagged_unless_the_setting_masks_it(opened: Ingest) -> None:
    text = f"refund to {IBAN} please"
    opened.client.post("/v1/messages", json={"id": "g-1", "contact": {"id": "a"}, "text": text})
    assert inbound(opened).text == text
    assert inbound(opened).masked == []
    masking = make_ingest(ingest_open=True, ingest_masked_kinds=["iban"])
    try:
        body = {"id": "g-2", "contact": {"id": "a"}, "text": text}
        assert masking.client.post("/v1/messages", json=body).status_code == 202
        assert IBAN not in (inbound(masking).text or "")
        assert inbound(masking).masked == [PrivateInfoKind.IBAN]
    finally:
        masking.client.close()


def test_a_cvv_without_a_card_is_not_masked(opened: Ingest) -> None:
    text = "my order 12345, the cvv 123 was refused"
    opened.client.post("/v1/messages", json={"id": "g-1", "contact": {"id": "a"}, "text": text})
    assert inbound(opened).text == text
