"""dmdesk's own replies as Meta reports them back, through the four services (issue #16).

The Meta adapter sends through a local stand-in of the Send API (which checks each call
like Meta and answers with a platform id); the test then posts, signed, to ingest's
webhooks what Meta sends next: the echo of that reply (our app's id, the same mid),
a delivery receipt naming the mid and a read receipt (Messenger), or the statuses sent,
delivered, read and failed (WhatsApp). The echo may beat the Send API's answer: the
stand-in holds its answer until the echo is projected. Whatever the order, the
conversation must hold one message per reply, under the platform's id, with the last
status, and the echo of dmdesk's own reply is never a person's response.
"""

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.ingest.meta import sign
from tests.stack import META_APP_SECRET, Stack, eventually, started
from tests.unit.responder.sendapi_stub import SendApiStub

pytestmark = pytest.mark.e2e

PAGE = "107380912345678"
PHONE_NUMBER_ID = "106540352242922"
OUR_APP = "1517924325178312"
TOKENS = {PAGE: "page-token", PHONE_NUMBER_ID: "wa-token"}
BOT_TEXT = "Hello from the bot"
RULES = {
    "templates": {"hello": {"en": BOT_TEXT}},
    "rules": [{"id": "everyone", "then": [{"reply": "hello"}]}],
}


@pytest.fixture
def page_tokens() -> dict[str, str]:
    return TOKENS


@pytest.fixture
async def meta_stack(
    request: pytest.FixtureRequest, meta_stack_factory: Callable[..., Stack]
) -> AsyncIterator[Stack]:
    """The four services sending through the stand-in, knowing dmdesk's app id."""
    running = meta_stack_factory(
        DMDESK_META_APP_IDS=json.dumps([OUR_APP]),
        # A held answer must not look like a timeout (a retry would send twice).
        DMDESK_SEND_TIMEOUT_SECONDS="60",
    )
    async with started(running, request):
        response = await running.client.put(f"{running.api_url}/v1/rules", json=RULES)
        assert response.status_code == 200, response.text
        revision = response.json()["revision"]

        async def switched() -> bool:
            log = running.services["responder"].log_path
            text = log.read_text(errors="replace") if log.exists() else ""
            return any(
                "rule set switched" in line and f'"revision": {revision}' in line
                for line in text.splitlines()
            )

        assert await eventually(switched, bool, timeout=20)
        yield running


def now_ms() -> int:
    return int(time.time() * 1000)


async def post_webhook(stack: Stack, channel: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    response = await stack.ingest_client.post(
        f"{stack.ingest_url}/webhooks/{channel}",
        content=raw,
        headers={
            "X-Hub-Signature-256": sign(raw, META_APP_SECRET),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.text


def messenger(event: dict[str, Any]) -> dict[str, Any]:
    return {"object": "page", "entry": [{"id": PAGE, "time": now_ms(), "messaging": [event]}]}


def customer_dm(psid: str, text: str) -> dict[str, Any]:
    return messenger(
        {
            "sender": {"id": psid},
            "recipient": {"id": PAGE},
            "timestamp": now_ms(),
            "message": {"mid": f"m_{uuid.uuid4().hex}", "text": text},
        }
    )


def echo(psid: str, mid: str, text: str, app_id: str = OUR_APP) -> dict[str, Any]:
    return messenger(
        {
            "sender": {"id": PAGE},
            "recipient": {"id": psid},
            "timestamp": now_ms(),
            "message": {"is_echo": True, "app_id": int(app_id), "mid": mid, "text": text},
        }
    )


def delivery(psid: str, mid: str) -> dict[str, Any]:
    return messenger(
        {
            "sender": {"id": psid},
            "recipient": {"id": PAGE},
            "timestamp": now_ms(),
            "delivery": {"mids": [mid], "watermark": now_ms()},
        }
    )


def read(psid: str) -> dict[str, Any]:
    return messenger(
        {
            "sender": {"id": psid},
            "recipient": {"id": PAGE},
            "timestamp": now_ms(),
            "read": {"watermark": now_ms()},
        }
    )


def whatsapp(value: dict[str, Any]) -> dict[str, Any]:
    metadata = {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID}
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {"messaging_product": "whatsapp", "metadata": metadata, **value},
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def whatsapp_dm(wa_id: str, text: str) -> dict[str, Any]:
    return whatsapp(
        {
            "contacts": [{"profile": {"name": "Lena Vogel"}, "wa_id": wa_id}],
            "messages": [
                {
                    "from": wa_id,
                    "id": f"wamid.{uuid.uuid4().hex}",
                    "timestamp": str(int(time.time())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
    )


def whatsapp_status(wa_id: str, wamid: str, status: str) -> dict[str, Any]:
    update: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": wa_id,
    }
    if status == "failed":
        update["errors"] = [
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {"details": "More than 24 hours have passed."},
            }
        ]
    return whatsapp({"statuses": [update]})


async def conversation_id(stack: Stack, contact: str) -> int:
    items = await eventually(
        stack.full_queue, lambda items: any(i["contact"]["platform_id"] == contact for i in items)
    )
    [item] = [i for i in items if i["contact"]["platform_id"] == contact]
    return int(item["id"])


def outbound(detail: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in detail["messages"] if m["direction"] == "outbound"]


async def detail_when(stack: Stack, conversation: int, done: Any) -> dict[str, Any]:
    return await eventually(lambda: stack.conversation(conversation), done)


async def held_mid(stub: SendApiStub, recipient: str) -> str:
    async def probe() -> list[str]:
        return list(stub.held[recipient])

    [mid] = await eventually(probe, bool, timeout=30)
    return mid


async def sent_mid(stub: SendApiStub, recipient: str, count: int = 1) -> str:
    async def probe() -> list[str]:
        return [c.message_id or "" for c in stub.sent(recipient)]

    mids = await eventually(probe, lambda found: len(found) >= count, timeout=30)
    assert len(mids) == count, mids
    return mids[-1]


def with_mid(detail: dict[str, Any], mid: str) -> dict[str, Any] | None:
    return next((m for m in detail["messages"] if m["mid"] == mid), None)


def human_responses(detail: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in detail["sla"] if c["responder"] == "human"]


async def receipts_make_it_read(stack: Stack, conversation: int, psid: str, mid: str) -> None:
    await post_webhook(stack, "messenger", delivery(psid, mid))
    await detail_when(
        stack, conversation, lambda d: (with_mid(d, mid) or {}).get("status") == "delivered"
    )
    await post_webhook(stack, "messenger", read(psid))
    await detail_when(
        stack, conversation, lambda d: (with_mid(d, mid) or {}).get("status") == "read"
    )


@pytest.mark.parametrize("echo_first", [False, True], ids=["result_then_echo", "echo_then_result"])
async def test_the_bots_reply_is_one_message_with_the_platforms_mid_read_and_no_human_response(
    meta_stack: Stack, send_api: SendApiStub, echo_first: bool
) -> None:
    psid = f"psid-bot-{int(echo_first)}"
    gate = send_api.hold_sends(psid) if echo_first else None
    await post_webhook(meta_stack, "messenger", customer_dm(psid, "Where is my order?"))
    conversation = await conversation_id(meta_stack, psid)
    if gate is not None:
        # Meta echoes the reply before its Send API call has answered dmdesk.
        mid = await held_mid(send_api, psid)
        await post_webhook(meta_stack, "messenger", echo(psid, mid, BOT_TEXT))
        await detail_when(meta_stack, conversation, lambda d: with_mid(d, mid) is not None)
        gate.set()
        assert await sent_mid(send_api, psid) == mid
    else:
        mid = await sent_mid(send_api, psid)
        await detail_when(
            meta_stack,
            conversation,
            lambda d: any(m["author"] == "bot" and m["status"] == "sent" for m in outbound(d)),
        )
        await post_webhook(meta_stack, "messenger", echo(psid, mid, BOT_TEXT))
    await receipts_make_it_read(meta_stack, conversation, psid, mid)

    detail = await detail_when(
        meta_stack, conversation, lambda d: [m["author"] for m in outbound(d)] == ["bot"]
    )
    [bot] = outbound(detail)
    assert (bot["author"], bot["mid"], bot["status"]) == ("bot", mid, "read")
    assert bot["text"] == BOT_TEXT
    assert human_responses(detail) == []
    assert detail["first_response_at"] is None, "the bot's answer is not a person's"
    assert not detail["is_request"], "the page answered: no longer a message request"
    requests = await meta_stack.queue(is_request="true")
    assert conversation not in [item["id"] for item in requests]


@pytest.mark.parametrize("echo_first", [False, True], ids=["result_then_echo", "echo_then_result"])
async def test_an_agents_reply_is_one_message_with_the_platforms_mid_read_and_one_response(
    meta_stack: Stack, send_api: SendApiStub, echo_first: bool
) -> None:
    psid = f"psid-agent-{int(echo_first)}"
    await post_webhook(meta_stack, "messenger", customer_dm(psid, "Where is my order?"))
    conversation = await conversation_id(meta_stack, psid)
    await sent_mid(send_api, psid)  # the bot's answer
    await detail_when(
        meta_stack, conversation, lambda d: [m["status"] for m in outbound(d)] == ["sent"]
    )
    gate = send_api.hold_sends(psid) if echo_first else None
    text = "Hi, Ben here: it leaves the warehouse today."
    response = await meta_stack.client.post(
        f"{meta_stack.api_url}/v1/conversations/{conversation}/reply",
        json={"agent": "ben", "text": text},
    )
    assert response.status_code in (200, 202), response.text
    if gate is not None:
        mid = await held_mid(send_api, psid)
        await post_webhook(meta_stack, "messenger", echo(psid, mid, text))
        await detail_when(meta_stack, conversation, lambda d: with_mid(d, mid) is not None)
        gate.set()
        assert await sent_mid(send_api, psid, count=2) == mid
    else:
        mid = await sent_mid(send_api, psid, count=2)
        await detail_when(
            meta_stack,
            conversation,
            lambda d: any(m["author"] == "agent" and m["status"] == "sent" for m in outbound(d)),
        )
        await post_webhook(meta_stack, "messenger", echo(psid, mid, text))
    await receipts_make_it_read(meta_stack, conversation, psid, mid)

    detail = await detail_when(
        meta_stack,
        conversation,
        lambda d: (
            sorted(m["author"] for m in outbound(d)) == ["agent", "bot"]
            and human_responses(d) != []
        ),
    )
    [agent] = [m for m in outbound(detail) if m["author"] == "agent"]
    assert (agent["mid"], agent["status"], agent["text"]) == (mid, "read", text)
    assert sorted(m["author"] for m in outbound(detail)) == ["agent", "bot"]
    assert len(human_responses(detail)) == 1, detail["sla"]


async def test_a_person_replying_from_metas_inbox_is_a_page_message_and_a_human_response(
    meta_stack: Stack, send_api: SendApiStub
) -> None:
    psid = "psid-inbox"
    await post_webhook(meta_stack, "messenger", customer_dm(psid, "Where is my order?"))
    conversation = await conversation_id(meta_stack, psid)
    await sent_mid(send_api, psid)
    await detail_when(
        meta_stack, conversation, lambda d: [m["status"] for m in outbound(d)] == ["sent"]
    )
    inbox_app = "263902037430900"  # Meta's Page inbox, not dmdesk
    await post_webhook(meta_stack, "messenger", echo(psid, "m_from_inbox", "Sam here", inbox_app))
    detail = await detail_when(meta_stack, conversation, lambda d: human_responses(d) != [])
    assert sorted(m["author"] for m in outbound(detail)) == ["bot", "page"]
    assert len(human_responses(detail)) == 1


@pytest.mark.parametrize(
    "statuses_first", [False, True], ids=["result_then_statuses", "statuses_then_result"]
)
async def test_whatsapp_statuses_update_the_bots_reply_under_its_wamid(
    meta_stack: Stack, send_api: SendApiStub, statuses_first: bool
) -> None:
    wa_id = f"491512345000{int(statuses_first) + 3}"
    gate = send_api.hold_sends(wa_id) if statuses_first else None
    await post_webhook(meta_stack, "whatsapp", whatsapp_dm(wa_id, "Where is my order?"))
    conversation = await conversation_id(meta_stack, wa_id)
    if gate is not None:
        # The platform reports on the message before its Send API call has answered.
        wamid = await held_mid(send_api, wa_id)
        await detail_when(
            meta_stack, conversation, lambda d: [m["status"] for m in outbound(d)] == ["pending"]
        )
        for status in ("sent", "delivered", "read"):
            await post_webhook(meta_stack, "whatsapp", whatsapp_status(wa_id, wamid, status))
        gate.set()
        assert await sent_mid(send_api, wa_id) == wamid
    else:
        wamid = await sent_mid(send_api, wa_id)
        for status in ("sent", "delivered", "read"):
            await post_webhook(meta_stack, "whatsapp", whatsapp_status(wa_id, wamid, status))
            await detail_when(
                meta_stack,
                conversation,
                lambda d, s=status: (with_mid(d, wamid) or {}).get("status") == s,
            )
    assert wamid.startswith("wamid.")
    detail = await detail_when(
        meta_stack, conversation, lambda d: (with_mid(d, wamid) or {}).get("status") == "read"
    )
    [bot] = outbound(detail)
    assert (bot["author"], bot["mid"], bot["status"]) == ("bot", wamid, "read")
    assert human_responses(detail) == []


async def test_whatsapp_failed_status_marks_the_agents_reply_failed_with_metas_error(
    meta_stack: Stack, send_api: SendApiStub
) -> None:
    wa_id = "4915123450002"
    await post_webhook(meta_stack, "whatsapp", whatsapp_dm(wa_id, "Where is my order?"))
    conversation = await conversation_id(meta_stack, wa_id)
    await sent_mid(send_api, wa_id)
    await detail_when(
        meta_stack, conversation, lambda d: [m["status"] for m in outbound(d)] == ["sent"]
    )
    response = await meta_stack.client.post(
        f"{meta_stack.api_url}/v1/conversations/{conversation}/reply",
        json={"agent": "ben", "text": "Ben here, checking now."},
    )
    assert response.status_code in (200, 202), response.text
    wamid = await sent_mid(send_api, wa_id, count=2)
    await detail_when(
        meta_stack,
        conversation,
        lambda d: any(m["author"] == "agent" and m["status"] == "sent" for m in outbound(d)),
    )
    await post_webhook(meta_stack, "whatsapp", whatsapp_status(wa_id, wamid, "failed"))
    detail = await detail_when(
        meta_stack, conversation, lambda d: (with_mid(d, wamid) or {}).get("status") == "failed"
    )
    agent = with_mid(detail, wamid)
    assert agent is not None
    assert agent["author"] == "agent"
    assert "Re-engagement message" in (agent["error"] or "")
    assert len(outbound(detail)) == 2
