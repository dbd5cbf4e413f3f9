"""Meta's Send API (Messenger, Instagram) and WhatsApp Cloud API adapters.

- Messenger / Instagram: ``POST {graph}/{page-or-ig-id}/messages?access_token=...``
  with ``recipient``, ``messaging_type`` (and ``tag``) and ``message``.
- WhatsApp: ``POST {graph}/{phone-number-id}/messages`` with a bearer token and
  ``messaging_product: whatsapp``.

Rate-limit errors (Graph codes 4, 17, 32, 613, 80001-80014, WhatsApp 130429,
131056), transient errors and 5xx are retried with exponential back-off; any
other Graph error is permanent and comes back as a failed result with Meta's
code, subcode and message. Calls are rate limited per page (token bucket).

The HTTP client is aiohttp: measured on the development machine, a Send API call costs
about 0.13 ms of CPU with it against 1.3-1.8 ms with httpx (its connection pool and anyio
layers), and a reply is sent for nearly every DM.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr

from services.responder.adapters import LogAdapter, SendAdapter
from services.responder.ratelimit import PerKeyRateLimiter
from services.responder.window import RESPONSE, MessagingPolicy
from shared.events import Channel, OutboundRequest, OutboundResult, OutboundStatus, PlatformError
from shared.settings import Settings

logger = logging.getLogger("dmdesk.responder.meta")

RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 130429, 131056, *range(80001, 80015)})
TRANSIENT_CODES = frozenset({1, 2})
MAX_BACKOFF_SECONDS = 30.0


def graph_error(body: Any, status_code: int) -> PlatformError:
    """The PlatformError in a Graph error body (or one describing the HTTP status)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return PlatformError(
            type="http",
            message=f"HTTP {status_code} without a Graph error body",
            retryable=status_code >= 500 or status_code == 429,
        )
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    retryable = (
        code in RATE_LIMIT_CODES
        or code in TRANSIENT_CODES
        or error.get("is_transient") is True
        or status_code >= 500
    )
    message = str(error.get("message") or error.get("error_user_msg") or "Graph API error")
    return PlatformError(
        code=code, subcode=subcode, type=error.get("type"), message=message, retryable=retryable
    )


@dataclass(frozen=True, slots=True)
class GraphAnswer:
    """How a Graph API call ended: the JSON of a success, or the last error."""

    payload: Any
    error: PlatformError | None
    attempts: int


class GraphApi:
    """The one HTTP client to Meta's Graph API: the account tokens, retries with back-off.

    Shared by the Send API adapter and the profile fetcher, so both back off the same
    way on rate-limit errors (codes 4, 17, 32, 613...) and server errors.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = settings.graph_api_url.rstrip("/")
        self.tokens: Mapping[str, SecretStr] = settings.page_access_tokens
        self.whatsapp_token = settings.whatsapp_access_token
        self.backoff = settings.send_backoff_seconds
        self.timeout = aiohttp.ClientTimeout(total=settings.send_timeout_seconds)
        self._sleep = sleep
        self._http: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        """The responder's one HTTP session (Graph calls and attachment downloads), opened
        on first use, inside the running event loop."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self.timeout)
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._http is not None:
            await self._http.close()

    def token(self, channel: Channel, account_id: str) -> str | None:
        """The access token of ``account_id`` (WhatsApp: the Cloud API token by default)."""
        token = self.tokens.get(account_id)
        if token is None and channel == Channel.WHATSAPP:
            token = self.whatsapp_token
        value = token.get_secret_value() if token is not None else ""
        return value or None

    async def call(
        self,
        method: str,
        url: str,
        *,
        max_attempts: int,
        before_attempt: Callable[[], Awaitable[None]] | None = None,
        log: Mapping[str, object] | None = None,
        request_timeout: float | None = None,
        **request: Any,
    ) -> GraphAnswer:
        """Call the Graph API, retrying retryable errors with exponential back-off.

        ``before_attempt`` runs before each attempt (a rate limiter); ``log`` is what a
        failed attempt's log line may say (never names or text).
        """
        error = PlatformError(message="not called")
        options: dict[str, Any] = {}
        if request_timeout is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=request_timeout)
        for attempt in range(1, max_attempts + 1):
            if before_attempt is not None:
                await before_attempt()
            try:
                async with self.http().request(method, url, **request, **options) as response:
                    payload = await _json(response)
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = PlatformError(type="network", message=type(exc).__name__, retryable=True)
            else:
                if 200 <= status < 300:
                    return GraphAnswer(payload=payload, error=None, attempts=attempt)
                error = graph_error(payload, status)
            logger.warning(
                "graph call attempt failed",
                extra={
                    **(log or {}),
                    "attempt": attempt,
                    "code": error.code,
                    "subcode": error.subcode,
                    "retryable": error.retryable,
                },
            )
            if not error.retryable or attempt == max_attempts:
                break
            await self._sleep(min(MAX_BACKOFF_SECONDS, self.backoff * 2 ** (attempt - 1)))
        return GraphAnswer(payload=None, error=error, attempts=attempt)


class GraphSendAdapter:
    """Sends through Meta's Graph API; generic-channel messages go to the log adapter."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        graph: GraphApi | None = None,
    ) -> None:
        self.graph = graph or GraphApi(settings, sleep=sleep)
        self.max_attempts = settings.send_max_attempts
        self.limiter = PerKeyRateLimiter(settings.send_rate_per_second)
        self.fallback: SendAdapter = LogAdapter()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.graph.aclose()

    def _call(
        self, request: OutboundRequest, policy: MessagingPolicy, token: str
    ) -> tuple[str, dict[str, Any], dict[str, str], dict[str, str]]:
        """URL, JSON body, query parameters and headers of the Graph call."""
        ref = request.conversation
        url = f"{self.graph.base_url}/{ref.account_id}/messages"
        if ref.channel == Channel.WHATSAPP:
            body: dict[str, Any] = {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": ref.contact_id,
                "type": "text",
                "text": {"preview_url": False, "body": request.text},
            }
            if request.in_reply_to and request.in_reply_to.startswith("wamid."):
                body["context"] = {"message_id": request.in_reply_to}
            return url, body, {}, {"Authorization": f"Bearer {token}"}
        body = {
            "recipient": {"id": ref.contact_id},
            "messaging_type": policy.messaging_type,
            "message": {"text": request.text},
        }
        if policy.tag is not None:
            body["tag"] = policy.tag
        return url, body, {"access_token": token}, {}

    async def send(
        self, request: OutboundRequest, policy: MessagingPolicy = RESPONSE
    ) -> OutboundResult:
        """Send ``request``, retrying rate limits and server errors with back-off."""
        ref = request.conversation
        if ref.channel == Channel.GENERIC:
            return await self.fallback.send(request, policy)
        token = self.graph.token(ref.channel, ref.account_id)
        if token is None:
            return self._failed(
                request,
                PlatformError(
                    type="dmdesk.config",
                    message=f"no access token for account"
                    f" {ref.account_id} (DMDESK_PAGE_ACCESS_TOKENS)",
                ),
                attempts=1,
            )
        url, body, params, headers = self._call(request, policy, token)
        answer = await self.graph.call(
            "POST",
            url,
            max_attempts=self.max_attempts,
            before_attempt=functools.partial(self.limiter.acquire, ref.account_id),
            log={"request_id": request.request_id, "channel": ref.channel.value},
            json=body,
            params=params,
            headers=headers,
        )
        if answer.error is not None:
            return self._failed(request, answer.error, attempts=answer.attempts)
        return OutboundResult(
            request_id=request.request_id,
            conversation=ref,
            status=OutboundStatus.SENT,
            mid=_message_id(answer.payload),
            attempts=answer.attempts,
        )

    @staticmethod
    def _failed(request: OutboundRequest, error: PlatformError, *, attempts: int) -> OutboundResult:
        return OutboundResult(
            request_id=request.request_id,
            conversation=request.conversation,
            status=OutboundStatus.FAILED,
            error=error,
            attempts=attempts,
        )


async def _json(response: aiohttp.ClientResponse) -> Any:
    """The response's JSON (whatever its content type), or None."""
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


def _message_id(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("message_id"), str):
        return str(payload["message_id"])
    messages = payload.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        found = messages[0].get("id")
        return str(found) if found is not None else None
    return None


def make_adapter(settings: Settings) -> SendAdapter:
    """The adapter ``settings.send_adapter`` names."""
    if settings.send_adapter == "meta":
        return GraphSendAdapter(settings)
    return LogAdapter()
