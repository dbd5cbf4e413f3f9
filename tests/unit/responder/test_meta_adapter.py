"""The Send API and WhatsApp adapters against a local stub that checks Meta's rules."""

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from services.responder.meta import GraphSendAdapter
from services.responder.window import HUMAN_AGENT, RESPONSE
from shared.events import Author, Channel, ConversationRef, OutboundRequest, OutboundStatus
from shared.settings import Settings
from tests.unit.responder.sendapi_stub import (
    OUTSIDE_WINDOW,
    RATE_LIMIT,
    SendApiStub,
)

TOKENS = {"page-1": "page-token", "ig-1": "ig-token", "phone-1": "wa-token"}


@pytest.fixture
def stub() -> Iterator[SendApiStub]:
    with SendApiStub(TOKENS) as running:
        yield running


@pytest.fixture
async def adapter(stub: SendApiStub) -> AsyncIterator[GraphSendAdapter]:
    settings = Settings(
        graph_api_url=stub.base_url,
        page_access_tokens={k: SecretStr(v) for k, v in TOKENS.items()},
        send_backoff_seconds=0.01,
        send_max_attempts=4,
    )
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    sender = GraphSendAdapter(settings, sleep=no_sleep)
    sender.slept = slept  # type: ignore[attr-defined]
    yield sender
    await sender.aclose()


def request(
    channel: Channel = Channel.MESSENGER,
    account: str = "page-1",
    contact: str = "psid-1",
    author: Author = Author.BOT,
) -> OutboundRequest:
    return OutboundRequest(
        request_id=f"r-{channel.value}-{contact}",
        conversation=ConversationRef(channel=channel, account_id=account, contact_id=contact),
        text="Hello Ana",
        author=author,
        agent_id="agent-7" if author == Author.AGENT else None,
    )


async def test_messenger_response_is_sent_as_meta_documents(
    adapter: GraphSendAdapter, stub: SendApiStub
) -> None:
    result = await adapter.send(request())
    assert result.status == OutboundStatus.SENT
    assert result.mid
    assert result.mid.startswith("m_")
    [call] = stub.calls
    assert call.path == "/v21.0/page-1/messages"
    assert call.query == {"access_token": "page-token"}
    assert call.body == {
        "recipient": {"id": "psid-1"},
        "messaging_type": "RESPONSE",
        "message": {"text": "Hello Ana"},
    }


async def test_human_agent_tag_reaches_the_platform(
    adapter: GraphSendAdapter, stub: SendApiStub
) -> None:
    stub.last_customer_message[("ig-1", "igsid-1")] = datetime.now(UTC) - timedelta(hours=25)
    result = await adapter.send(
        request(Channel.INSTAGRAM, "ig-1", "igsid-1", Author.AGENT), HUMAN_AGENT
    )
    assert result.status == OutboundStatus.SENT
    assert stub.calls[-1].body["messaging_type"] == "MESSAGE_TAG"
    assert stub.calls[-1].body["tag"] == "HUMAN_AGENT"


async def test_whatsapp_cloud_api_call(adapter: GraphSendAdapter, stub: SendApiStub) -> None:
    result = await adapter.send(request(Channel.WHATSAPP, "phone-1", "34600000000"))
    assert result.status == OutboundStatus.SENT
    assert result.mid
    assert result.mid.startswith("wamid.")
    [call] = stub.calls
    assert call.path == "/v21.0/phone-1/messages"
    assert call.headers["Authorization"] == "Bearer wa-token"
    assert call.body["messaging_product"] == "whatsapp"
    assert call.body["to"] == "34600000000"
    assert call.body["text"] == {"preview_url": False, "body": "Hello Ana"}


async def test_rate_limit_is_retried_with_backoff_then_succeeds(
    adapter: GraphSendAdapter, stub: SendApiStub
) -> None:
    stub.fail_next("psid-1", 400, RATE_LIMIT, times=2)
    result = await adapter.send(request())
    assert result.status == OutboundStatus.SENT
    assert result.attempts == 3
    assert adapter.slept == [0.01, 0.02]  # type: ignore[attr-defined]


async def test_server_errors_are_retried(adapter: GraphSendAdapter, stub: SendApiStub) -> None:
    stub.fail_next(
        "psid-1",
        500,
        {
            "error": {
                "message": "An unexpected error has occurred.",
                "type": "OAuthException",
                "code": 2,
                "is_transient": True,
            }
        },
    )
    assert (await adapter.send(request())).status == OutboundStatus.SENT


async def test_rate_limit_that_never_ends_fails_retryable_after_the_last_attempt(
    adapter: GraphSendAdapter, stub: SendApiStub
) -> None:
    stub.fail_next("psid-1", 400, RATE_LIMIT, times=10)
    result = await adapter.send(request())
    assert result.status == OutboundStatus.FAILED
    assert result.attempts == 4
    assert result.error is not None
    assert result.error.code == 613
    assert result.error.retryable


async def test_permanent_error_fails_at_once_with_meta_reason(
    adapter: GraphSendAdapter, stub: SendApiStub
) -> None:
    result = await adapter.send(request(contact="unknown-user"))
    assert result.status == OutboundStatus.FAILED
    assert result.attempts == 1
    assert result.error is not None
    assert (result.error.code, result.error.type, result.error.message) == (
        100,
        "FacebookApiException",
        "Invalid parameter",
    )
    assert not result.error.retryable


async def test_outside_window_error_keeps_code_and_subcode(
    adapter: GraphSendAdapter, stub: SendApiStub
) -> None:
    stub.last_customer_message[("page-1", "psid-1")] = datetime.now(UTC) - timedelta(hours=30)
    result = await adapter.send(request(), RESPONSE)
    assert result.error is not None
    assert (result.error.code, result.error.subcode) == (10, 2018278)
    assert result.error.message == OUTSIDE_WINDOW["error"]["message"]


async def test_wrong_token_is_a_permanent_190(adapter: GraphSendAdapter, stub: SendApiStub) -> None:
    stub.tokens["page-1"] = "rotated"
    result = await adapter.send(request())
    assert result.error is not None
    assert result.error.code == 190
    assert not result.error.retryable


async def test_account_without_token_fails_with_a_clear_reason(
    adapter: GraphSendAdapter, stub: SendApiStub
) -> None:
    result = await adapter.send(request(account="page-unknown"))
    assert result.status == OutboundStatus.FAILED
    assert result.error is not None
    assert "no access token" in result.error.message
    assert stub.calls == []


async def test_generic_channel_goes_to_the_log_adapter(
    adapter: GraphSendAdapter, stub: SendApiStub
) -> None:
    result = await adapter.send(request(Channel.GENERIC, "default", "c1"))
    assert result.status == OutboundStatus.SENT
    assert stub.calls == []
