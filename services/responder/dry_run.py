"""The rules dry run, answered by the responder: what the bot would do with a DM.

The api asks on ``shared.decisions.DRY_RUN_SUBJECT`` (core NATS request-reply); one
replica of the queue group answers with :func:`decide` on its live rule set and FAQ,
the very code and data that decide real DMs. Nothing is sent or stored.
"""

import logging
from collections.abc import Callable
from datetime import datetime

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from services.responder.decide import decide
from services.responder.faq import FaqIndex
from services.responder.state import ConversationState
from shared.decisions import (
    DRY_RUN_QUEUE,
    DRY_RUN_SUBJECT,
    DryRunAnswer,
    DryRunRequest,
    DryRunResult,
    RuleProblem,
)
from shared.events import (
    Classification,
    ClassifiedMessage,
    Contact,
    InboundMessage,
    utcnow,
)
from shared.rules import CompiledRuleSet, RuleSetError, compile_rule_set

logger = logging.getLogger("dmdesk.responder")


def answer(
    request: DryRunRequest,
    live: CompiledRuleSet,
    faq: FaqIndex | None,
    *,
    default_team: str,
    now: datetime,
) -> DryRunAnswer:
    """What the bot would decide about ``request``, on its rules or on the live ones."""
    if request.rules is not None:
        try:
            rules, revision = compile_rule_set(request.rules), 0
        except RuleSetError as error:
            return DryRunAnswer(
                refused=str(error),
                problems=[RuleProblem(**problem.as_dict()) for problem in error.problems],
            )
    else:
        rules, revision = live, live.revision
    at = request.at or now
    classified = ClassifiedMessage(
        message=InboundMessage(
            mid="dry-run",
            channel=request.channel,
            account_id="dry-run",
            contact=Contact(
                platform_id="dry-run",
                name=request.contact.name,
                tags=request.contact.tags,
                vip=request.contact.vip,
            ),
            text=request.text,
            masked=request.masked,
            platform_ts=at,
        ),
        classification=Classification(
            language=request.language,
            category=request.category,
            confidence=request.confidence,
            priority=request.priority,
            spam=request.spam,
            complaint=request.complaint,
            sentiment=request.sentiment,
            critical=request.critical,
            model_version="dry-run",
        ),
    )
    state = ConversationState(**request.state.model_dump())
    decision = decide(classified, state, rules, faq, default_team=default_team, now=max(at, now))
    return DryRunAnswer(result=DryRunResult(revision=revision, decision=decision))


async def serve_dry_runs(
    client: NatsClient,
    live: Callable[[], CompiledRuleSet],
    faq: FaqIndex | None,
    default_team: str,
) -> Subscription:
    """Answer dry-run requests on ``client`` (in the replicas' queue group) until it closes."""

    async def on_request(msg: Msg) -> None:
        try:
            request = DryRunRequest.model_validate_json(msg.data)
            reply = answer(request, live(), faq, default_team=default_team, now=utcnow())
        except (ValidationError, RuleSetError, ValueError) as error:
            logger.warning("dry run failed", extra={"error_type": type(error).__name__})
            reply = DryRunAnswer(error_type=type(error).__name__)
        await msg.respond(reply.model_dump_json().encode())

    return await client.subscribe(DRY_RUN_SUBJECT, queue=DRY_RUN_QUEUE, cb=on_request)
