"""Projecting ``dm.contact.profile`` (SQLite and PostgreSQL): contact stored, priority raised."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import projector
from shared.db import transaction
from shared.events import (
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    ContactProfile,
    ConversationRef,
    InboundMessage,
    Priority,
    ProfileSource,
)
from shared.models import ContactRow, ConversationRow

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
REF = ConversationRef(channel=Channel.INSTAGRAM, account_id="ig-1", contact_id="igsid-1")


def classified(priority: Priority) -> ClassifiedMessage:
    return ClassifiedMessage(
        message=InboundMessage(
            mid="m-1",
            channel=Channel.INSTAGRAM,
            account_id="ig-1",
            contact=Contact(platform_id="igsid-1"),
            text="hello",
            platform_ts=T0,
        ),
        classification=Classification(
            category=Category.INQUIRY, confidence=0.9, priority=priority, model_version="t"
        ),
    )


def profile(followers: int, *, at: datetime = T0, verified: bool = False) -> ContactProfile:
    return ContactProfile(
        conversation=REF,
        source=ProfileSource.GRAPH,
        name="Star Creator",
        username="star",
        followers=followers,
        verified=verified,
        follows_business=True,
        fetched_at=at,
    )


async def rows(sessions: async_sessionmaker[AsyncSession]) -> tuple[ConversationRow, ContactRow]:
    async with sessions() as session:
        conversation = (await session.execute(select(ConversationRow))).scalar_one()
        contact = (await session.execute(select(ContactRow))).scalar_one()
        return conversation, contact


async def test_an_influencer_profile_raises_the_queued_conversation_with_a_reason(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_classified, classified(Priority.NORMAL))
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_contact_profile, profile(400_000))
    conversation, contact = await rows(sessions)
    assert (conversation.priority, conversation.priority_rank) == ("high", 1)
    assert conversation.priority_reason == "contact with 400000 followers -> high"
    assert (contact.name, contact.username, contact.followers) == ("Star Creator", "star", 400_000)
    assert contact.follows_business is True


async def test_a_profile_never_lowers_a_priority(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_classified, classified(Priority.URGENT))
        await session.run_sync(projector.project_contact_profile, profile(400_000))
    conversation, _ = await rows(sessions)
    assert conversation.priority == "urgent"
    assert conversation.priority_reason is None


async def test_a_small_account_stays_where_it_is(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_classified, classified(Priority.NORMAL))
        await session.run_sync(projector.project_contact_profile, profile(120))
    conversation, contact = await rows(sessions)
    assert conversation.priority == "normal"
    assert contact.followers == 120


async def test_a_verified_account_moves_up(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_classified, classified(Priority.LOW))
        await session.run_sync(projector.project_contact_profile, profile(50, verified=True))
    conversation, _ = await rows(sessions)
    assert conversation.priority == "high"
    assert conversation.priority_reason == "verified account -> high"


async def test_a_profile_before_the_classification_still_raises_the_priority(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_contact_profile, profile(400_000))
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_classified, classified(Priority.NORMAL))
    conversation, _ = await rows(sessions)
    assert conversation.priority == "high"


async def test_an_older_profile_does_not_overwrite_a_newer_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_contact_profile, profile(500))
        await session.run_sync(
            projector.project_contact_profile, profile(90, at=T0 - timedelta(days=1))
        )
    _, contact = await rows(sessions)
    assert contact.followers == 500
