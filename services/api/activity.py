"""The activity log: one row per thing that happened to a conversation, with time and actor.

Status changes come from the lifecycle (``clocks.apply`` stores them with the actor of
the move); assignments, transfers, SLA events and bot decisions are recorded here by
the code that makes them. Actors: ``customer``, ``bot``, ``human`` (a reply), the agent
an API key is bound to or else the key's name (agent actions: ``Principal.actor``), an
agent's name (a claim), ``round_robin``, ``housekeeper``, ``sla``, ``system``.
"""

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.models import ActivityRow, new_row


def record(
    session: Session | AsyncSession,
    conversation_id: int,
    kind: str,
    actor: str,
    at: datetime,
    **detail: str | None,
) -> None:
    """Add one line to the conversation's activity log (in the caller's transaction)."""
    session.add(
        new_row(
            ActivityRow,
            conversation_id=conversation_id,
            at=at,
            kind=kind,
            actor=actor,
            detail=detail,
        )
    )
