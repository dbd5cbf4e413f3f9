"""Ingest's HTTP routes: Meta's webhooks and the generic ``POST /v1/messages``."""

import asyncio
import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from services.ingest.generic import Accepted, GenericBody, GenericMessage
from services.ingest.masking import masked, masked_kinds
from services.ingest.meta import (
    SIGNATURE_HEADER,
    InvalidBody,
    Normalised,
    SignatureVerdict,
    answer_handshake,
    check_signature,
    normalise,
    parse_json,
)
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import (
    BUS_UNAVAILABLE,
    BusUnavailableError,
    EventSink,
    EventTooLargeError,
    bus_size,
    fitted,
)
from services.ingest.requests import MessageRequests
from shared.events import MAX_PLATFORM_LEAD, Channel, utcnow
from shared.ratelimit import RateLimit, retry_after
from shared.settings import Settings

logger = logging.getLogger("dmdesk.ingest")

META_CHANNELS = (Channel.MESSENGER, Channel.INSTAGRAM, Channel.WHATSAPP)
BUS_DOWN_DETAIL = "message bus unavailable; retry later (retries are deduplicated)"
CLIENT_CLOSED_REQUEST = 499  # nginx's code: nobody reads the answer
MAX_ERRORS_SHOWN = 10
# pydantic names the branches of GenericBody (one message, or a list) in an error's loc.
_UNION_TAG = re.compile(r"(GenericMessage|^list\[.*\]$)")
# A client's timestamp may lag the receipt by this much without a trusted key.
PAST_TOLERANCE = MAX_PLATFORM_LEAD


class Refusal(BaseModel):
    """Why a request was refused; nothing of it was published."""

    detail: str
    reason: str = Field(description="Machine-readable reason (the metric's label).")
    field: str | None = Field(default=None, description="The offending field, when one is.")


class WebhookStored(BaseModel):
    """Every event of the body is in JetStream."""

    received: int = Field(description="Events in the body (repeats within it counted once).")
    duplicates: int = Field(description="Of those, stored before (a retried delivery).")


def refusal(status_code: int, reason: str, detail: str, field: str | None = None) -> JSONResponse:
    """A JSON :class:`Refusal` response."""
    body = Refusal(detail=detail, reason=reason, field=field)
    return JSONResponse(body.model_dump(), status_code=status_code)


def size_limited_route(
    limit: int, metrics: IngestMetrics, body_timeout: float, strict_json: bool = False
) -> type[APIRoute]:
    """A route class that reads at most ``limit`` bytes of body within ``body_timeout``.

    With ``strict_json``, the body is decoded by :func:`parse_json` (no NaN, no lone
    surrogate, bounded depth) before FastAPI validates it, and a validation error is a
    422 :class:`Refusal` naming the field and the reason, never the value sent.
    """

    class SizeLimitedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                if request.method in {"POST", "PUT", "PATCH"}:
                    try:
                        body = await asyncio.wait_for(_read_at_most(request, limit), body_timeout)
                    except TimeoutError:
                        metrics.reject("body_timeout")
                        return refusal(
                            status.HTTP_408_REQUEST_TIMEOUT,
                            "body_timeout",
                            f"the body did not arrive within {body_timeout:g} s",
                        )
                    except ClientDisconnect:
                        metrics.reject("client_disconnected")
                        return Response(status_code=CLIENT_CLOSED_REQUEST)
                    if body is None:
                        metrics.reject("body_too_large")
                        return refusal(
                            status.HTTP_413_CONTENT_TOO_LARGE,
                            "body_too_large",
                            f"the body is larger than {limit} bytes",
                        )
                    # Starlette's Request.body() and .json() return these caches.
                    request._body = body
                    if strict_json:
                        try:
                            request._json = parse_json(body)
                        except InvalidBody as exc:
                            metrics.reject("invalid_body")
                            return refusal(
                                status.HTTP_400_BAD_REQUEST, "invalid_body", exc.reason, exc.field
                            )
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    metrics.reject("invalid_message")
                    field, detail = validation_summary(exc.errors())
                    return refusal(
                        status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid_message", detail, field
                    )

            return limited

    return SizeLimitedRoute


def validation_summary(errors: Sequence[Any]) -> tuple[str | None, str]:
    """The first offending field and every error's field and reason, never the input."""
    described: list[str] = []
    first: str | None = None
    # Of a union's branches, the errors of the one that got furthest (the body's own shape).
    deepest = max((len(error.get("loc", ())) for error in errors), default=0)
    branch = next((e["loc"][:2] for e in errors if len(e.get("loc", ())) == deepest), ())
    errors = [e for e in errors if tuple(e.get("loc", ()))[:2] == tuple(branch)] or errors
    for error in errors[:MAX_ERRORS_SHOWN]:
        parts = [
            str(part)
            for part in error.get("loc", ())
            if part != "body" and not _UNION_TAG.search(str(part))
        ]
        field = ".".join(parts) or None
        first = first or field
        described.append(f"{field or 'body'}: {error.get('msg', 'invalid')}")
    return first, "; ".join(described)[:2000]


async def _read_at_most(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def meta_secrets(settings: Settings) -> list[str]:
    """Every configured Meta app secret."""
    values = [settings.meta_app_secret, *settings.meta_app_secrets.values()]
    return [secret.get_secret_value() for secret in values if secret.get_secret_value()]


def verify_tokens(settings: Settings) -> list[str]:
    """Every configured webhook verify token."""
    values = [settings.meta_verify_token, *settings.meta_verify_tokens]
    return [token.get_secret_value() for token in values if token.get_secret_value()]


def webhooks_router(
    settings: Settings, sink: EventSink, requests: MessageRequests, metrics: IngestMetrics
) -> APIRouter:
    """``GET`` (handshake) and ``POST`` (events) on ``/webhooks/<channel>`` for Meta's three."""
    router = APIRouter(
        tags=["webhooks"],
        route_class=size_limited_route(
            settings.ingest_max_body_bytes, metrics, settings.ingest_body_timeout_seconds
        ),
    )
    secrets = meta_secrets(settings)
    tokens = verify_tokens(settings)
    kinds = masked_kinds(settings.ingest_masked_kinds)
    if not secrets:
        logger.warning("no Meta app secret configured: every webhook POST is refused")

    def handshake(channel: Channel) -> Callable[[Request], Awaitable[Response]]:
        async def verify(request: Request) -> Response:
            answer = answer_handshake(request.query_params, tokens)
            if answer.challenge is None:
                metrics.reject("handshake_refused")
                logger.warning("webhook handshake refused", extra={"channel": channel.value})
                return refusal(
                    status.HTTP_403_FORBIDDEN, "handshake_refused", answer.refusal or "refused"
                )
            return PlainTextResponse(answer.challenge)

        verify.__doc__ = f"Meta's verification handshake for the {channel.value} webhook."
        return verify

    def receiver(channel: Channel) -> Callable[[Request], Awaitable[Response]]:
        async def receive(request: Request) -> Response:
            body = await request.body()
            verdict = check_signature(body, request.headers.get(SIGNATURE_HEADER), secrets)
            if verdict != SignatureVerdict.VALID:
                metrics.reject(verdict.value)
                logger.warning(
                    "webhook refused", extra={"channel": channel.value, "reason": verdict.value}
                )
                missing = verdict == SignatureVerdict.MISSING
                return refusal(
                    status.HTTP_401_UNAUTHORIZED if missing else status.HTTP_403_FORBIDDEN,
                    verdict.value,
                    SIGNATURE_DETAILS[verdict],
                    SIGNATURE_HEADER,
                )
            try:
                batch = normalise(channel, parse_json(body))
            except InvalidBody as exc:
                metrics.reject("invalid_body")
                return refusal(status.HTTP_400_BAD_REQUEST, "invalid_body", exc.reason, exc.field)
            try:
                annotated = masked(await requests.annotate(batch.events), kinds)
                events = fitted(annotated, sink.room())
                duplicates = await sink.store(events)
            except EventTooLargeError as exc:
                metrics.reject("event_too_large")
                return refusal(status.HTTP_413_CONTENT_TOO_LARGE, "event_too_large", str(exc))
            except (BusUnavailableError, *BUS_UNAVAILABLE):
                metrics.reject("bus_unavailable")
                return refusal(
                    status.HTTP_503_SERVICE_UNAVAILABLE, "bus_unavailable", BUS_DOWN_DETAIL
                )
            logger.debug(
                "webhook stored",
                extra={"channel": channel.value, "events": len(events), "duplicates": duplicates},
            )
            stored = WebhookStored(received=len(events), duplicates=duplicates + batch.repeated)
            return JSONResponse(stored.model_dump())

        receive.__doc__ = (
            f"Meta's {channel.value} webhook: answered 200 once every event is in JetStream."
        )
        return receive

    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": Refusal, "description": description}
        for code, description in (
            (400, "malformed JSON or not a webhook of this channel"),
            (401, "X-Hub-Signature-256 missing"),
            (403, "signature does not match, or handshake refused"),
            (413, "body too large"),
            (503, "NATS unavailable; retry (deduplicated)"),
        )
    }
    for channel in META_CHANNELS:
        path = f"/webhooks/{channel.value}"
        router.add_api_route(
            path,
            handshake(channel),
            methods=["GET"],
            response_class=PlainTextResponse,
            responses={403: responses[403]},
            summary=f"Verify the {channel.value} webhook",
            name=f"verify_{channel.value}",
        )
        router.add_api_route(
            path,
            receiver(channel),
            methods=["POST"],
            response_model=WebhookStored,
            responses=responses,
            summary=f"Receive {channel.value} events",
            name=f"receive_{channel.value}",
        )
    return router


SIGNATURE_DETAILS = {
    SignatureVerdict.MISSING: f"the {SIGNATURE_HEADER} header is missing",
    SignatureVerdict.MALFORMED: f"{SIGNATURE_HEADER} must be sha256=<64 hex digits>",
    SignatureVerdict.MISMATCH: f"{SIGNATURE_HEADER} does not match the body",
    SignatureVerdict.NOT_CONFIGURED: "no Meta app secret is configured, so nothing can be verified",
}

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An ingest key.")
_bearer = HTTPBearer(auto_error=False, description="The same ingest key as a bearer token.")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who posts to ``/v1/messages``: a key's digest, or the client address when open."""

    source: str
    trusted: bool


def _digests(values: Sequence[str]) -> list[bytes]:
    return [digest.strip().lower().encode() for digest in values]


def _matches(digest: bytes, allowed: Sequence[bytes]) -> bool:
    matched = False
    for candidate in allowed:
        matched |= hmac.compare_digest(digest, candidate)
    return matched


def api_key_guard(settings: Settings, metrics: IngestMetrics) -> Callable[..., Awaitable[Caller]]:
    """A dependency: an ingest key (or ``ingest_open``), within the per-source rate limit."""
    trusted = _digests(settings.ingest_trusted_key_hashes)
    keys = _digests(settings.ingest_api_key_hashes) + trusted
    limiter = RateLimit(settings.ingest_rate_limit)

    async def guard(
        request: Request,
        header_key: Annotated[str | None, Security(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Caller:
        key = header_key or (bearer.credentials if bearer else None)
        if key:
            digest = hashlib.sha256(key.encode()).hexdigest().encode()
            if not _matches(digest, keys):
                metrics.reject("api_key_invalid")
                raise HTTPException(status.HTTP_403_FORBIDDEN, detail="unknown API key")
            caller = Caller(f"key:{digest.decode()[:16]}", _matches(digest, trusted))
        elif settings.ingest_open:
            address = request.client.host if request.client else "unknown"
            caller = Caller(f"address:{address}", trusted=False)
        else:
            metrics.reject("api_key_missing")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing ingest key: send X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if (wait := await limiter.hit(caller.source)) is not None:
            metrics.reject("rate_limited")
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail="too many requests from this source; retry after Retry-After seconds",
                headers=retry_after(wait),
            )
        return caller

    return guard


def trusted_fields(message: GenericMessage, now: datetime) -> list[str]:
    """The fields of ``message`` that only a trusted key may set."""
    contact = message.contact
    return [
        name
        for name, present in (
            ("contact.vip", contact.vip),
            ("contact.followers", contact.followers is not None),
            ("contact.tags", bool(contact.tags)),
            (
                "timestamp",
                message.timestamp is not None and message.timestamp < now - PAST_TOLERANCE,
            ),
        )
        if present
    ]


def generic_router(settings: Settings, sink: EventSink, metrics: IngestMetrics) -> APIRouter:
    """``POST /v1/messages``: the generic channel for internal systems."""
    router = APIRouter(
        tags=["messages"],
        route_class=size_limited_route(
            settings.ingest_max_body_bytes,
            metrics,
            settings.ingest_body_timeout_seconds,
            strict_json=True,
        ),
    )
    guard = api_key_guard(settings, metrics)
    kinds = masked_kinds(settings.ingest_masked_kinds)

    @router.post(
        "/v1/messages",
        response_model=Accepted,
        status_code=status.HTTP_202_ACCEPTED,
        responses={
            status.HTTP_400_BAD_REQUEST: {"model": Refusal, "description": "not strict JSON"},
            status.HTTP_401_UNAUTHORIZED: {"description": "ingest key missing"},
            status.HTTP_403_FORBIDDEN: {
                "model": Refusal,
                "description": "unknown key, or fields only a trusted key may set",
            },
            status.HTTP_408_REQUEST_TIMEOUT: {"model": Refusal, "description": "body too slow"},
            status.HTTP_413_CONTENT_TOO_LARGE: {
                "model": Refusal,
                "description": "the body, or one message on the bus, too large",
            },
            status.HTTP_422_UNPROCESSABLE_CONTENT: {
                "model": Refusal,
                "description": "a field out of bounds (field and reason)",
            },
            status.HTTP_429_TOO_MANY_REQUESTS: {"description": "rate limited (Retry-After)"},
            status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "NATS unavailable"},
        },
    )
    async def post_messages(
        body: GenericBody, caller: Annotated[Caller, Depends(guard)]
    ) -> Accepted | JSONResponse:
        """Accept one DM or a batch; answered once every one is stored in JetStream."""
        batch = [
            m for m in (body if isinstance(body, list) else [body]) if isinstance(m, GenericMessage)
        ]
        received = utcnow()
        if not caller.trusted:
            for index, message in enumerate(batch):
                if fields := trusted_fields(message, received):
                    metrics.reject("untrusted_fields")
                    where = f"[{index}]." if isinstance(body, list) else ""
                    return refusal(
                        status.HTTP_403_FORBIDDEN,
                        "untrusted_fields",
                        "only a trusted ingest key may set " + ", ".join(fields),
                        ", ".join(where + field for field in fields),
                    )
        events = masked(
            [
                Normalised(
                    message.to_event(received), f"{Channel.GENERIC.value}:{message.id}", "message"
                )
                for message in batch
            ],
            kinds,
        )
        room = sink.room()
        for index, event in enumerate(events):
            if (size := bus_size(event)) > room:
                metrics.reject("event_too_large")
                return refusal(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    "event_too_large",
                    str(EventTooLargeError(size, room)),
                    f"[{index}]" if isinstance(body, list) else None,
                )
        try:
            duplicates = await sink.store(events)
        except EventTooLargeError as exc:
            metrics.reject("event_too_large")
            return refusal(status.HTTP_413_CONTENT_TOO_LARGE, "event_too_large", str(exc))
        except (BusUnavailableError, *BUS_UNAVAILABLE) as exc:
            metrics.reject("bus_unavailable")
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, BUS_DOWN_DETAIL) from exc
        return Accepted(accepted=len(events), duplicates=duplicates)

    return router


def ingest_routers(
    settings: Settings, sink: EventSink, requests: MessageRequests, metrics: IngestMetrics
) -> list[APIRouter]:
    """Every route of the ingest service (beside health and metrics)."""
    return [
        webhooks_router(settings, sink, requests, metrics),
        generic_router(settings, sink, metrics),
    ]
