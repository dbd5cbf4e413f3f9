"""The live rule set of the chatbot: read it, replace it, try it (``/v1/rules``).

The rule set lives in a NATS KV bucket; every responder replica watches it and
switches atomically. A rule set is validated completely (shape, references,
every template rendered) before it is stored: a bad one is refused with the
rule and the reason, and the stored one stays.
"""

import asyncio
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from pydantic import BaseModel, ConfigDict, Field

from services.api.auth import AdminKey, ReadKey
from services.api.schemas import KEYED, InputRefused, Problem
from services.responder.decide import Decision, decide
from services.responder.faq import FaqIndex, load_knowledge_base
from services.responder.live_rules import encode_document, open_rules_bucket, read_document
from services.responder.rules import (
    CompiledRuleSet,
    RuleSetError,
    compile_rule_set,
    load_rule_set_document,
    parse_document,
)
from services.responder.state import ConversationState
from shared.events import (
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    CriticalSignal,
    InboundMessage,
    Moment,
    Priority,
    PrivateInfoKind,
    utcnow,
)
from shared.settings import Settings
from shared.streams import RULES_KEY

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
MAX_RULES_BYTES = 1_048_576


class RuleProblem(BaseModel):
    """One thing wrong with a rule set."""

    rule_id: str | None = Field(description="The rule's id, when the problem is in a rule.")
    rule_index: int | None = Field(description="The rule's position in `rules` (0-based).")
    location: str = Field(description="Where in the rule (or the rule set), e.g. `then.0`.")
    reason: str


class RuleSetRefused(BaseModel):
    """Why a rule set was refused; the stored rule set is unchanged."""

    detail: str
    problems: list[RuleProblem]


class StoredRules(BaseModel):
    """The live rule set and its revision (0: none stored yet, the defaults apply)."""

    revision: int
    stored: bool
    rules: dict[str, Any]


class DryRunContact(BaseModel):
    """The customer in a dry run."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=512)
    tags: list[str] = Field(default_factory=list, max_length=50)
    vip: bool = False


class DryRunState(BaseModel):
    """The conversation so far, as the responder would remember it."""

    model_config = ConfigDict(extra="forbid")

    messages_seen: int = Field(default=0, ge=0)
    bot_turns: int = Field(default=0, ge=0)
    faq_misses: int = Field(default=0, ge=0)
    opted_out: bool = False
    human_took_over: bool = False
    last_customer_message_at: Moment | None = None


class DryRunRequest(BaseModel):
    """A DM to try against the rules: its text and how the classifier saw it."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)
    channel: Channel = Channel.GENERIC
    language: str | None = Field(default=None, max_length=16, examples=["en"])
    category: Category = Category.INQUIRY
    priority: Priority = Priority.NORMAL
    confidence: float = Field(default=1.0, ge=0, le=1)
    spam: bool = False
    complaint: bool = Field(default=False, description="The classifier's complaint flag.")
    sentiment: float = Field(default=0.0, ge=-1, le=1)
    critical: list[CriticalSignal] = Field(
        default_factory=list, description="Critical signals the classifier found."
    )
    masked: list[PrivateInfoKind] = Field(
        default_factory=list, description="Kinds of private information ingest masked."
    )
    contact: DryRunContact = Field(default_factory=DryRunContact)
    at: Moment | None = Field(
        default=None, description="When it was sent (2000 to 2100); now if absent."
    )
    state: DryRunState = Field(default_factory=DryRunState)
    rules: dict[str, Any] | None = Field(
        default=None, description="A rule set to try instead of the live one (not stored)."
    )


class DryRunResult(BaseModel):
    """What the bot would do, and why."""

    revision: int = Field(description="Revision of the rule set used (0: defaults or `rules`).")
    decision: Decision


@lru_cache(maxsize=4)
def _faq(path: Path | None) -> FaqIndex:
    return FaqIndex(load_knowledge_base(path))


def _refused(error: RuleSetError) -> JSONResponse:
    body = RuleSetRefused(
        detail=f"rule set refused: {error}",
        problems=[RuleProblem(**problem.as_dict()) for problem in error.problems],
    )
    return JSONResponse(body.model_dump(), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


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


def rules_router(get_js: Callable[[], JetStreamContext], settings: Settings) -> APIRouter:
    """The ``/v1/rules`` routes; ``get_js`` gives the process's JetStream context."""
    router = APIRouter(
        prefix="/v1",
        tags=["rules"],
        responses={**KEYED, 403: {"model": Problem}},
    )

    async def stored() -> tuple[dict[str, Any] | None, int]:
        kv = await open_rules_bucket(get_js(), settings)
        return await read_document(kv)

    async def live() -> tuple[CompiledRuleSet, int]:
        document, revision = await stored()
        if document is None:
            document, revision = load_rule_set_document(settings.rules_path), 0
        return compile_rule_set(document), revision

    @router.get("/rules")
    async def get_rules(_key: ReadKey) -> StoredRules:
        """The live rule set (the packaged defaults while none is stored)."""
        document, revision = await stored()
        if document is None:
            return StoredRules(
                revision=0, stored=False, rules=load_rule_set_document(settings.rules_path)
            )
        return StoredRules(revision=revision, stored=True, rules=document)

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
        kv = await open_rules_bucket(get_js(), settings)
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
        return StoredRules(revision=revision, stored=True, rules=document)

    @router.post(
        "/rules/dry-run",
        response_model=DryRunResult,
        responses={422: {"model": RuleSetRefused | InputRefused}},
    )
    async def dry_run(body: DryRunRequest, _key: ReadKey) -> DryRunResult | JSONResponse:
        """What the bot would do with this DM (nothing is sent or stored)."""
        try:
            if body.rules is not None:
                rules, revision = compile_rule_set(body.rules), 0
            else:
                rules, revision = await live()
        except RuleSetError as error:
            return _refused(error)
        at = body.at or utcnow()
        classified = ClassifiedMessage(
            message=InboundMessage(
                mid="dry-run",
                channel=body.channel,
                account_id="dry-run",
                contact=Contact(
                    platform_id="dry-run",
                    name=body.contact.name,
                    tags=body.contact.tags,
                    vip=body.contact.vip,
                ),
                text=body.text,
                masked=body.masked,
                platform_ts=at,
            ),
            classification=Classification(
                language=body.language,
                category=body.category,
                confidence=body.confidence,
                priority=body.priority,
                spam=body.spam,
                complaint=body.complaint,
                sentiment=body.sentiment,
                critical=body.critical,
                model_version="dry-run",
            ),
        )
        state = ConversationState(**body.state.model_dump())
        faq = await asyncio.to_thread(_faq, settings.faq_path)
        decision = decide(
            classified, state, rules, faq, default_team=settings.default_team, now=max(at, utcnow())
        )
        return DryRunResult(revision=revision, decision=decision)

    return router
