"""The live rule set of the chatbot: read it, replace it, try it (``/v1/rules``).

The rule set lives in a NATS KV bucket; every responder replica watches it and
switches atomically. A rule set is validated completely (shape, references,
every template rendered) before it is stored: a bad one is refused with the
rule and the reason, and the stored one stays. The dry run is the responder's
to answer (``shared.decisions``): the api holds the rule-set contract, not the bot.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.js.errors import KeyWrongLastSequenceError
from pydantic import BaseModel, Field, ValidationError

from services.api.auth import AdminKey, ReadKey
from services.api.schemas import KEYED, InputRefused, Problem
from shared.decisions import (
    DRY_RUN_SUBJECT,
    DryRunAnswer,
    DryRunRequest,
    DryRunResult,
    RuleProblem,
)
from shared.live_rules import (
    default_releases,
    defaults_release,
    encode_document,
    open_rules_bucket,
    read_document,
)
from shared.rules import RuleSetError, compile_rule_set, load_rule_set_document, parse_document
from shared.settings import Settings
from shared.streams import RULES_KEY

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
MAX_RULES_BYTES = 1_048_576


class RuleSetRefused(BaseModel):
    """Why a rule set was refused; the stored rule set is unchanged."""

    detail: str
    problems: list[RuleProblem]


class StoredRules(BaseModel):
    """The live rule set and its revision (0: none stored yet, the defaults apply)."""

    revision: int
    stored: bool
    rules: dict[str, Any]
    defaults_release: int | None = Field(
        description="Which release of dmdesk's packaged default rules the set is, untouched"
        " (1: the first; a responder upgrades it to the newest when it starts), or null for a"
        " customised set, which is kept as it is."
    )


def _stored_rules(revision: int, document: dict[str, Any], *, stored: bool = True) -> StoredRules:
    release = defaults_release(document, default_releases())
    return StoredRules(revision=revision, stored=stored, rules=document, defaults_release=release)


def _refused(error: RuleSetError) -> JSONResponse:
    return _refusal(str(error), [RuleProblem(**problem.as_dict()) for problem in error.problems])


def _refusal(reason: str, problems: list[RuleProblem]) -> JSONResponse:
    body = RuleSetRefused(detail=f"rule set refused: {reason}", problems=problems)
    return JSONResponse(body.model_dump(), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _no_answer(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"no dry run: {reason}; try again later"
    )


async def _document(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_RULES_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "rule set larger than 1 MiB")
    return parse_document(raw)


RULES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The rule set as JSON, or as YAML with Content-Type application/yaml.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def rules_router(get_client: Callable[[], NatsClient], settings: Settings) -> APIRouter:
    """The ``/v1/rules`` routes; ``get_client`` gives the process's NATS connection."""
    router = APIRouter(
        prefix="/v1",
        tags=["rules"],
        responses={**KEYED, 403: {"model": Problem}},
    )

    async def stored() -> tuple[dict[str, Any] | None, int]:
        kv = await open_rules_bucket(get_client().jetstream(), settings)
        return await read_document(kv)

    @router.get("/rules")
    async def get_rules(_key: ReadKey) -> StoredRules:
        """The live rule set (the packaged defaults while none is stored)."""
        document, revision = await stored()
        if document is None:
            return _stored_rules(0, load_rule_set_document(settings.rules_path), stored=False)
        return _stored_rules(revision, document)

    @router.put(
        "/rules",
        response_model=StoredRules,
        openapi_extra=RULES_BODY,
        responses={
            400: {"model": Problem, "description": "If-Match is not a revision number."},
            412: {"description": "If-Match names a revision that is no longer the live one."},
            413: {"description": "The rule set is larger than 1 MiB."},
            422: {"model": RuleSetRefused | InputRefused},
        },
    )
    async def put_rules(
        request: Request,
        _key: AdminKey,
        if_match: Annotated[
            str | None,
            Header(description="Store only if the live revision is still this one."),
        ] = None,
    ) -> StoredRules | JSONResponse:
        """Validate and store a new rule set; every responder switches to it at once."""
        try:
            document = await _document(request)
            compile_rule_set(document)
        except RuleSetError as error:
            return _refused(error)
        kv = await open_rules_bucket(get_client().jetstream(), settings)
        value = encode_document(document)
        if if_match is None:
            revision = await kv.put(RULES_KEY, value)
        else:
            try:
                revision = await kv.update(RULES_KEY, value, last=int(if_match.strip('"')))
            except ValueError as error:
                raise HTTPException(
                    status.HTTP_400_BAD_REQUEST, "If-Match must be a revision number"
                ) from error
            except KeyWrongLastSequenceError as error:
                raise HTTPException(
                    status.HTTP_412_PRECONDITION_FAILED,
                    "the rule set changed since that revision; GET it again",
                ) from error
        return _stored_rules(revision, document)

    @router.post(
        "/rules/dry-run",
        response_model=DryRunResult,
        responses={
            422: {"model": RuleSetRefused | InputRefused},
            503: {"model": Problem, "description": "No responder answered the dry run."},
        },
    )
    async def dry_run(body: DryRunRequest, _key: ReadKey) -> DryRunResult | JSONResponse:
        """What the bot would do with this DM (nothing is sent or stored): a responder
        replica decides it on its live rule set and FAQ, or on the `rules` given."""
        if body.rules is not None:
            try:
                compile_rule_set(body.rules)
            except RuleSetError as error:
                return _refused(error)
        try:
            reply = await get_client().request(
                DRY_RUN_SUBJECT,
                body.model_dump_json().encode(),
                timeout=settings.dry_run_timeout_seconds,
            )
        except NoRespondersError as error:
            raise _no_answer("no responder is running") from error
        except TimeoutError as error:
            raise _no_answer("no responder answered in time") from error
        try:
            answer = DryRunAnswer.model_validate_json(reply.data)
        except ValidationError as error:
            raise _no_answer("the responder's answer did not validate") from error
        if answer.refused is not None:
            return _refusal(answer.refused, answer.problems)
        if answer.result is None:
            raise _no_answer(f"the responder failed ({answer.error_type})")
        return answer.result

    return router
