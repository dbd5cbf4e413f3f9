"""What agents do: claim, reply, assign, transfer, tag, note, snooze, resolve, reopen, correct.

Every action runs in one transaction on the locked conversation. A retried
request with the same ``Idempotency-Key`` (per API key) gets the first answer
again instead of acting twice; a reply's ``request_id`` is derived from that key,
so even a publish retried after a crash is sent once.
"""

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.api import activity, assignment, clocks
from services.api.auth import AgentKey, Principal
from services.api.changes import changed_in
from services.api.deps import RowId, SessionDep, committing
from services.api.idempotency import IdempotencyKey, committing_once, idempotent
from services.api.metrics import ApiMetrics
from services.api.routes import conversation_detail, queue_order
from services.api.schemas import (
    KEYED,
    MAX_TAGS,
    AssignRequest,
    ClaimRequest,
    ConversationDetail,
    CorrectionRequest,
    InputRefused,
    NoteRequest,
    PrivateInfoRefused,
    Problem,
    ReplyAccepted,
    ReplyRequest,
    SnoozeRequest,
    TagsRequest,
    TransferRequest,
)
from shared import pii, streams
from shared.bus import EventBus
from shared.events import Author, Channel, ConversationRef, OutboundRequest, utcnow
from shared.models import AgentRow, ContactRow, ConversationRow, CorrectionRow, MessageRow, NoteRow
from shared.settings import Settings
from shared.states import ConversationStatus

router = APIRouter(
    prefix="/v1",
    tags=["agent actions"],
    responses={
        **KEYED,
        403: {
            "model": Problem,
            "description": "The scope is too narrow, or the key is bound"
            " to another agent than the one the request names.",
        },
        404: {"model": Problem},
        409: {"model": Problem, "description": "Idempotency-Key conflict"},
        422: {
            "model": Problem | InputRefused,
            "description": "A field did not validate, the agent is not registered, or the"
            " request does not name the agent an unbound key acts for.",
        },
    },
)


async def _locked(session: AsyncSession, conversation_id: int) -> ConversationRow:
    conversation = (
        await session.execute(
            select(ConversationRow)
            .where(col(ConversationRow.id) == conversation_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if conversation is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such conversation")
    return conversation


async def _registered(
    session: AsyncSession, name: str, field: str, *, lock: bool = False
) -> AgentRow:
    """The registered agent ``name``, or 422: a conversation is never given to nobody."""
    agent = await assignment.registered(session, name, lock=lock)
    if agent is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"{field} {name!r} is not a registered agent: register it with "
            f"PUT /v1/agents/{{name}} first",
        )
    return agent


Change = Callable[[AsyncSession, ConversationRow], Awaitable[None]]


async def _move(
    session: AsyncSession,
    conversation: ConversationRow,
    status: ConversationStatus,
    actor: str,
    *,
    until: datetime | None = None,
) -> None:
    """Move the conversation to ``status`` by the lifecycle's rules (clocks included)."""
    now = utcnow()
    await session.run_sync(
        clocks.apply,
        conversation,
        lambda lifecycle: lifecycle.move(status, now, until=until),
        actor,
    )


async def _act(
    session: AsyncSession,
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    conversation_id: RowId,
    change: Change,
) -> ConversationDetail:
    """Apply ``change`` to the locked conversation once, answering with its new state."""

    async def run() -> ConversationDetail:
        conversation = await _locked(session, conversation_id)
        await change(session, conversation)
        conversation.updated_at = utcnow()
        await session.flush()
        return await conversation_detail(session, conversation_id)

    async with committing_once(session):
        result = await idempotent(session, principal, key, request, body, ConversationDetail, run)
    request.app.state.scheduler.deadline_changed()
    await request.app.state.changes.publish(changed_in(session))
    return result


@router.post(
    "/queue/claim",
    responses={
        204: {"description": "Nothing to claim."},
        409: {"model": Problem, "description": "The agent is offline, full, or not in the team."},
    },
    response_model=ConversationDetail,
)
async def claim(
    body: ClaimRequest, session: SessionDep, request: Request, principal: AgentKey
) -> ConversationDetail | Response:
    """Give the agent the next unassigned conversation, atomically (never twice), by the
    rules of round robin: online, within capacity, from their own teams."""
    name = principal.acting_as(body.agent, "agent")
    async with committing(session):
        agent = await _registered(session, name, "agent", lock=True)
        load = (await assignment.loads(session, [agent.name])).get(agent.name, 0)
        reason = assignment.refusal(agent, load, body.team)
        if reason is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=reason)
        query = (
            select(ConversationRow)
            .where(
                col(ConversationRow.status) == ConversationStatus.OPEN.value,
                col(ConversationRow.assignee).is_(None),
            )
            .order_by(*queue_order())
            .limit(1)
        )
        if body.team is not None:
            query = query.where(col(ConversationRow.team) == body.team)
        elif agent.teams:
            query = query.where(col(ConversationRow.team).in_(agent.teams))
        # Concurrent claims pass over each other's rows. When every candidate is locked (by
        # another claim, or for a few milliseconds by the projection writer's group), wait
        # for them instead of answering "nothing to claim": PostgreSQL checks each row again
        # once it is free, so one claimed meanwhile is passed over.
        conversation = (
            await session.execute(query.with_for_update(skip_locked=True))
        ).scalar_one_or_none() or (
            await session.execute(query.with_for_update())
        ).scalar_one_or_none()
        if conversation is None or conversation.id is None:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        conversation.assignee, conversation.assigned_at = name, utcnow()
        activity.record(
            session,
            conversation.id,
            "assigned",
            name,
            conversation.assigned_at,
            assignee=name,
            rule="claim",
        )
        agent.last_assigned_at = conversation.assigned_at
        conversation.updated_at = utcnow()
        await session.flush()
        claimed = await conversation_detail(session, conversation.id)
    await request.app.state.changes.publish(changed_in(session))
    return claimed


@router.post(
    "/conversations/{conversation_id}/reply",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReplyAccepted,
    responses={
        409: {
            "model": PrivateInfoRefused | Problem,
            "description": "The reply holds private information to confirm (card, IBAN...),"
            " or an Idempotency-Key conflict.",
        }
    },
)
async def reply(
    conversation_id: RowId,
    body: ReplyRequest,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ReplyAccepted | JSONResponse:
    """Send a reply to the customer; its delivery result shows on the conversation.

    A reply holding a kind of private information that needs confirming
    (``DMDESK_REPLY_CONFIRM_KINDS``: cards and IBANs) is refused with 409 and the kinds
    found, and sent only when ``confirm_private_info`` lists them. A refusal is not stored
    under the Idempotency-Key, so the confirmed request may reuse the key.
    """
    settings: Settings = request.app.state.settings
    bus: EventBus = request.app.state.bus
    agent = principal.acting_as(body.agent, "agent")
    found = private_info_kinds(body.text)
    unconfirmed = sorted(
        {kind.value for kind in settings.reply_confirm_kinds}.intersection(found)
        - {kind.value for kind in body.confirm_private_info}
    )
    if unconfirmed:
        refused = PrivateInfoRefused(
            detail="the reply holds private information: send it again with these kinds in"
            " confirm_private_info to send it all the same",
            private_info=unconfirmed,
        )
        return JSONResponse(refused.model_dump(), status_code=status.HTTP_409_CONFLICT)

    async def run() -> ReplyAccepted:
        conversation = await _locked(session, conversation_id)
        contact = await session.get(ContactRow, conversation.contact_id)
        assert contact is not None
        request_id = (
            f"agent-{principal.key_id}-{idempotency_key}"
            if idempotency_key
            else f"agent-{uuid.uuid4().hex}"
        )
        event = OutboundRequest(
            request_id=request_id,
            conversation=ConversationRef(
                channel=Channel(conversation.channel),
                account_id=conversation.account_id,
                contact_id=contact.platform_id,
            ),
            text=body.text,
            author=Author.AGENT,
            agent_id=agent,
            customer_last_message_at=conversation.last_customer_message_at,
        )
        await bus.publish(streams.OUTBOUND_REQUESTED_EVENT, event)
        if conversation.assignee is None and await assignment.registered(session, agent):
            assert conversation.id is not None
            conversation.assignee, conversation.assigned_at = agent, utcnow()
            activity.record(
                session,
                conversation.id,
                "assigned",
                principal.actor,
                conversation.assigned_at,
                assignee=agent,
                rule="reply",
            )
        if body.wait_for_customer:
            await _move(session, conversation, ConversationStatus.WAITING, principal.actor)
        return ReplyAccepted(request_id=request_id, private_info=found)

    async with committing_once(session):
        accepted = await idempotent(
            session, principal, idempotency_key, request, body, ReplyAccepted, run
        )
    await request.app.state.changes.publish(changed_in(session))
    return accepted


def private_info_kinds(text: str) -> list[str]:
    """Kinds of private information in an agent's reply (``shared.pii``'s detector)."""
    return sorted({finding.kind.value for finding in pii.find(text)})


@router.post("/conversations/{conversation_id}/assign")
async def assign(
    conversation_id: RowId,
    body: AssignRequest,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ConversationDetail:
    """Give the conversation to a registered agent, or unassign it."""
    if body.assignee is not None:
        principal.acting_as(body.assignee, "assignee")

    async def change(session: AsyncSession, conversation: ConversationRow) -> None:
        assert conversation.id is not None
        if body.assignee is not None:
            await _registered(session, body.assignee, "assignee")
        now = utcnow()
        activity.record(
            session, conversation.id, "assigned", principal.actor, now, assignee=body.assignee
        )
        conversation.assignee = body.assignee
        conversation.assigned_at = now if body.assignee else None

    return await _act(session, request, principal, idempotency_key, body, conversation_id, change)


@router.post("/conversations/{conversation_id}/transfer")
async def transfer(
    conversation_id: RowId,
    body: TransferRequest,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ConversationDetail:
    """Move the conversation to another team's queue."""

    async def change(session: AsyncSession, conversation: ConversationRow) -> None:
        assert conversation.id is not None
        activity.record(
            session, conversation.id, "transferred", principal.actor, utcnow(), team=body.team
        )
        conversation.team, conversation.assignee, conversation.assigned_at = body.team, None, None

    return await _act(session, request, principal, idempotency_key, body, conversation_id, change)


@router.post("/conversations/{conversation_id}/tags")
async def tag(
    conversation_id: RowId,
    body: TagsRequest,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ConversationDetail:
    """Add and remove tags."""

    async def change(_session: AsyncSession, conversation: ConversationRow) -> None:
        tags = [t for t in conversation.tags if t not in body.remove]
        tags += [t for t in dict.fromkeys(body.add) if t not in tags]
        if len(tags) > MAX_TAGS:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"a conversation keeps at most {MAX_TAGS} tags",
            )
        conversation.tags = tags

    return await _act(session, request, principal, idempotency_key, body, conversation_id, change)


@router.post("/conversations/{conversation_id}/notes")
async def note(
    conversation_id: RowId,
    body: NoteRequest,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ConversationDetail:
    """Leave an internal note (never sent to the customer)."""
    author = principal.acting_as(body.author, "author")

    async def change(session: AsyncSession, conversation: ConversationRow) -> None:
        assert conversation.id is not None
        session.add(NoteRow(conversation_id=conversation.id, author=author, text=body.text))

    return await _act(session, request, principal, idempotency_key, body, conversation_id, change)


@router.post("/conversations/{conversation_id}/snooze")
async def snooze(
    conversation_id: RowId,
    body: SnoozeRequest,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ConversationDetail:
    """Hide the conversation until a time; its SLA clocks pause meanwhile."""

    async def change(session: AsyncSession, conversation: ConversationRow) -> None:
        await _move(
            session, conversation, ConversationStatus.SNOOZED, principal.actor, until=body.until
        )

    return await _act(session, request, principal, idempotency_key, body, conversation_id, change)


@router.post("/conversations/{conversation_id}/resolve")
async def resolve(
    conversation_id: RowId,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ConversationDetail:
    """Resolve the conversation; a later customer message reopens it."""
    metrics: ApiMetrics = request.app.state.metrics

    async def change(session: AsyncSession, conversation: ConversationRow) -> None:
        if conversation.status == ConversationStatus.RESOLVED.value:
            return
        now = utcnow()
        stopped = await session.run_sync(
            clocks.apply,
            conversation,
            lambda lifecycle: lifecycle.resolve(now, "human"),
            principal.actor,
        )
        metrics.observe(conversation, stopped)

    return await _act(session, request, principal, idempotency_key, None, conversation_id, change)


@router.post("/conversations/{conversation_id}/reopen")
async def reopen(
    conversation_id: RowId,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ConversationDetail:
    """Reopen a resolved, snoozed or waiting conversation."""

    async def change(session: AsyncSession, conversation: ConversationRow) -> None:
        now = utcnow()
        await session.run_sync(
            clocks.apply, conversation, lambda lifecycle: lifecycle.reopen(now), principal.actor
        )

    return await _act(session, request, principal, idempotency_key, None, conversation_id, change)


@router.post("/conversations/{conversation_id}/classification")
async def correct(
    conversation_id: RowId,
    body: CorrectionRequest,
    session: SessionDep,
    request: Request,
    principal: AgentKey,
    idempotency_key: IdempotencyKey = None,
) -> ConversationDetail:
    """Correct the category and/or priority; kept as training data and counted."""
    metrics: ApiMetrics = request.app.state.metrics
    agent = principal.acting_as(body.agent, "agent")

    async def change(session: AsyncSession, conversation: ConversationRow) -> None:
        assert conversation.id is not None
        last = (
            await session.execute(
                select(col(MessageRow.id))
                .where(
                    col(MessageRow.conversation_id) == conversation.id,
                    col(MessageRow.author) == "customer",
                )
                .order_by(col(MessageRow.platform_ts).desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        session.add(
            CorrectionRow(
                conversation_id=conversation.id,
                message_id=last,
                agent=agent,
                old_category=conversation.category,
                new_category=body.category.value if body.category else None,
                old_priority=conversation.priority,
                new_priority=body.priority.value if body.priority else None,
            )
        )
        if body.category is not None:
            metrics.overrides.labels(body.category.value).inc()
            conversation.category = body.category.value
        if body.priority is not None:
            conversation.priority, conversation.priority_rank = (
                body.priority.value,
                body.priority.rank,
            )
        await session.run_sync(clocks.retarget, conversation, utcnow())

    return await _act(session, request, principal, idempotency_key, body, conversation_id, change)
