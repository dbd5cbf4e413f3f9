"""A local stand-in for Meta's Send API, WhatsApp Cloud API and the user profile APIs.

It validates each call the way Meta documents it (path, access token, JSON shape,
``messaging_type`` / ``tag`` rules, the 24-hour and 7-day windows) and answers
with real Graph error bodies; tests script failures (a 613 rate limit, a
permanent error) per recipient. ``GET /{user id}?fields=...`` answers the
Instagram messaging user profile and the Messenger user profile with the fields
asked for (an unknown field is Graph's error 100), and can be scripted to fail,
to hang (a timeout) or to wait until a test releases it. Standard library only:
a thread on a free loopback port.
"""

import json
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "v21.0"
MESSAGING_TYPES = {"RESPONSE", "UPDATE", "MESSAGE_TAG"}
MESSAGE_TAGS = {"HUMAN_AGENT", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE"}


def graph_error(
    code: int, message: str, *, subcode: int | None = None, type_: str = "OAuthException"
) -> dict[str, Any]:
    """A Graph API error body as Meta sends it."""
    error: dict[str, Any] = {
        "message": message,
        "type": type_,
        "code": code,
        "fbtrace_id": uuid.uuid4().hex[:11],
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


RATE_LIMIT = graph_error(613, "(#613) Calls to this api have exceeded the rate limit.")
OUTSIDE_WINDOW = graph_error(
    10,
    "(#10) This message is sent outside of allowed window. Learn more about the new policy"
    " here: https://developers.facebook.com/docs/messenger-platform/policy-overview",
    subcode=2018278,
)
INVALID_PARAMETER = {
    "error": {
        "message": "Invalid parameter",
        "type": "FacebookApiException",
        "code": 100,
        "error_data": "No matching user found.",
        "fbtrace_id": "D2kxCybrKVw",
    }
}
INVALID_TOKEN = graph_error(190, "Invalid OAuth access token - Cannot parse access token")
PROFILE_FIELDS = {
    # Instagram messaging user profile
    "name",
    "username",
    "profile_pic",
    "follower_count",
    "is_user_follow_business",
    "is_business_follow_user",
    "is_verified_user",
    # Messenger user profile
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "gender",
    "id",
}


@dataclass
class RecordedCall:
    """One request the stub received (after its checks)."""

    path: str
    account_id: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    status: int
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def message_id(self) -> str | None:
        """The id the platform gave the message sent (Send API ``message_id``, WhatsApp's wamid)."""
        if "message_id" in self.answer:
            return str(self.answer["message_id"])
        messages = self.answer.get("messages") or [{}]
        found = messages[0].get("id")
        return None if found is None else str(found)


class SendApiStub:
    """The stub server; ``base_url`` is what DMDESK_GRAPH_API_URL should be."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.calls: list[RecordedCall] = []
        self.last_customer_message: dict[tuple[str, str], datetime] = {}
        self.scripted: dict[str, deque[tuple[int, dict[str, Any]]]] = defaultdict(deque)
        self.profiles: dict[str, dict[str, Any]] = {}
        self.profile_gates: dict[str, threading.Event] = {}
        self.profile_errors: dict[str, deque[tuple[int, dict[str, Any]]]] = defaultdict(deque)
        self.profile_delay = 0.0
        self.profile_calls: list[RecordedCall] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        self.send_gates: dict[str, threading.Event] = {}
        self.held: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{API_VERSION}"

    def __enter__(self) -> "SendApiStub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, recipient: str, status: int, body: dict[str, Any], times: int = 1) -> None:
        """Answer the next ``times`` sends to ``recipient`` with this error."""
        for _ in range(times):
            self.scripted[recipient].append((status, body))

    def hold_sends(self, recipient: str) -> threading.Event:
        """Hold the answers to sends to ``recipient`` until the returned event is set.

        The message is sent all the same: its id is in ``held[recipient]`` at once (the
        platform's echo and receipts may come before the Send API's answer).
        """
        gate = self.send_gates[recipient] = threading.Event()
        return gate

    def sent(self, recipient: str | None = None) -> list[RecordedCall]:
        """Calls that succeeded, optionally to one recipient."""
        with self._lock:
            return [
                call
                for call in self.calls
                if call.status == 200 and (recipient is None or _recipient(call.body) == recipient)
            ]

    def cdn_url(self, name: str) -> str:
        """Where the stub's CDN serves ``files[name]`` (404 once it is removed: expired)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/cdn/{name}?oh=signature&oe=expiry"

    def _file(self, path: str) -> tuple[int, bytes, str]:
        found = self.files.get(path.removeprefix("/cdn/"))
        if found is None:
            return 404, b"URL signature expired", "text/plain"
        return 200, *found

    def hold_profile(self, user_id: str) -> threading.Event:
        """Hold the answers about ``user_id`` until the returned event is set."""
        gate = self.profile_gates[user_id] = threading.Event()
        return gate

    def fail_profile(self, user_id: str, status: int, body: dict[str, Any], times: int = 1) -> None:
        """Answer the next ``times`` profile requests about ``user_id`` with this error."""
        for _ in range(times):
            self.profile_errors[user_id].append((status, body))

    def profile_requests(self, user_id: str | None = None) -> list[RecordedCall]:
        """Profile requests received, optionally about one user."""
        with self._lock:
            return [c for c in self.profile_calls if user_id is None or c.account_id == user_id]

    def _profile(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != API_VERSION:
            return 404, graph_error(803, f"Unknown path {path}")
        user_id = parts[1]
        if query.get("access_token") not in set(self.tokens.values()):
            return 400, INVALID_TOKEN
        if (gate := self.profile_gates.get(user_id)) is not None:
            gate.wait(30)
        if self.profile_delay:
            time.sleep(self.profile_delay)
        with self._lock:
            errors = self.profile_errors.get(user_id)
            scripted = errors.popleft() if errors else None
        if scripted is not None:
            return scripted
        fields = [f for f in query.get("fields", "").split(",") if f]
        if unknown := [f for f in fields if f not in PROFILE_FIELDS]:
            return 400, graph_error(
                100,
                f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type (User)",
                type_="GraphMethodException",
            )
        known = self.profiles.get(user_id)
        if known is None:
            return 400, INVALID_PARAMETER
        return 200, {"id": user_id} | {f: known[f] for f in fields if f in known}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path.startswith("/cdn/"):
                    code, content, content_type = stub._file(url.path)
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                    return
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                status, answer = stub._profile(url.path, query)
                user_id = url.path.rstrip("/").rsplit("/", 1)[-1]
                with stub._lock:
                    stub.profile_calls.append(
                        RecordedCall(url.path, user_id, query, dict(self.headers), {}, status)
                    )
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting (a timeout test)
                    return

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, answer, body, account = stub._answer(url.path, query, self.headers, raw)
                recipient = _recipient(body)
                if status == 200 and (gate := stub.send_gates.get(recipient)) is not None:
                    held = RecordedCall(url.path, account, query, {}, body, status, answer=answer)
                    if held.message_id is not None:
                        with stub._lock:
                            stub.held[recipient].append(held.message_id)
                    gate.wait(30)
                with stub._lock:
                    stub.calls.append(
                        RecordedCall(
                            url.path,
                            account,
                            query,
                            dict(self.headers),
                            body,
                            status,
                            answer=answer,
                        )
                    )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _answer(
        self, path: str, query: dict[str, str], headers: Any, raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, Any], str]:
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != API_VERSION or parts[2] != "messages":
            return 404, graph_error(803, f"Unknown path {path}"), {}, ""
        account = parts[1]
        if headers.get("Content-Type", "").split(";")[0] != "application/json":
            return (
                400,
                graph_error(100, "(#100) Content-Type must be application/json"),
                {},
                account,
            )
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, graph_error(100, "(#100) Invalid JSON"), {}, account
        if body.get("messaging_product") == "whatsapp":
            return (*self._whatsapp(account, headers, body), body, account)
        return (*self._messenger(account, query, body), body, account)

    def _token_ok(self, account: str, token: str | None) -> bool:
        return token is not None and self.tokens.get(account) == token

    def _scripted(self, recipient: str) -> tuple[int, dict[str, Any]] | None:
        with self._lock:
            queue = self.scripted.get(recipient)
            return queue.popleft() if queue else None

    def _messenger(
        self, account: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if not self._token_ok(account, query.get("access_token")):
            return 400, INVALID_TOKEN
        recipient = _recipient(body)
        if not recipient:
            return 400, graph_error(100, "(#100) The parameter recipient is required")
        messaging_type = body.get("messaging_type")
        if messaging_type not in MESSAGING_TYPES:
            return 400, graph_error(
                100, "(#100) param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}"
            )
        tag = body.get("tag")
        if messaging_type == "MESSAGE_TAG" and tag not in MESSAGE_TAGS:
            return 400, graph_error(100, "(#100) Param tag must be a valid message tag")
        if messaging_type != "MESSAGE_TAG" and tag is not None:
            return 400, graph_error(
                100, "(#100) tag is only allowed with messaging_type MESSAGE_TAG"
            )
        message = body.get("message")
        text = message.get("text") if isinstance(message, dict) else None
        if not isinstance(text, str) or not text or len(text) > 2000:
            return 400, graph_error(
                100, "(#100) Param message[text] must be a UTF-8 string of at most 2000 characters"
            )
        if (scripted := self._scripted(recipient)) is not None:
            return scripted
        last = self.last_customer_message.get((account, recipient))
        if last is not None:
            age = datetime.now(UTC) - last
            limit = timedelta(days=7) if tag == "HUMAN_AGENT" else timedelta(hours=24)
            if age > limit:
                return 400, OUTSIDE_WINDOW
        if recipient == "unknown-user":
            return 400, INVALID_PARAMETER
        return 200, {"recipient_id": recipient, "message_id": f"m_{uuid.uuid4().hex}"}

    def _whatsapp(
        self, account: str, headers: Any, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not self._token_ok(
            account, auth.removeprefix("Bearer ")
        ):
            return 401, INVALID_TOKEN
        to = body.get("to")
        text = body.get("text")
        if (
            body.get("type") != "text"
            or not to
            or not isinstance(text, dict)
            or not text.get("body")
        ):
            return 400, graph_error(100, "(#100) Invalid parameter")
        if (scripted := self._scripted(str(to))) is not None:
            return scripted
        wamid = f"wamid.{uuid.uuid4().hex}"
        return 200, {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}],
        }


def _recipient(body: dict[str, Any]) -> str:
    if body.get("messaging_product") == "whatsapp":
        return str(body.get("to") or "")
    recipient = body.get("recipient")
    return str(recipient.get("id") or "") if isinstance(recipient, dict) else ""
