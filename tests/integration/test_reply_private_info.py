"""A reply with a card number or an IBAN waits for the agent's confirmation (issue #16, part 6)."""

from collections.abc import Callable

import nats

from shared.events import OutboundRequest
from shared.models import Scope
from shared.settings import Settings
from tests.integration.test_agent_actions import Api
from tests.integration.test_agent_actions import api as api  # noqa: PLC0414  # the fixture

CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"


async def _published(settings: Settings) -> list[OutboundRequest]:
    connection = await nats.connect(settings.nats_url)
    try:
        subscription = await connection.jetstream().pull_subscribe(
            "dm.outbound.requested", stream="DMDESK"
        )
        try:
            messages = await subscription.fetch(10, timeout=1)
        except TimeoutError:  # nothing was published
            return []
    finally:
        await connection.close()
    return [OutboundRequest.model_validate_json(m.data) for m in messages]


async def test_a_reply_with_a_card_or_iban_is_refused_with_the_kinds_and_not_sent(
    api: Api, settings_factory: Callable[..., Settings]
) -> None:
    conversation = await api.seed("ana")
    text = f"Pay with {CARD} or to {IBAN}, mail ana@example.com"
    async with api.client(Scope.AGENT) as client:
        refused = await client.post(
            f"/v1/conversations/{conversation}/reply", json={"agent": "ben", "text": text}
        )
        detail = (await client.get(f"/v1/conversations/{conversation}")).json()
    assert refused.status_code == 409
    assert refused.json()["private_info"] == ["card", "iban"]
    assert "4111" not in refused.text, "never the values"
    assert [m for m in detail["messages"] if m["direction"] == "outbound"] == []
    assert await _published(settings_factory()) == []


async def test_a_confirmed_reply_is_sent_with_the_warning(
    api: Api, settings_factory: Callable[..., Settings]
) -> None:
    conversation = await api.seed("ana")
    body = {"agent": "ben", "text": f"Your card {CARD} is blocked; write to ana@example.com"}
    async with api.client(Scope.AGENT) as client:
        partly = await client.post(
            f"/v1/conversations/{conversation}/reply",
            json=body | {"confirm_private_info": ["iban"]},
        )
        confirmed = await client.post(
            f"/v1/conversations/{conversation}/reply",
            json=body | {"confirm_private_info": ["card"]},
        )
    assert partly.status_code == 409, "confirming another kind confirms nothing"
    assert confirmed.status_code == 202
    assert confirmed.json()["private_info"] == ["card", "email"]
    assert [r.request_id for r in await _published(settings_factory())] == [
        confirmed.json()["request_id"]
    ]


async def test_the_confirmed_retry_of_a_refused_request_with_the_same_key_is_sent_once(
    api: Api, settings_factory: Callable[..., Settings]
) -> None:
    conversation = await api.seed("ana")
    url = f"/v1/conversations/{conversation}/reply"
    body = {"agent": "ben", "text": f"Transfer to {IBAN}"}
    key = {"Idempotency-Key": "reply-1"}
    async with api.client(Scope.AGENT) as client:
        refused = await client.post(url, json=body, headers=key)
        again = await client.post(url, json=body, headers=key)
        confirmed = await client.post(
            url, json=body | {"confirm_private_info": ["iban"]}, headers=key
        )
        retried = await client.post(
            url, json=body | {"confirm_private_info": ["iban"]}, headers=key
        )
    assert (refused.status_code, again.status_code) == (409, 409), "a refusal is not stored"
    assert again.json()["private_info"] == ["iban"]
    assert (confirmed.status_code, retried.status_code) == (202, 202)
    assert confirmed.json() == retried.json()
    assert [r.request_id for r in await _published(settings_factory())] == [
        confirmed.json()["request_id"]
    ]


async def test_emails_and_phones_only_warn(api: Api) -> None:
    conversation = await api.seed("ana")
    async with api.client(Scope.AGENT) as client:
        reply = await client.post(
            f"/v1/conversations/{conversation}/reply",
            json={"agent": "ben", "text": "Mail us at help@shop.example or call +34 910 000 000"},
        )
    assert reply.status_code == 202
    assert reply.json()["private_info"] == ["email", "phone"]
