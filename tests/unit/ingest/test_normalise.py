"""Every fixture, ours and the public ones, normalises to the events it should."""

import fnmatch
from pathlib import Path
from typing import Any

import pytest

from services.ingest.meta import InvalidBody, Normalised, normalise, parse_json
from services.ingest.publisher import definition_of
from shared.events import Channel, InboundMessage, MessageUpdate, RawEvent, StatusEvent
from tests.unit.ingest.conftest import (
    OWN_FIXTURES,
    SHARED_FIXTURES,
    fixture_channel,
    load_body,
)

PAGE, PSID = "107380912345678", "6243177389021456"
IG, IGSID = "17841405822304914", "1134567890123456"
PNID, WA = "106540352242922", "4915123456789"
MID = "m_AGrHvO2rU5NQyPB4Y3B5bMz1aBz3jnZ2Dw8Vfhn0ABcdEfGhIjKlMnOpQrStUvWxYz0123456789"
IGMID = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDA1ODIyMzA0OTE0OjM0MDI4MjM2Njg0MTcxMDMwMTI0"
    "NDI1OTg3NzA4MjA2MDMwNzQ0NjozMjE0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NQZDZD"
)
WAMID = "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABIYFjNFQjA5QTc2RTlGNUY1RjY2NjJBMzQA"
OUT = "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjRBQjk0QjM5QTgwRjFDMjlEMQA="

REENGAGEMENT_ERROR = (
    "Re-engagement message - Message failed to send because more than 24 hours have passed"
    " since the customer last replied to this number."
)
EXPERIMENT_ERROR = (
    "User's number is part of an experiment - Failed to send message because this user's"
    " phone number is part of an experiment"
)
FB = {"account": PAGE, "contact": PSID}
IGC = {"account": IG, "contact": IGSID}
WAC = {"account": PNID, "contact": WA}
WAN = {**WAC, "name": "Lena Vogel"}


def facts(event: Normalised) -> dict[str, Any]:
    """The fields a test asserts on, flattened."""
    found: dict[str, Any] = {"kind": event.kind}
    match event.event:
        case InboundMessage() as m:
            found |= {
                "mid": m.mid,
                "account": m.account_id,
                "contact": m.contact.platform_id,
                "name": m.contact.name,
                "text": m.text,
                "attachments": [a.type for a in m.attachments],
                "urls": [a.url for a in m.attachments],
                "quick_reply": m.quick_reply_payload,
                "postback": m.postback_payload,
                "referral": m.referral,
                "reply_to": m.reply_to_mid,
                "story": m.reply_to_story.url if m.reply_to_story else None,
                "echo": m.is_echo,
                "ts": m.platform_ts.isoformat(),
            }
        case StatusEvent() as s:
            found |= {
                "account": s.conversation.account_id,
                "contact": s.conversation.contact_id,
                "mids": s.mids,
                "watermark": s.watermark.isoformat() if s.watermark else None,
                "error": (s.error.code, s.error.message) if s.error else None,
                "ts": s.platform_ts.isoformat(),
            }
        case MessageUpdate() as u:
            found |= {
                "account": u.conversation.account_id,
                "contact": u.conversation.contact_id,
                "target": u.mid,
                "emoji": u.emoji,
                "reaction": u.reaction,
                "text": u.text,
                "edit_count": u.edit_count,
                "by_page": u.by_page,
            }
        case RawEvent() as r:
            found |= {"raw_kind": r.kind, "account": r.account_id}
    return found


OWN: dict[str, list[dict[str, Any]]] = {
    "messenger_text": [
        {
            "kind": "message",
            "mid": MID,
            "text": "Hello, is my order on its way?",
            **FB,
            "ts": "2024-11-28T10:40:00.123000+00:00",
        }
    ],
    "messenger_quick_reply": [
        {"kind": "message", "text": "Track my order", "quick_reply": "TRACK_ORDER", **FB}
    ],
    "messenger_reply_to": [{"kind": "message", "reply_to": MID, **FB}],
    "messenger_image": [{"kind": "message", "attachments": ["image"], "text": None, **FB}],
    "messenger_video": [{"kind": "message", "attachments": ["video"]}],
    "messenger_audio": [{"kind": "message", "attachments": ["audio"]}],
    "messenger_file": [{"kind": "message", "attachments": ["file"]}],
    "messenger_location": [{"kind": "message", "attachments": ["location"]}],
    "messenger_fallback": [
        {"kind": "message", "attachments": ["fallback"], "urls": ["https://example.com/product/42"]}
    ],
    "messenger_sticker": [{"kind": "message", "attachments": ["sticker"]}],
    "messenger_share": [{"kind": "message", "attachments": ["share"]}],
    "messenger_ig_reel": [{"kind": "message", "attachments": ["ig_reel"]}],
    "messenger_postback": [
        {
            "kind": "postback",
            "mid": MID + "pb",
            "text": "Talk to a human",
            "postback": "HUMAN_AGENT",
            **FB,
        }
    ],
    "messenger_postback_get_started_referral": [
        {
            "kind": "postback",
            "postback": "GET_STARTED",
            "referral": {"ref": "summer-sale", "source": "SHORTLINK", "type": "OPEN_THREAD"},
        }
    ],
    "messenger_referral_ad": [{"kind": "referral", "text": None, **FB}],
    "messenger_referral_shortlink": [{"kind": "referral", **FB}],
    "messenger_reaction_react": [
        {
            "kind": "react",
            "target": MID,
            "emoji": "\u2764\ufe0f",
            "reaction": "love",
            "by_page": False,
            **FB,
        }
    ],
    "messenger_reaction_unreact": [{"kind": "unreact", "target": MID, "emoji": None}],
    "messenger_message_edit": [
        {
            "kind": "edit",
            "target": MID,
            "text": "Hello, is my order #1234 on its way?",
            "edit_count": 1,
            **FB,
        }
    ],
    "messenger_echo_text": [
        {
            "kind": "echo",
            "echo": True,
            "mid": MID + "echo",
            "text": "Hi! Yes, it ships tomorrow.",
            **FB,
        }
    ],
    "messenger_echo_image": [{"kind": "echo", "echo": True, "attachments": ["image"], **FB}],
    "messenger_delivery": [
        {
            "kind": "delivered",
            "mids": [MID + "echo"],
            "watermark": "2024-11-28T10:41:05.123000+00:00",
            **FB,
        }
    ],
    "messenger_read": [
        {"kind": "read", "mids": [], "watermark": "2024-11-28T10:41:10.123000+00:00", **FB}
    ],
    "messenger_optin_unknown": [{"kind": "raw", "raw_kind": "optin", "account": PAGE}],
    "messenger_batch": [
        {"kind": "message", "text": "first", "contact": PSID},
        {"kind": "message", "text": "another person", "contact": "7000000000000001"},
        {"kind": "message", "text": "second", "contact": PSID},
        {"kind": "read", "contact": PSID},
    ],
    "messenger_standby": [{"kind": "message", "text": "Are you there?", **FB}],
    "messenger_feed_change_unknown": [{"kind": "raw", "raw_kind": "feed"}],
    "instagram_text": [{"kind": "message", "mid": IGMID, "text": "Do you ship to Austria?", **IGC}],
    "instagram_image": [{"kind": "message", "attachments": ["image"], **IGC}],
    "instagram_video": [{"kind": "message", "attachments": ["video"]}],
    "instagram_audio": [{"kind": "message", "attachments": ["audio"]}],
    "instagram_file": [{"kind": "message", "attachments": ["file"]}],
    "instagram_share": [{"kind": "message", "attachments": ["share"]}],
    "instagram_story_mention": [{"kind": "message", "attachments": ["story_mention"]}],
    "instagram_story_reply": [
        {
            "kind": "message",
            "text": "Love this look!",
            "story": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=17912345678901240&signature=abc",
        }
    ],
    "instagram_reply_to": [{"kind": "message", "reply_to": IGMID}],
    "instagram_like_heart": [{"kind": "message", "attachments": ["like_heart"]}],
    "instagram_ig_reel": [{"kind": "message", "attachments": ["ig_reel"]}],
    "instagram_quick_reply": [{"kind": "message", "quick_reply": "SIZE_GUIDE"}],
    "instagram_postback_icebreaker": [
        {
            "kind": "postback",
            "mid": IGMID + "pb",
            "postback": "HOURS",
            "text": "What are your opening hours?",
        }
    ],
    "instagram_referral_igme": [
        {
            "kind": "referral",
            "referral": {"ref": "bio-link", "source": "IGME_LINK", "type": "OPEN_THREAD"},
        }
    ],
    "instagram_reaction_react": [{"kind": "react", "target": IGMID, "reaction": "love", **IGC}],
    "instagram_reaction_unreact": [{"kind": "unreact", "target": IGMID}],
    "instagram_message_edit": [{"kind": "edit", "target": IGMID, "edit_count": 2}],
    "instagram_unsend": [{"kind": "delete", "target": IGMID + "del", **IGC}],
    "instagram_unsupported": [{"kind": "message", "attachments": ["unsupported"]}],
    "instagram_echo": [{"kind": "echo", "echo": True, **IGC}],
    "instagram_read": [{"kind": "read", "mids": [IGMID + "e"], "watermark": None, **IGC}],
    "instagram_comments_unknown": [{"kind": "raw", "raw_kind": "comments", "account": IG}],
    "whatsapp_text": [
        {
            "kind": "message",
            "mid": WAMID + "TE",
            "text": "Hi, my parcel has not arrived",
            **WAN,
            "ts": "2024-11-28T10:40:00+00:00",
        }
    ],
    "whatsapp_image": [
        {"kind": "message", "attachments": ["image"], "text": "The box was damaged", **WAN}
    ],
    "whatsapp_video": [{"kind": "message", "attachments": ["video"]}],
    "whatsapp_audio": [{"kind": "message", "attachments": ["audio"]}],
    "whatsapp_document": [{"kind": "message", "attachments": ["file"], "text": "My invoice"}],
    "whatsapp_sticker": [{"kind": "message", "attachments": ["sticker"]}],
    "whatsapp_location": [
        {
            "kind": "message",
            "attachments": ["location"],
            "urls": ["https://maps.example.com/stephansplatz"],
        }
    ],
    "whatsapp_contacts": [{"kind": "message", "attachments": ["contacts"]}],
    "whatsapp_interactive_button_reply": [
        {"kind": "message", "text": "Track my order", "quick_reply": "track-order", "reply_to": OUT}
    ],
    "whatsapp_interactive_list_reply": [
        {"kind": "message", "text": "Refund", "quick_reply": "refund"}
    ],
    "whatsapp_button": [
        {"kind": "message", "text": "Stop promotions", "quick_reply": "STOP_PROMOTIONS"}
    ],
    "whatsapp_reply_context": [{"kind": "message", "reply_to": OUT}],
    "whatsapp_referral_ctwa": [{"kind": "message", "text": "Hi! I saw your ad"}],
    "whatsapp_reaction": [{"kind": "react", "target": OUT, "emoji": "\U0001f44d", **WAC}],
    "whatsapp_reaction_removed": [{"kind": "unreact", "target": OUT, "emoji": None}],
    "whatsapp_unsupported": [{"kind": "message", "attachments": ["unsupported"]}],
    "whatsapp_system_unknown": [{"kind": "raw", "raw_kind": "system", "account": PNID}],
    "whatsapp_status_sent": [{"kind": "sent", "mids": [OUT], **WAC}],
    "whatsapp_status_delivered": [{"kind": "delivered", "mids": [OUT], **WAC}],
    "whatsapp_status_read": [{"kind": "read", "mids": [OUT], **WAC}],
    "whatsapp_status_failed": [
        {
            "kind": "failed",
            "mids": [OUT],
            "error": (
                131047,
                REENGAGEMENT_ERROR,
            ),
        }
    ],
    "whatsapp_echo_smb": [
        {
            "kind": "echo",
            "echo": True,
            "name": None,
            "text": "Sorry about that, we are on it.",
            **WAC,
        }
    ],
    "whatsapp_template_status_unknown": [
        {"kind": "raw", "raw_kind": "message_template_status_update"}
    ],
}

SHARED: dict[str, list[dict[str, Any]]] = {
    "instagram_duplicate_mid_two_entries__courier": [
        {"kind": "message", "mid": "external_id", "text": "Hello World"}
    ],
    "instagram_echo_story_mention__chatwoot": [
        {
            "kind": "echo",
            "echo": True,
            "attachments": ["story_mention"],
            "contact": "chatwoot-app-user-id-1",
            "account": "Sender-id-1",
        }
    ],
    "instagram_image_attachment__courier": [
        {
            "kind": "message",
            "attachments": ["image"],
            "urls": ["https://image-url/foo.png"],
            "contact": "5678",
        }
    ],
    "instagram_like_heart__courier": [
        {"kind": "message", "attachments": ["like_heart"], "urls": [None]}
    ],
    "instagram_postback_icebreaker__courier": [
        {"kind": "postback", "postback": "get_started", "text": "icebreaker question"}
    ],
    "instagram_seen__chatwoot": [
        {"kind": "read", "mids": ["message-id-1"], "contact": "Sender-id-1"}
    ],
    "instagram_share_attachment__chatwoot": [{"kind": "message", "attachments": ["share"]}],
    "instagram_standby__chatwoot": [
        {
            "kind": "message",
            "mid": "message-id-1",
            "text": "This is the first standby message from the customer, after 24 hours.",
        }
    ],
    "instagram_story_mention__chatwoot": [{"kind": "message", "attachments": ["story_mention"]}],
    "instagram_story_mention__courier": [
        {"kind": "message", "attachments": ["story_mention"], "urls": ["https://story-url"]}
    ],
    "instagram_story_reply__chatwoot": [
        {
            "kind": "message",
            "text": "This is the story reply",
            "story": "https://chatwoot-assets.local/sample.png",
            "ts": "2021-09-08T06:34:04+00:00",
        }
    ],
    "instagram_text__chatwoot": [
        {
            "kind": "message",
            "text": "This is the first message from the customer",
            "contact": "Sender-id-1",
            "account": "chatwoot-app-user-id-1",
        }
    ],
    "instagram_text__courier": [
        {
            "kind": "message",
            "mid": "external_id",
            "text": "Hello World",
            "contact": "5678",
            "account": "1234567890",
        }
    ],
    "instagram_unsend_is_deleted__chatwoot": [{"kind": "delete", "target": "message-id-to-delete"}],
    "instagram_unsend_is_deleted__courier": [
        {"kind": "delete", "target": "external_id", "contact": "5678"}
    ],
    "messenger_attachments_image_fallback_location__messenger4j": [
        {
            "kind": "message",
            "attachments": ["image", "fallback", "location"],
            "urls": ["http://image.url", "<URL_OF_THE_ATTACHMENT>", None],
        }
    ],
    "messenger_audio_attachment_event__bottender": [
        {
            "kind": "message",
            "attachments": ["audio"],
            "contact": "1423587017700273",
            "account": "404217156637689",
        }
    ],
    "messenger_batch_multi_entry__bottender": [
        {"kind": "message", "text": "test 1"},
        {"kind": "message", "text": "test 2"},
    ],
    "messenger_delivery__fbmessenger-api-hs": [
        {
            "kind": "delivered",
            "mids": ["mid.1458668856218:ed81099e15d3f4f233"],
            "watermark": "2016-03-22T17:47:36.253000+00:00",
            "contact": "USER_ID",
            "account": "PAGE_ID",
        }
    ],
    "messenger_duplicate_mid_two_entries__courier": [{"kind": "message", "mid": "external_id"}],
    "messenger_echo_template_receipt__messenger4j": [
        {
            "kind": "echo",
            "echo": True,
            "attachments": ["template"],
            "contact": "1256299999730577",
            "account": "17175299999834678",
        }
    ],
    "messenger_echo_text__messenger4j": [
        {
            "kind": "echo",
            "echo": True,
            "text": "hello, text message world!",
            "contact": "USER_ID",
            "account": "PAGE_ID",
        }
    ],
    "messenger_fallback_attachment__courier": [
        {"kind": "message", "attachments": ["fallback"], "urls": ["My Documents/foo.doc"]}
    ],
    "messenger_file_attachment_event__bottender": [{"kind": "message", "attachments": ["file"]}],
    "messenger_ig_reel_share__courier": [{"kind": "message", "attachments": ["ig_reel"]}],
    "messenger_image_attachment__fbmessenger-api-hs": [
        {"kind": "message", "attachments": ["image"], "urls": ["IMAGE_URL"]}
    ],
    "messenger_location_attachment__courier": [{"kind": "message", "attachments": ["location"]}],
    "messenger_message_request_accept_event__facebook-messenger-gem": [
        {"kind": "raw", "raw_kind": "message_request"}
    ],
    "messenger_pass_thread_control_event__facebook-messenger-gem": [
        {"kind": "raw", "raw_kind": "pass_thread_control"}
    ],
    "messenger_postback__fbmessenger-api-hs": [
        {"kind": "postback", "postback": "USER_DEFINED_PAYLOAD", "text": None, "contact": "USER_ID"}
    ],
    "messenger_postback_with_referral__messenger4j": [
        {
            "kind": "postback",
            "postback": "<USER_DEFINED_PAYLOAD>",
            "text": "<TITLE_FOR_THE_CTA>",
            "referral": {
                "ref": "<REF DATA IF SPECIFIED IN THE AD>",
                "ad_id": "<ID OF THE AD>",
                "source": "<SHORTLINK>",
                "type": "OPEN_THREAD",
            },
        }
    ],
    "messenger_quick_reply__botman-driver-facebook": [
        {"kind": "message", "text": "Red", "quick_reply": "MY_PAYLOAD"}
    ],
    "messenger_quick_reply__messenger4j": [
        {"kind": "message", "text": "hello, world!", "quick_reply": "DEVELOPER_DEFINED_PAYLOAD"}
    ],
    "messenger_reaction_event__bottender": [
        {
            "kind": "react",
            "target": "mid.$cAAE1UUyiiwthh0NPrVbVf4HFNDGl",
            "emoji": "\u2764\ufe0f",
            "reaction": "smile",
        }
    ],
    "messenger_reaction_event__facebook-messenger-gem": [
        {"kind": "react", "target": None, "emoji": "\U0001f44d", "reaction": "like"}
    ],
    "messenger_read__botman-driver-facebook": [
        {"kind": "read", "watermark": "2016-03-22T17:47:36.253000+00:00"}
    ],
    "messenger_read__messenger4j": [
        {"kind": "read", "watermark": "2016-03-22T17:47:36.253000+00:00", "contact": "USER_ID"}
    ],
    "messenger_referral_ad__messenger4j": [
        {
            "kind": "referral",
            "referral": {
                "ref": "<REF DATA IF SPECIFIED IN THE AD>",
                "ad_id": "<ID OF THE AD>",
                "source": "ADS",
                "type": "OPEN_THREAD",
            },
        }
    ],
    "messenger_sticker_thumbs_up__courier": [{"kind": "message", "attachments": ["sticker"]}],
    "messenger_text__botman-driver-facebook": [
        {
            "kind": "message",
            "text": "Hi",
            "mid": "mid.1480279487147:4388d3b344",
            "contact": "1433960459967306",
        }
    ],
    "messenger_text__fbmessenger-api-hs": [
        {"kind": "message", "text": "hello, world!", "ts": "2016-03-12T06:29:57.627000+00:00"}
    ],
    "messenger_text_signed_sha1__messenger4j": [
        {
            "kind": "message",
            "text": "34wrr3wr",
            "contact": "1256217357730577",
            "account": "1717527131834678",
        }
    ],
    "messenger_video_attachment_event__bottender": [{"kind": "message", "attachments": ["video"]}],
    "whatsapp_image__courier": [
        {
            "kind": "message",
            "attachments": ["image"],
            "text": "Check out my new phone!",
            "name": "Kerry Fisher",
            "contact": "5678",
            "account": "1234567890",
        }
    ],
    "whatsapp_image__pywa": [
        {"kind": "message", "attachments": ["image"], "text": None, "name": "Test Name"}
    ],
    "whatsapp_reaction__pywa": [
        {
            "kind": "react",
            "target": "wamid.yzxyzx=",
            "emoji": "\U0001f62e",
            "contact": "972987654321",
        }
    ],
    "whatsapp_status__courier": [{"kind": "sent", "mids": ["external_id"], "contact": "5678"}],
    "whatsapp_status_delivered__pywa": [
        {"kind": "delivered", "mids": ["wamid.xyzxyz"], "account": "1122334455667"}
    ],
    "whatsapp_status_failed__pywa": [
        {
            "kind": "failed",
            "error": (
                130472,
                EXPERIMENT_ERROR,
            ),
        }
    ],
    "whatsapp_status_read__pywa": [{"kind": "read", "mids": ["wamid.xyzxyz"]}],
    "whatsapp_text__courier": [{"kind": "message", "text": "Hello World", "name": "Kerry Fisher"}],
    "whatsapp_text__pywa": [
        {
            "kind": "message",
            "text": "Body Text",
            "name": "Test Name",
            "contact": "972987654321",
            "mid": "wamid.xyzxyz",
        }
    ],
}
# Not a webhook: the Send API's error answer, kept for the responder's adapter.
SHARED_NOT_WEBHOOKS = {"sendapi_error_response__fbmessenger-api-hs"}


def assert_normalises(path: Path, expected: list[dict[str, Any]]) -> None:
    batch = normalise(fixture_channel(path), load_body(path))
    got = [facts(event) for event in batch.events]
    assert len(got) == len(expected), got
    for found, wanted in zip(got, expected, strict=True):
        assert {key: found.get(key) for key in wanted} == wanted


@pytest.mark.parametrize("name", sorted(OWN))
def test_own_fixture_normalises_to_the_expected_events(name: str) -> None:
    assert_normalises(OWN_FIXTURES / f"{name}.json", OWN[name])


def test_every_own_fixture_has_expectations() -> None:
    assert {path.stem for path in OWN_FIXTURES.glob("*.json")} == set(OWN)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_captured_fixture_normalises_to_the_expected_events(name: str) -> None:
    path = SHARED_FIXTURES / f"{name}.json"
    if not path.exists():
        pytest.skip(f"captured payloads not here: {SHARED_FIXTURES.resolve()} (a CI-only folder)")
    assert_normalises(path, SHARED[name])


def test_every_shared_fixture_has_expectations() -> None:
    if not SHARED_FIXTURES.exists():
        pytest.skip(f"captured payloads not here: {SHARED_FIXTURES.resolve()} (a CI-only folder)")
    names = {path.stem for path in SHARED_FIXTURES.glob("*.json")}
    assert names - SHARED_NOT_WEBHOOKS == set(SHARED)


def test_echo_is_recorded_from_the_page_to_the_contact() -> None:
    [echo] = normalise(
        Channel.MESSENGER, load_body(OWN_FIXTURES / "messenger_echo_text.json")
    ).events
    assert isinstance(echo.event, InboundMessage)
    assert echo.event.is_echo
    # The page is the sender of an echo; the conversation is still page <-> contact.
    assert echo.event.conversation.account_id == PAGE
    assert echo.event.contact.platform_id == PSID
    # Sent from Meta's inbox (its app id, a number on the wire): the responder can tell
    # a person's reply from dmdesk's own.
    assert echo.event.app_id == "263902037430900"


def test_only_an_echo_names_the_app_that_sent_it() -> None:
    body = load_body(OWN_FIXTURES / "messenger_text.json")
    body["entry"][0]["messaging"][0]["message"]["app_id"] = 263902037430900
    [customer] = normalise(Channel.MESSENGER, body).events
    assert isinstance(customer.event, InboundMessage)
    assert not customer.event.is_echo
    assert customer.event.app_id is None


def test_batch_is_ordered_by_platform_time() -> None:
    batch = normalise(Channel.MESSENGER, load_body(OWN_FIXTURES / "messenger_batch.json"))
    times = [event.platform_ts for event in batch.events]
    assert times == sorted(t for t in times if t is not None)


def test_a_mid_repeated_in_one_body_is_published_once() -> None:
    batch = normalise(
        Channel.MESSENGER,
        load_body(OWN_FIXTURES / "messenger_text.json")
        | {"entry": [load_body(OWN_FIXTURES / "messenger_text.json")["entry"][0]] * 2},
    )
    assert [e.msg_id for e in batch.events] == [f"messenger:{MID}"]
    assert batch.repeated == 1


def test_dedupe_keys_are_channel_and_mid_or_a_stable_hash() -> None:
    text = normalise(Channel.MESSENGER, load_body(OWN_FIXTURES / "messenger_text.json"))
    assert text.events[0].msg_id == f"messenger:{MID}"
    read_body = load_body(OWN_FIXTURES / "messenger_read.json")
    first = normalise(Channel.MESSENGER, read_body).events[0].msg_id
    again = normalise(Channel.MESSENGER, load_body(OWN_FIXTURES / "messenger_read.json")).events[0]
    assert first == again.msg_id
    assert first.startswith("messenger:read:")
    status = normalise(Channel.WHATSAPP, load_body(OWN_FIXTURES / "whatsapp_status_read.json"))
    assert status.events[0].msg_id == f"whatsapp:status:{OUT}:read"


def test_an_event_that_does_not_fit_is_kept_raw_with_the_reason() -> None:
    body = load_body(OWN_FIXTURES / "messenger_text.json")
    body["entry"][0]["messaging"].append({"sender": {"id": PSID}, "message": {"text": "no mid"}})
    batch = normalise(Channel.MESSENGER, body)
    assert sorted(facts(e)["kind"] for e in batch.events) == ["message", "raw"]
    [raw] = [e.event for e in batch.events if isinstance(e.event, RawEvent)]
    assert raw.kind == "message"
    assert raw.reason is not None
    assert "recipient" in raw.reason


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], None),
        ({"entry": []}, "object"),
        ({"object": "user", "entry": []}, "object"),
        ({"object": "instagram", "entry": []}, "object"),
        ({"object": "page"}, "entry"),
        ({"object": "page", "entry": [{"time": 1}]}, "entry[0].id"),
        ({"object": "page", "entry": ["not an object"]}, "entry.0"),
    ],
)
def test_a_body_of_unknown_shape_is_invalid_with_the_field(
    document: Any, field: str | None
) -> None:
    with pytest.raises(InvalidBody) as caught:
        normalise(Channel.MESSENGER, document)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "raw", [b"{", b"", b"\xff\xfe", b'{"a": NaN}', b'"\\ud800"', b"[" * 100_000]
)
def test_malformed_json_is_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidBody, match="malformed JSON"):
        parse_json(raw)


@pytest.mark.parametrize("path", sorted(OWN_FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_each_event_keeps_the_dedupe_id_and_subject_its_definition_gives(path: Path) -> None:
    try:
        batch = normalise(fixture_channel(path), parse_json(path.read_bytes()))
    except InvalidBody:
        pytest.skip("a fixture of a body ingest refuses: no events to check")
    for normalised in batch.events:
        definition = definition_of(normalised.event)
        assert definition.msg_id(normalised.event) == normalised.msg_id
        assert fnmatch.fnmatchcase(definition.subject(normalised.event), definition.pattern)
