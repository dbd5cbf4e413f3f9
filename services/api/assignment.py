"""Who may take a conversation: one rule for a claim and for round robin.

An agent takes work when online, within capacity, and from their own teams (an agent
with no team takes from any). Every conversation assigned to them and not resolved
counts towards capacity, snoozed and waiting ones included: they come back to the
same agent. Only a registered agent (``PUT /v1/agents/{name}``, or a key bound to
them) takes a conversation.
"""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from shared.models import AgentRow, ConversationRow, unresolved


async def registered(session: AsyncSession, name: str, *, lock: bool = False) -> AgentRow | None:
    """The registered agent ``name`` (locked for update with ``lock``), or None."""
    query = select(AgentRow).where(col(AgentRow.name) == name)
    return (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()


async def loads(session: AsyncSession, names: list[str]) -> dict[str, int]:
    """How many unresolved conversations each agent of ``names`` holds."""
    if not names:
        return {}
    counted = await session.execute(
        select(col(ConversationRow.assignee), func.count())
        .where(col(ConversationRow.assignee).in_(names), unresolved())
        .group_by(col(ConversationRow.assignee))
    )
    return {str(name): int(count) for name, count in counted.all()}


def refusal(agent: AgentRow, load: int, team: str | None) -> str | None:
    """Why ``agent`` may not take a conversation of ``team`` now (None: they may)."""
    if not agent.online:
        return f"agent {agent.name!r} is offline"
    if load >= agent.capacity:
        return (
            f"agent {agent.name!r} holds {load} conversations, their capacity is {agent.capacity}"
        )
    if team is not None and agent.teams and team not in agent.teams:
        return f"agent {agent.name!r} is not in team {team!r}"
    return None
