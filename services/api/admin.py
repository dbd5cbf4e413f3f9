"""Administration: SLA policies and figures, dead letters, classifier corrections."""

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as FastApiPath
from faststream.nats import NatsBroker
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import ColumnElement, Select, case, func, select
from sqlmodel import col

from services.api.auth import AdminKey, AgentKey, ReadKey
from services.api.clocks import match_order
from services.api.deps import ReadSessionDep, RowId, SessionDep, committing
from services.api.idempotency import IdempotencyKey, committing_once, idempotent
from services.api.lifecycle import ACTIVE
from services.api.schemas import KEYED, Problem
from shared.business_hours import Calendar
from shared.events import Category, Channel, Priority, utcnow
from shared.models import (
    AgentRow,
    ConversationRow,
    CorrectionRow,
    DeadLetterRow,
    MessageRow,
    SlaClockRow,
    SlaPolicyRow,
    TeamRow,
)
from shared.states import ClockState
from shared.streams import MSG_ID_HEADER

router = APIRouter(
    prefix="/v1",
    tags=["administration"],
    responses={**KEYED, 403: {"model": Problem}},
)


MAX_TARGET_SECONDS = 365 * 86_400
PausingStatus = Literal["pending", "waiting", "snoozed"]


class PolicyIn(BaseModel):
    """An SLA policy: targets in seconds (null: not measured), 24/7 or in business hours."""

    name: str = Field(min_length=1, max_length=128)
    priority: Priority
    category: Category | None = None
    channel: Channel | None = None
    first_response_seconds: int | None = Field(default=None, gt=0, le=MAX_TARGET_SECONDS)
    next_response_seconds: int | None = Field(default=None, gt=0, le=MAX_TARGET_SECONDS)
    resolution_seconds: int | None = Field(default=None, gt=0, le=MAX_TARGET_SECONDS)
    calendar: Calendar | None = None
    counts_bot: bool = False
    at_risk_share: float = Field(default=0.8, gt=0, lt=1)
    pausing_statuses: list[PausingStatus] | None = Field(
        default=None,
        max_length=3,
        description="Conversation statuses that pause this policy's clocks (null: pending,"
        " waiting and snoozed; [] : none, the clocks run until the conversation is"
        " resolved). An open conversation's clocks always run.",
    )

    @model_validator(mode="after")
    def _has_a_target(self) -> "PolicyIn":
        if not (
            self.first_response_seconds or self.next_response_seconds or self.resolution_seconds
        ):
            raise ValueError("a policy needs at least one target")
        if self.calendar is not None and not any(self.calendar.hours.values()):
            raise ValueError("the calendar has no opening hours: its clocks could never run")
        return self


class PolicyOut(PolicyIn):
    """A stored policy."""

    id: int
    created_at: datetime
    archived_at: datetime | None


def _policy_out(row: SlaPolicyRow) -> PolicyOut:
    return PolicyOut.model_validate(row, from_attributes=True)


@router.get("/sla/policies")
async def list_policies(session: ReadSessionDep, _key: ReadKey) -> list[PolicyOut]:
    """The active SLA policies in match order: the first that matches a conversation applies
    (by priority; then category and channel, category and any channel, channel, neither)."""
    rows = await session.execute(
        select(SlaPolicyRow).where(col(SlaPolicyRow.archived_at).is_(None))
    )
    return [_policy_out(row) for row in sorted(rows.scalars(), key=match_order)]


@router.post(
    "/sla/policies",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": Problem, "description": "Another policy covers the same DMs."}},
)
async def put_policy(body: PolicyIn, session: SessionDep, _key: AdminKey) -> PolicyOut:
    """Create a policy; one with the same name is archived (its history keeps its targets).

    Two active policies for the same priority, category and channel are a conflict (409):
    which one applied would be a matter of chance.
    """
    async with committing(session):
        active = await session.execute(
            select(SlaPolicyRow).where(col(SlaPolicyRow.archived_at).is_(None))
        )
        now = utcnow()
        category = body.category.value if body.category else None
        channel = body.channel.value if body.channel else None
        for old in active.scalars():
            if old.name == body.name:
                old.archived_at = now
            elif (old.priority, old.category, old.channel) == (
                body.priority.value,
                category,
                channel,
            ):
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    detail=f"active policy {old.name!r} already covers priority "
                    f"{old.priority}, category {old.category or 'any'}, channel "
                    f"{old.channel or 'any'}: change it (same name) or archive it first",
                )
        values: dict[str, Any] = body.model_dump(mode="json")
        row = SlaPolicyRow.model_validate(values)
        session.add(row)
        await session.flush()
        return _policy_out(row)


@router.delete(
    "/sla/policies/{policy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": Problem}},
)
async def archive_policy(policy_id: RowId, session: SessionDep, _key: AdminKey) -> Response:
    """Archive a policy: new clocks stop using it; running ones keep their deadlines."""
    async with committing(session):
        row = await session.get(SlaPolicyRow, policy_id)
        if row is None or row.archived_at is not None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such active policy")
        row.archived_at = utcnow()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class SummaryGroup(StrEnum):
    """How SLA attainment is grouped (team and agent: the conversation's, now)."""

    POLICY = "policy"
    TEAM = "team"
    AGENT = "agent"
    CHANNEL = "channel"


class Attainment(BaseModel):
    """SLA outcomes of one group: each dated when it happened, and the clocks' state now."""

    group: str | None
    metric: str
    met: int = Field(description="Clocks that stopped in time, by when they stopped.")
    breached: int = Field(
        description="Clocks whose deadline passed in the range, stopped or not (dated by the"
        " deadline): what dmdesk_sla_breaches_total counted over the range."
    )
    unanswered: int = Field(
        description="Resolution clocks of conversations resolved without any response."
    )
    running: int = Field(description="Clocks running or paused now.")
    breached_now: int = Field(description="Running or paused clocks past their deadline now.")
    at_risk_now: int = Field(
        description="Running clocks past their at-risk time and not yet breached, now."
    )
    attainment: float | None = Field(description="met / (met + breached); null when none ended.")


@router.get("/sla/summary")
async def sla_summary(
    session: ReadSessionDep,
    _key: ReadKey,
    by: SummaryGroup = SummaryGroup.POLICY,
    since: Annotated[datetime | None, Query(description="Default: 7 days ago.")] = None,
    until: Annotated[datetime | None, Query(description="Default: now.")] = None,
) -> list[Attainment]:
    """Attainment per policy, team, agent or channel, outcomes dated when they happened.

    ``met`` and ``unanswered`` count clocks that stopped in the range, ``breached`` clocks
    whose deadline passed in it (as ``/metrics`` counts breaches); ``running``,
    ``breached_now`` and ``at_risk_now`` are the clocks' state now, whatever the range.
    """
    now = utcnow()
    start = since or now - timedelta(days=7)
    end = until or now
    group = {
        SummaryGroup.POLICY: col(SlaPolicyRow.name),
        SummaryGroup.TEAM: col(ConversationRow.team),
        SummaryGroup.AGENT: col(ConversationRow.assignee),
        SummaryGroup.CHANNEL: col(ConversationRow.channel),
    }[by]
    metric = col(SlaClockRow.metric)

    def counted(*columns: Any) -> Select[Any]:
        return (
            select(group, metric, *columns)
            .join(SlaPolicyRow, col(SlaPolicyRow.id) == col(SlaClockRow.policy_id))
            .join(ConversationRow, col(ConversationRow.id) == col(SlaClockRow.conversation_id))
            .group_by(group, metric)
        )

    def when(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    state, stopped, breached_at = (
        col(SlaClockRow.state),
        col(SlaClockRow.stopped_at),
        col(SlaClockRow.breached_at),
    )
    in_range = stopped.is_not(None) & (stopped >= start) & (stopped < end)
    running = state == ClockState.RUNNING.value
    overdue = breached_at.is_not(None) | (running & (col(SlaClockRow.due_at) <= now))
    outcomes = counted(
        when(in_range & (state == ClockState.MET.value)),
        when(in_range & (state == ClockState.UNANSWERED.value)),
        when(breached_at.is_not(None) & (breached_at >= start) & (breached_at < end)),
        when(state.in_(ACTIVE)),
        when(state.in_(ACTIVE) & overdue),
        when(running & ~overdue & (col(SlaClockRow.at_risk_at) <= now)),
    )
    result = []
    for name, metric_name, met, unanswered, breached, active, overdue_now, at_risk in (
        await session.execute(outcomes)
    ).all():
        if not (met or unanswered or breached or active):
            continue
        ended = met + breached
        result.append(
            Attainment(
                group=name,
                metric=metric_name,
                met=met,
                breached=breached,
                unanswered=unanswered,
                running=active,
                breached_now=overdue_now,
                at_risk_now=at_risk,
                attainment=round(met / ended, 4) if ended else None,
            )
        )
    return sorted(result, key=lambda row: (str(row.group), row.metric))


class DeadLetterOut(BaseModel):
    """A message a stage gave up on."""

    id: int
    stage: str
    subject: str
    stream_sequence: int | None
    deliveries: int
    error_type: str
    error: str
    original: str
    failed_at: datetime
    replayed_at: datetime | None


@router.get("/dead-letters")
async def list_dead_letters(
    session: ReadSessionDep,
    _key: ReadKey,
    stage: str | None = None,
    replayed: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeadLetterOut]:
    """Dead letters, newest first."""
    query = select(DeadLetterRow).order_by(col(DeadLetterRow.id).desc()).limit(limit)
    if stage is not None:
        query = query.where(col(DeadLetterRow.stage) == stage)
    if replayed is not None:
        replay = col(DeadLetterRow.replayed_at)
        query = query.where(replay.is_not(None) if replayed else replay.is_(None))
    rows = await session.execute(query)
    return [DeadLetterOut.model_validate(row, from_attributes=True) for row in rows.scalars()]


@router.post(
    "/dead-letters/{letter_id}/replay",
    responses={404: {"model": Problem}, 409: {"model": Problem}},
)
async def replay_dead_letter(
    letter_id: RowId,
    session: SessionDep,
    request: Request,
    principal: AdminKey,
    idempotency_key: IdempotencyKey = None,
) -> DeadLetterOut:
    """Publish the original message again on its subject (once the cause is fixed).

    Each replay is a new message, so a second replay after a second failure goes
    through; with an Idempotency-Key, a retried request does not replay twice.
    """
    broker: NatsBroker = request.app.state.broker

    async def run() -> DeadLetterOut:
        row = await session.get(DeadLetterRow, letter_id, with_for_update=True)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such dead letter")
        headers = {k: v for k, v in row.headers.items() if k != MSG_ID_HEADER}
        # The key also names the message: a replay retried after a crash between the
        # publish and the commit is dropped by JetStream's dedupe window.
        headers[MSG_ID_HEADER] = f"replay:{row.id}:{idempotency_key or uuid.uuid4().hex}"
        await broker.connection.jetstream().publish(
            row.subject, row.original.encode(), headers=headers
        )
        row.replayed_at = utcnow()
        await session.flush()
        return DeadLetterOut.model_validate(row, from_attributes=True)

    async with committing_once(session):
        return await idempotent(
            session, principal, idempotency_key, request, None, DeadLetterOut, run
        )


class CorrectionOut(BaseModel):
    """A correction with the message text it applies to: one line of training data."""

    id: int
    conversation_id: int
    agent: str
    text: str | None
    old_category: str | None
    new_category: str | None
    old_priority: str | None
    new_priority: str | None
    created_at: datetime


@router.get("/corrections")
async def list_corrections(
    session: ReadSessionDep,
    _key: ReadKey,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[CorrectionOut]:
    """Agents' corrections of the classifier, to retrain it."""
    query = (
        select(CorrectionRow, col(MessageRow.text))
        .outerjoin(MessageRow, col(MessageRow.id) == col(CorrectionRow.message_id))
        .order_by(col(CorrectionRow.id))
        .limit(limit)
    )
    if since is not None:
        query = query.where(col(CorrectionRow.created_at) >= since)
    rows = await session.execute(query)
    return [
        CorrectionOut(**row.model_dump(exclude={"message_id"}), text=text) for row, text in rows
    ]


class AgentIn(BaseModel):
    """An agent's teams, availability and capacity."""

    teams: list[str] = Field(default_factory=list, max_length=50)
    online: bool = False
    capacity: int = Field(default=5, ge=0, le=1000)


class AgentOut(AgentIn):
    """A stored agent."""

    name: str
    last_assigned_at: datetime | None


class TeamIn(BaseModel):
    """A team's queue settings."""

    auto_assign: bool = False


class TeamOut(TeamIn):
    """A stored team."""

    name: str


AgentName = Annotated[str, FastApiPath(min_length=1, max_length=128)]


@router.get("/agents")
async def list_agents(session: ReadSessionDep, _key: ReadKey) -> list[AgentOut]:
    """Every agent."""
    rows = await session.execute(select(AgentRow).order_by(col(AgentRow.name)))
    return [AgentOut.model_validate(row, from_attributes=True) for row in rows.scalars()]


@router.put("/agents/{name}")
async def put_agent(
    name: AgentName, body: AgentIn, session: SessionDep, request: Request, principal: AgentKey
) -> AgentOut:
    """Create or update an agent (going online makes them eligible for auto-assignment);
    a key bound to an agent changes only that agent."""
    principal.acting_as(name, "agent")
    async with committing(session):
        row = (
            await session.execute(select(AgentRow).where(col(AgentRow.name) == name))
        ).scalar_one_or_none() or AgentRow(name=name)
        row.teams, row.online, row.capacity = body.teams, body.online, body.capacity
        session.add(row)
        await session.flush()
        result = AgentOut.model_validate(row, from_attributes=True)
    request.app.state.housekeeper.poke()
    return result


@router.get("/teams")
async def list_teams(session: ReadSessionDep, _key: ReadKey) -> list[TeamOut]:
    """Every team with queue settings."""
    rows = await session.execute(select(TeamRow).order_by(col(TeamRow.name)))
    return [TeamOut.model_validate(row, from_attributes=True) for row in rows.scalars()]


@router.put("/teams/{name}")
async def put_team(
    name: AgentName, body: TeamIn, session: SessionDep, request: Request, _key: AdminKey
) -> TeamOut:
    """Switch auto-assignment on or off for a team."""
    async with committing(session):
        row = (
            await session.execute(select(TeamRow).where(col(TeamRow.name) == name))
        ).scalar_one_or_none() or TeamRow(name=name)
        row.auto_assign = body.auto_assign
        session.add(row)
        await session.flush()
        result = TeamOut.model_validate(row, from_attributes=True)
    request.app.state.housekeeper.poke()
    return result
