"""``new_row``: the writer's cheap constructor builds what a table model's own does, and the
rows it builds are stored and then tracked like any other (SQLite and PostgreSQL)."""

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel

from shared.events import utcnow
from shared.models import (
    ActivityRow,
    ContactRow,
    ConversationRow,
    SlaClockRow,
    SlaPolicyRow,
    new_row,
)

NOW = utcnow()


def _clock(conversation_id: int = 1, policy_id: int = 1) -> dict[str, object]:
    return {
        "conversation_id": conversation_id,
        "policy_id": policy_id,
        "metric": "first_response",
        "started_at": NOW,
        "due_at": NOW + timedelta(hours=1),
        "at_risk_at": NOW + timedelta(minutes=45),
        "team": "support",
    }


def _activity() -> dict[str, object]:
    return {"conversation_id": 1, "at": NOW, "kind": "opened", "actor": "system", "detail": {}}


@pytest.mark.parametrize(("model", "values"), [(SlaClockRow, _clock()), (ActivityRow, _activity())])
def test_it_builds_what_the_constructor_builds(
    model: type[SQLModel], values: dict[str, object]
) -> None:
    built, constructed = new_row(model, **values), model(**values)
    assert built.model_dump() == constructed.model_dump()
    assert built.model_fields_set == constructed.model_fields_set == set(values)
    assert built.model_dump()["id"] is None


def test_an_unknown_field_is_an_error_not_a_silent_drop() -> None:
    with pytest.raises(TypeError, match="no field"):
        new_row(ActivityRow, conversation=1)


async def test_its_rows_are_inserted_then_tracked(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        contact = ContactRow(channel="generic", platform_id="p-1", tags=[])
        session.add(contact)
        await session.flush()
        assert contact.id is not None
        conversation = ConversationRow(
            channel="generic", account_id="page", contact_id=contact.id, tags=[]
        )
        session.add(conversation)
        await session.flush()
        assert conversation.id is not None
        policy_id = (await session.execute(select(SlaPolicyRow.id).limit(1))).scalar_one()
        clock = new_row(SlaClockRow, **_clock(conversation.id, policy_id))
        line = new_row(ActivityRow, **{**_activity(), "conversation_id": conversation.id})
        session.add_all([clock, line])
        await session.flush()
        assert clock.id is not None
        assert line.id is not None
        clock.state, clock.stopped_at = "stopped", NOW  # a change after the insert is stored
        await session.commit()
    async with sessions() as session:
        stored = await session.get(SlaClockRow, clock.id)
        assert stored is not None
        assert (stored.state, stored.stopped_at, stored.team, stored.at_risk_fired) == (
            "stopped",
            NOW,
            "support",
            False,
        )
        assert stored.due_at == NOW + timedelta(hours=1)
        logged = await session.get(ActivityRow, line.id)
        assert logged is not None
        assert (logged.kind, logged.actor, logged.detail) == ("opened", "system", {})
