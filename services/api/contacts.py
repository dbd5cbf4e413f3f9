"""Contacts an agent can work with: search, a contact's profile and history, tags, VIP, notes."""

import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from services.api import projector
from services.api.auth import AgentKey, ReadKey
from services.api.deps import ReadSessionDep, RowId, SessionDep, committing
from services.api.schemas import KEYED, MAX_TAGS, Problem, Tag
from shared.events import Channel
from shared.models import ContactRow, ConversationRow, unresolved

router = APIRouter(prefix="/v1", tags=["contacts"], responses=KEYED)

MAX_NOTES_CHARS = 10_000


class ContactSummary(BaseModel):
    """A contact as a search lists it."""

    id: int
    channel: str
    platform_id: str = Field(description="Platform id (the phone number on WhatsApp).")
    name: str | None
    first_name: str | None
    username: str | None
    tags: list[str]
    vip: bool
    followers: int | None
    verified: bool | None


class ContactPage(BaseModel):
    """One page of contacts; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[ContactSummary]
    next_cursor: int | None = Field(description="Absent on the last page.")


class ContactConversation(BaseModel):
    """One of the contact's conversations."""

    id: int
    channel: str
    account_id: str
    status: str
    priority: str
    priority_reason: str | None
    team: str | None
    last_message_at: datetime | None


class ContactDetail(ContactSummary):
    """A contact with their platform profile, notes and conversations (with those of the
    contacts linked to them: one person on several channels)."""

    linked: list[ContactSummary] = Field(description="The same person on other channels.")
    last_name: str | None
    profile_pic: str | None
    follows_business: bool | None
    profile_fetched_at: datetime | None
    notes: str | None
    created_at: datetime
    conversations: list[ContactConversation]


class LinkRequest(BaseModel):
    """Another contact who is the same person (on another channel, say)."""

    contact_id: int = Field(ge=1, le=2_147_483_647)


class ContactPatch(BaseModel):
    """What an agent changes on a contact; fields left out stay as they are."""

    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS, description="All tags.")
    vip: bool | None = None
    notes: str | None = Field(default=None, max_length=MAX_NOTES_CHARS)


@router.get("/contacts")
async def list_contacts(
    session: ReadSessionDep,
    _key: ReadKey,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=256, description="Part of a name, username or phone."),
    ] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    channel: Channel | None = None,
    vip: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[int | None, Query(ge=0, le=2_147_483_647)] = None,
) -> ContactPage:
    """Contacts matching a search, oldest first; cursor pages."""
    query = select(ContactRow).order_by(col(ContactRow.id)).limit(limit + 1)
    if q is not None:
        query = query.where(
            or_(
                *(
                    func.lower(column).contains(q.lower(), autoescape=True)
                    for column in (
                        col(ContactRow.name),
                        col(ContactRow.first_name),
                        col(ContactRow.last_name),
                        col(ContactRow.username),
                        col(ContactRow.platform_id),
                    )
                )
            )
        )
    if tag is not None:
        # Tags are a JSON list: match the tag's own JSON string inside it.
        query = query.where(cast(col(ContactRow.tags), String).contains(json.dumps(tag)))
    if channel is not None:
        query = query.where(col(ContactRow.channel) == channel.value)
    if vip is not None:
        query = query.where(col(ContactRow.vip) == vip)
    if cursor is not None:
        query = query.where(col(ContactRow.id) > cursor)
    rows = list((await session.execute(query)).scalars())
    items = [ContactSummary.model_validate(row, from_attributes=True) for row in rows[:limit]]
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return ContactPage(items=items, next_cursor=next_cursor)


async def contact_detail(session: AsyncSession, contact_id: int) -> ContactDetail:
    """A contact with their conversations (404 when there is none)."""
    contact = await session.get(ContactRow, contact_id)
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such contact")
    people = [contact]
    if contact.person_id is not None:
        people = list(
            (
                await session.execute(
                    select(ContactRow)
                    .where(col(ContactRow.person_id) == contact.person_id)
                    .order_by(col(ContactRow.id))
                )
            ).scalars()
        )
    conversations = await session.execute(
        select(ConversationRow)
        .where(col(ConversationRow.contact_id).in_([person.id for person in people]))
        .order_by(col(ConversationRow.id))
    )
    return ContactDetail.model_validate(
        {
            **contact.model_dump(),
            "linked": [
                ContactSummary.model_validate(person, from_attributes=True)
                for person in people
                if person.id != contact_id
            ],
            "conversations": [
                ContactConversation.model_validate(c, from_attributes=True)
                for c in conversations.scalars()
            ],
        }
    )


@router.get("/contacts/{contact_id}", responses={404: {"model": Problem}})
async def get_contact(contact_id: RowId, session: ReadSessionDep, _key: ReadKey) -> ContactDetail:
    """A contact: platform profile, tags, VIP flag, notes and conversations on every channel."""
    return await contact_detail(session, contact_id)


@router.patch("/contacts/{contact_id}", responses={404: {"model": Problem}})
async def patch_contact(
    contact_id: RowId, body: ContactPatch, session: SessionDep, request: Request, _key: AgentKey
) -> ContactDetail:
    """Change a contact's tags, VIP flag or notes; a new VIP's open conversations move up."""
    async with committing(session):
        contact = await session.get(ContactRow, contact_id, with_for_update=True)
        if contact is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such contact")
        if body.tags is not None:
            contact.tags = list(dict.fromkeys(body.tags))
        if body.vip is not None:
            contact.vip = body.vip
        if body.notes is not None:
            contact.notes = body.notes or None
        await session.flush()
        raised = await session.run_sync(_raise_open_conversations, contact_id)
    if raised:
        request.app.state.scheduler.deadline_changed()
        await request.app.state.changes.publish(raised)
    return await contact_detail(session, contact_id)


@router.post("/contacts/{contact_id}/links", responses={404: {"model": Problem}})
async def link_contacts(
    contact_id: RowId, body: LinkRequest, session: SessionDep, _key: AgentKey
) -> ContactDetail:
    """Link another contact as the same person: their histories read as one."""
    async with committing(session):
        pair = list(
            (
                await session.execute(
                    select(ContactRow)
                    .where(col(ContactRow.id).in_([contact_id, body.contact_id]))
                    .with_for_update()
                )
            ).scalars()
        )
        if {row.id for row in pair} != {contact_id, body.contact_id}:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such contact")
        groups = {row.person_id for row in pair if row.person_id is not None}
        members = [
            *pair,
            *(
                (
                    await session.execute(
                        select(ContactRow)
                        .where(col(ContactRow.person_id).in_(groups))
                        .with_for_update()
                    )
                ).scalars()
                if groups
                else ()
            ),
        ]
        person = min(row.id for row in members if row.id is not None)
        for row in members:
            row.person_id = person
    return await contact_detail(session, contact_id)


@router.delete("/contacts/{contact_id}/links", responses={404: {"model": Problem}})
async def unlink_contact(contact_id: RowId, session: SessionDep, _key: AgentKey) -> ContactDetail:
    """Take a contact out of the person they were linked to."""
    async with committing(session):
        contact = await session.get(ContactRow, contact_id, with_for_update=True)
        if contact is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such contact")
        group = contact.person_id
        contact.person_id = None
        if group is not None:
            rest = list(
                (
                    await session.execute(
                        select(ContactRow)
                        .where(col(ContactRow.person_id) == group, col(ContactRow.id) != contact_id)
                        .with_for_update()
                    )
                ).scalars()
            )
            person = min((row.id for row in rest if row.id is not None), default=None)
            for row in rest:
                row.person_id = person if len(rest) > 1 else None
    return await contact_detail(session, contact_id)


def _raise_open_conversations(session: Session, contact_id: int) -> list[int]:
    """Apply the contact rules to the contact's open conversations; the ids raised."""
    open_ones = session.execute(
        select(ConversationRow)
        .where(col(ConversationRow.contact_id) == contact_id, unresolved())
        .with_for_update()
    ).scalars()
    return [
        conversation.id
        for conversation in open_ones
        if projector.raise_for_contact(session, conversation) and conversation.id is not None
    ]
