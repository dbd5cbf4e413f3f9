"""Who wrote: contacts' profiles from the platforms, cached in a NATS KV bucket.

The responder reads every inbound DM on a durable consumer of its own
(``responder-contacts-v2``, which copies attachments too), beside the classifier, never
on ingest's request path: a DM is published and routed whether or not its profile
arrives. For a contact not seen, or whose profile is older than
``DMDESK_PROFILE_REFRESH_HOURS``, one replica claims the fetch (compare-and-set on the
contact's key, so at most one fetch per contact per refresh period across replicas),
asks the platform through :class:`~services.responder.meta.GraphApi` (rate limited per
page, backed off on rate-limit errors), stores the profile and publishes
``dm.contact.profile``.

- Instagram, the messaging user profile: ``GET /{igsid}?fields=name,username,
  profile_pic,follower_count,is_verified_user,is_user_follow_business``.
- Messenger, the user profile: ``GET /{psid}?fields=first_name,last_name,profile_pic``.
- WhatsApp: the profile name the webhook carries (no call).

A failed fetch is a metric and a log line (no names, no text), recorded in the
bucket so the next DM tries again after ``DMDESK_PROFILE_RETRY_MINUTES``.

A fetch takes its token under the rate limit before it claims the contact (a claim is a
fetch in flight, which the responder's decisions wait for). One that finds the page's
limit full does not wait for room: it is queued as ``dm.contact.profile_due``
(unclaimed: no decision waits for it) and claimed and fetched by
:meth:`ProfileFetcher.on_due` from a consumer of its own, as fast as the limit allows. A
spike of new contacts then queues its fetches there while the attachments read with the
DMs are copied at once.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

from services.responder.meta import MAX_BACKOFF_SECONDS, RATE_LIMIT_CODES, GraphApi
from shared.events import (
    Channel,
    ContactProfile,
    ConversationRef,
    InboundMessage,
    PlatformError,
    ProfileDue,
    ProfileSource,
    utcnow,
)
from shared.ratelimit import RateLimit
from shared.settings import Settings
from shared.streams import contact_key

logger = logging.getLogger("dmdesk.responder.profiles")

INSTAGRAM_FIELDS = (
    "name",
    "username",
    "profile_pic",
    "follower_count",
    "is_verified_user",
    "is_user_follow_business",
)
MESSENGER_FIELDS = ("first_name", "last_name", "profile_pic")
# After a fetch ends on a rate-limit error, that page's fetches pause this long.
RATE_LIMITED_PAUSE_SECONDS = 60.0
WAIT_POLL_SECONDS = 0.05
FIRST_WAIT_POLL_SECONDS = 0.01
Known = tuple["ProfileEntry | None", int | None]


def has_profile_to_fetch(message: InboundMessage) -> bool:
    """Whether the platform knows more about the DM's contact than the DM says.

    Not for echoes (the page wrote), generic DMs (no platform), WhatsApp (its webhook
    carries the profile name: the DM says all there is).
    """
    return not message.is_echo and message.channel in (Channel.INSTAGRAM, Channel.MESSENGER)


class FetchState(StrEnum):
    """Where a contact's profile fetch stands."""

    PENDING = "pending"
    FETCHED = "fetched"
    FAILED = "failed"


class ProfileEntry(BaseModel):
    """A contact's entry in the profile bucket: the fetch's state and the last profile."""

    state: FetchState
    at: datetime
    claimed_by: str | None = None
    profile: ContactProfile | None = None


class ProfileFetchError(Exception):
    """A profile the platform did not give; ``reason`` is safe to log and count."""

    def __init__(self, reason: str, error: PlatformError | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class ProfileCache:
    """The profile bucket: claims, profiles, and a bounded wait for one being fetched."""

    def __init__(self, kv: KeyValue, settings: Settings) -> None:
        self.kv = kv
        self.refresh = timedelta(hours=settings.profile_refresh_hours)
        self.retry = timedelta(minutes=settings.profile_retry_minutes)
        # Longer than a fetch with all its attempts: an older claim is a dead replica's.
        self.claim_ttl = timedelta(
            seconds=settings.profile_max_attempts
            * (settings.profile_timeout_seconds + MAX_BACKOFF_SECONDS)
        )

    async def read(self, ref: ConversationRef) -> tuple[ProfileEntry | None, int | None]:
        """The contact's entry and its revision (None, None when there is none)."""
        try:
            found = await self.kv.get(contact_key(ref))
        except KeyNotFoundError:
            return None, None
        try:
            return ProfileEntry.model_validate_json(found.value or b""), found.revision
        except ValidationError:
            return None, found.revision

    def due(self, entry: ProfileEntry | None, claimant: str, now: datetime) -> bool:
        """Whether a fetch is due: none yet, stale, failed long enough ago, or claim ours/dead."""
        if entry is None:
            return True
        age = now - entry.at
        if entry.state == FetchState.PENDING:
            return entry.claimed_by == claimant or age >= self.claim_ttl
        if entry.state == FetchState.FAILED:
            return age >= self.retry
        return age >= self.refresh

    def in_flight(self, entry: ProfileEntry | None, now: datetime) -> bool:
        """Whether a replica is fetching the profile now (a claim not older than a fetch)."""
        return (
            entry is not None
            and entry.state == FetchState.PENDING
            and now - entry.at < self.claim_ttl
        )

    async def claim(
        self, ref: ConversationRef, claimant: str, now: datetime, known: Known | None = None
    ) -> bool:
        """Claim the contact's fetch for ``claimant`` (a DM's mid) if one is due; True if so.

        Compare-and-set on the key: of replicas claiming at once, one wins. A claimant
        that claimed already (a redelivered DM) keeps its claim. ``known`` is the entry
        read already (with the pull's others).
        """
        entry, revision = known if known is not None else await self.read(ref)
        if not self.due(entry, claimant, now):
            return False
        claimed = ProfileEntry(
            state=FetchState.PENDING,
            at=now,
            claimed_by=claimant,
            profile=entry.profile if entry is not None else None,
        )
        value = claimed.model_dump_json().encode()
        try:
            if revision is None:
                await self.kv.create(contact_key(ref), value)
            else:
                await self.kv.update(contact_key(ref), value, last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def store(self, ref: ConversationRef, entry: ProfileEntry) -> None:
        """Record how the fetch ended."""
        await self.kv.put(contact_key(ref), entry.model_dump_json().encode())

    async def read_all(self, refs: dict[str, ConversationRef]) -> dict[str, Known]:
        """The entries of several contacts (by :func:`contact_key`), read at once."""
        found = await asyncio.gather(*(self.read(ref) for ref in refs.values()))
        return dict(zip(refs, found, strict=True))

    async def profiles(
        self, wanted: dict[str, tuple[ConversationRef, datetime]]
    ) -> dict[str, ContactProfile | None]:
        """Each contact's profile (``wanted``: by contact key, the contact and a deadline).

        Only a fetch in flight is waited for, and only until its deadline (the DM's
        reception plus ``DMDESK_PROFILE_WAIT_SECONDS``: a backlog of DMs does not wait at
        all): a short poll that starts at 10 ms, read for the pull's contacts at once.
        """
        profiles: dict[str, ContactProfile | None] = {}
        pending = dict(wanted)
        poll = FIRST_WAIT_POLL_SECONDS
        while pending:
            entries = await self.read_all({key: ref for key, (ref, _) in pending.items()})
            now = utcnow()
            for key, (entry, _) in entries.items():
                if not self.in_flight(entry, now) or now >= pending[key][1]:
                    profiles[key] = entry.profile if entry is not None else None
                    del pending[key]
            if pending:
                nearest = min(deadline for _, deadline in pending.values())
                await asyncio.sleep(max(0.0, min(poll, (nearest - now).total_seconds())))
                poll = min(poll * 2, WAIT_POLL_SECONDS)
        return profiles


def instagram_profile(ref: ConversationRef, payload: dict[str, Any]) -> ContactProfile:
    """A profile from Instagram's messaging user profile answer."""
    followers = payload.get("follower_count")
    return ContactProfile(
        conversation=ref,
        source=ProfileSource.GRAPH,
        name=_text(payload.get("name")),
        username=_text(payload.get("username")),
        profile_pic=_text(payload.get("profile_pic")),
        followers=followers if isinstance(followers, int) and followers >= 0 else None,
        verified=_flag(payload.get("is_verified_user")),
        follows_business=_flag(payload.get("is_user_follow_business")),
    )


def messenger_profile(ref: ConversationRef, payload: dict[str, Any]) -> ContactProfile:
    """A profile from Messenger's user profile answer."""
    return ContactProfile(
        conversation=ref,
        source=ProfileSource.GRAPH,
        first_name=_text(payload.get("first_name")),
        last_name=_text(payload.get("last_name")),
        profile_pic=_text(payload.get("profile_pic")),
    )


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


class ProfileFetcher:
    """Fetches a contact's profile when one is due, once across replicas."""

    def __init__(self, graph: GraphApi, cache: ProfileCache, settings: Settings) -> None:
        self.graph = graph
        self.cache = cache
        self.max_attempts = settings.profile_max_attempts
        self.timeout = settings.profile_timeout_seconds
        self.limit = RateLimit(settings.profile_rate_limit)
        self._paused_until: dict[str, float] = {}
        self._full_until: dict[str, float] = {}

    async def on_inbound(
        self, message: InboundMessage, known: Known | None = None
    ) -> ContactProfile | ProfileDue | None:
        """Fetch the profile of the DM's contact if one is due; the profile fetched, the
        fetch queued for later (the page's rate limit is full: publish it), or None.

        ``known`` is the contact's entry, read already. WhatsApp's profile is the
        webhook's: due, it is returned without a claim (nobody fetches anything).

        Raises:
            ProfileFetchError: the platform gave no profile (recorded in the bucket).
        """
        if message.is_echo or message.channel == Channel.GENERIC:
            return None
        ref = message.conversation
        if message.channel == Channel.WHATSAPP:
            entry, _ = known if known is not None else await self.cache.read(ref)
            if not self.cache.due(entry, message.mid, utcnow()):
                return None
            return await self._recorded(ref, self.fetch(message), entry)
        if known is not None and not self.cache.due(known[0], message.mid, utcnow()):
            return None
        if not await self._take_token(ref.account_id):
            # The page's limit is full: queue the fetch rather than wait for room. The
            # queued fetch claims the contact when it runs (a contact's later DMs may
            # queue it again meanwhile: the first claim fetches, the others find it due
            # no more), so queueing writes nothing here and no decision waits for it.
            return ProfileDue(conversation=ref, mid=message.mid)
        # The token is taken before the claim: a claim is a fetch in flight, which
        # decisions wait for, so it must not then wait for room (a DM's pull would wait
        # up to DMDESK_PROFILE_WAIT_SECONDS for it). A claim lost to another replica
        # wastes the token.
        if not await self.cache.claim(ref, message.mid, utcnow(), known):
            return None
        return await self._recorded(ref, self.fetch(message, counted=True))

    async def _take_token(self, account_id: str) -> bool:
        """Count a request under the page's rate limit now, if it has room; a page found
        full is remembered until room is due (a spike's DMs skip the limiter)."""
        if self._full_until.get(account_id, 0.0) > time.monotonic():
            return False
        wait = await self.limit.hit(account_id)
        if wait is None:
            return True
        self._full_until[account_id] = time.monotonic() + wait
        return False

    async def on_due(self, due: ProfileDue) -> ContactProfile | None:
        """Fetch a profile queued by :meth:`on_inbound`, waiting for room under the rate
        limit; None when its claim has gone (another DM's fetch took over).

        Raises:
            ProfileFetchError: the platform gave no profile (recorded in the bucket).
        """
        ref = due.conversation
        entry, revision = await self.cache.read(ref)
        if not self.cache.due(entry, due.mid, utcnow()):
            return None
        await self._acquire(ref.account_id)  # before the claim, as in on_inbound
        if not await self.cache.claim(ref, due.mid, utcnow(), (entry, revision)):
            return None
        return await self._recorded(ref, self._graph_profile(ref, counted=True))

    async def _recorded(
        self,
        ref: ConversationRef,
        fetching: Awaitable[ContactProfile],
        entry: ProfileEntry | None = None,
    ) -> ContactProfile:
        """The profile ``fetching`` gives; a failure recorded in the bucket (keeping the
        last profile: ``entry``, else the one stored) and raised."""
        try:
            return await fetching
        except ProfileFetchError:
            if entry is None:
                entry, _ = await self.cache.read(ref)
            await self.cache.store(
                ref,
                ProfileEntry(
                    state=FetchState.FAILED,
                    at=utcnow(),
                    profile=entry.profile if entry is not None else None,
                ),
            )
            raise

    async def remember(self, profile: ContactProfile) -> None:
        """Store a fetched profile (after its event is published)."""
        await self.cache.store(
            profile.conversation,
            ProfileEntry(state=FetchState.FETCHED, at=profile.fetched_at, profile=profile),
        )

    async def fetch(self, message: InboundMessage, *, counted: bool = False) -> ContactProfile:
        """Ask the platform who wrote ``message`` (``counted``: its first request is
        counted under the rate limit already)."""
        ref = message.conversation
        if ref.channel == Channel.WHATSAPP:
            name = _text(message.contact.name)
            if name is None:
                raise ProfileFetchError("no_name")
            return ContactProfile(conversation=ref, source=ProfileSource.WEBHOOK, name=name)
        return await self._graph_profile(ref, counted=counted)

    async def _graph_profile(
        self, ref: ConversationRef, *, counted: bool = False
    ) -> ContactProfile:
        """The contact's profile from the Graph API, each request under the rate limit."""
        already_counted = counted

        async def before_attempt() -> None:
            nonlocal already_counted
            if not already_counted:
                await self._acquire(ref.account_id)
            already_counted = False

        if self._paused_until.get(ref.account_id, 0.0) > time.monotonic():
            raise ProfileFetchError("rate_limited")
        token = self.graph.token(ref.channel, ref.account_id)
        if token is None:
            raise ProfileFetchError("no_token")
        fields = INSTAGRAM_FIELDS if ref.channel == Channel.INSTAGRAM else MESSENGER_FIELDS
        answer = await self.graph.call(
            "GET",
            f"{self.graph.base_url}/{ref.contact_id}",
            max_attempts=self.max_attempts,
            before_attempt=before_attempt,
            log={"channel": ref.channel.value, "call": "profile"},
            request_timeout=self.timeout,
            params={"fields": ",".join(fields), "access_token": token},
        )
        if answer.error is not None:
            if answer.error.code in RATE_LIMIT_CODES:
                self._paused_until[ref.account_id] = time.monotonic() + RATE_LIMITED_PAUSE_SECONDS
                raise ProfileFetchError("rate_limited", answer.error)
            reason = "network" if answer.error.type == "network" else "graph_error"
            raise ProfileFetchError(reason, answer.error)
        if not isinstance(answer.payload, dict):
            raise ProfileFetchError("bad_answer")
        try:
            if ref.channel == Channel.INSTAGRAM:
                return instagram_profile(ref, answer.payload)
            return messenger_profile(ref, answer.payload)
        except ValidationError as error:
            raise ProfileFetchError("bad_answer") from error

    async def _acquire(self, account_id: str) -> None:
        while True:
            wait = await self.limit.hit(account_id)
            if wait is None:
                return
            await asyncio.sleep(max(wait, WAIT_POLL_SECONDS))
