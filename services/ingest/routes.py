"""Ingest's HTTP routes: Meta's webhooks and the generic ``POST /v1/messages``."""

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security, status
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from services.ingest.generic import Accepted, GenericBody, GenericMessage
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
from shared.events import Channel
from shared.settings import Settings

logger = logging.getLogger("dmdesk.ingest")

META_CHANNELS = (Channel.MESSENGER, Channel.INSTAGRAM, Channel.WHATSAPP)
BUS_DOWN_DETAIL = "message bus unavailable; retry later (retries are deduplicated)"


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


def size_limited_route(limit: int, metrics: IngestMetrics) -> type[APIRoute]:
    """A route class that answers 413 before reading more than ``limit`` bytes of body."""

    class SizeLimitedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                if request.method in {"POST", "PUT", "PATCH"}:
                    body = await _read_at_most(request, limit)
                    if body is None:
                        metrics.reject("body_too_large")
                        return refusal(
                            status.HTTP_413_CONTENT_TOO_LARGE,
                            "body_too_large",
                            f"the body is larger than {limit} bytes",
                        )
                    # Starlette's Request.body() returns this cache, so the handler reads it.
                    request._body = body
                return await handler(request)

            return limited

    return SizeLimitedRoute


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
        route_class=size_limited_route(settings.ingest_max_body_bytes, metrics),
    )
    secrets = meta_secrets(settings)
    tokens = verify_tokens(settings)
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
                events = fitted(await requests.annotate(batch.events), sink.room())
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


def api_key_guard(settings: Settings, metrics: IngestMetrics) -> Callable[..., Awaitable[None]]:
    """A dependency requiring one of ``settings.ingest_api_key_hashes``' keys, if any is set."""
    hashes = [digest.strip().lower().encode() for digest in settings.ingest_api_key_hashes]

    async def guard(
        header_key: Annotated[str | None, Security(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> None:
        if not hashes:
            return
        key = header_key or (bearer.credentials if bearer else None)
        if not key:
            metrics.reject("api_key_missing")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing API key: send X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hashlib.sha256(key.encode()).hexdigest().encode()
        matched = False
        for allowed in hashes:
            matched |= hmac.compare_digest(digest, allowed)
        if not matched:
            metrics.reject("api_key_invalid")
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="unknown API key")

    return guard


def generic_router(settings: Settings, sink: EventSink, metrics: IngestMetrics) -> APIRouter:
    """``POST /v1/messages``: the generic channel for internal systems."""
    router = APIRouter(
        tags=["messages"],
        route_class=size_limited_route(settings.ingest_max_body_bytes, metrics),
        dependencies=[Depends(api_key_guard(settings, metrics))],
    )

    @router.post(
        "/v1/messages",
        response_model=Accepted,
        status_code=status.HTTP_202_ACCEPTED,
        responses={
            status.HTTP_401_UNAUTHORIZED: {"description": "API key missing"},
            status.HTTP_403_FORBIDDEN: {"description": "API key unknown"},
            status.HTTP_413_CONTENT_TOO_LARGE: {
                "model": Refusal,
                "description": "the body, or one message on the bus, too large",
            },
            status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "NATS unavailable"},
        },
    )
    async def post_messages(body: GenericBody) -> Accepted | JSONResponse:
        """Accept one DM or a batch; answered once every one is stored in JetStream."""
        batch = body if isinstance(body, list) else [body]
        events = [
            Normalised(message.to_event(), f"{Channel.GENERIC.value}:{message.id}", "message")
            for message in batch
            if isinstance(message, GenericMessage)
        ]
        room = sink.room()
        for index, event in enumerate(events):
            if (size := bus_size(event)) > room:
                metrics.reject("event_too_large")
                where = f"[{index}]" if isinstance(body, list) else None
                return refusal(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    "event_too_large",
                    str(EventTooLargeError(size, room)),
                    where,
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
