"""Steady DM traffic like Meta's, and the ledger that proves nothing was lost or doubled.

:class:`SteadyFlow` posts signed Messenger webhooks (one DM from one new contact each)
at a steady rate, and retries a webhook that failed (refused, or ingest unreachable)
with the same body until it is accepted, as Meta does. :func:`ledger` reads the api's
database straight through SQLAlchemy, and :func:`assert_exactly_once` checks, for the
DMs ingest accepted: one conversation per contact, one customer message in it with its
mid, classified and routed (a team, or answered by the bot), and at most one bot reply
per conversation, in the database and at the Send API stub.
"""

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text

from dmdesk.bench import SIGNATURE_HEADER, Dm, SendApiStub, make_dms, messenger_body, sign
from shared.db import create_engine
from tests.stack import META_APP_SECRET

SETTLE_TIMEOUT_SECONDS = 90.0
RETRY_INTERVAL_SECONDS = 0.25
RETRYABLE = (httpx.TransportError,)


@dataclass
class SteadyFlow:
    """DMs at ``rate`` per second until stopped, each retried until ingest accepts it."""

    ingest_url: str
    prefix: str
    rate: float = 20.0
    retry_for: float = 120.0
    bot_share: float = 0.25
    accepted: set[str] = field(default_factory=set)
    posted: list[Dm] = field(default_factory=list)
    failed_attempts: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    _senders: set[asyncio.Task[None]] = field(default_factory=set)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["SteadyFlow"]:
        """Post DMs while the block runs; on exit, wait until every one was answered."""
        async with httpx.AsyncClient(timeout=10) as client:
            producer = asyncio.create_task(self._produce(client))
            try:
                yield self
            finally:
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer
                await asyncio.gather(*self._senders)

    async def _produce(self, client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        n = 0
        while True:
            [dm] = make_dms(self.prefix, 1, self.bot_share, start=n)
            self.posted.append(dm)
            task = asyncio.create_task(self._deliver(client, dm))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
            n += 1
            await asyncio.sleep(max(0.0, started + n / self.rate - time.monotonic()))

    async def _deliver(self, client: httpx.AsyncClient, dm: Dm) -> None:
        body = messenger_body([dm])
        headers = {
            SIGNATURE_HEADER: sign(body, META_APP_SECRET),
            "content-type": "application/json",
        }
        deadline = time.monotonic() + self.retry_for
        while time.monotonic() < deadline:
            try:
                response = await client.post(
                    f"{self.ingest_url}/webhooks/messenger", content=body, headers=headers
                )
            except RETRYABLE:
                self.failed_attempts += 1
            else:
                if response.status_code == 200:
                    self.accepted.add(dm.psid)
                    return
                self.failed_attempts += 1
                if response.status_code < 500:
                    self.refused[dm.psid] = response.status_code
                    return
            await asyncio.sleep(RETRY_INTERVAL_SECONDS)


@dataclass
class Ledger:
    """What the database holds for one flow's contacts."""

    conversations: Counter[str] = field(default_factory=Counter)
    customer_mids: dict[str, list[str]] = field(default_factory=dict)
    classified: set[str] = field(default_factory=set)
    routed: set[str] = field(default_factory=set)
    bot_messages: Counter[str] = field(default_factory=Counter)
    dead_letters: list[tuple[str, str, str, str]] = field(default_factory=list)

    def settled(self, psids: set[str]) -> bool:
        """Whether every one of ``psids`` is stored, classified and routed or answered."""
        return all(
            psid in self.classified and (psid in self.routed or self.bot_messages[psid])
            for psid in psids
        )


CONVERSATIONS_SQL = """
SELECT ct.platform_id, cv.team FROM conversations cv JOIN contacts ct ON ct.id = cv.contact_id
WHERE cv.channel = 'messenger' AND ct.platform_id LIKE :prefix
"""
MESSAGES_SQL = """
SELECT ct.platform_id, m.mid, m.author, m.classification
FROM messages m
JOIN conversations cv ON cv.id = m.conversation_id
JOIN contacts ct ON ct.id = cv.contact_id
WHERE cv.channel = 'messenger' AND ct.platform_id LIKE :prefix
"""
DEAD_LETTERS_SQL = "SELECT stage, subject, error_type, error FROM dead_letters"


async def ledger(database_url: str, prefix: str) -> Ledger:
    """Read the flow's conversations and messages from the api's database."""
    engine = create_engine(database_url)
    found = Ledger()
    try:
        async with engine.connect() as connection:
            like = {"prefix": f"{prefix}-%"}
            for psid, team in await connection.execute(text(CONVERSATIONS_SQL), like):
                found.conversations[psid] += 1
                if team is not None:
                    found.routed.add(psid)
            for psid, mid, author, classification in await connection.execute(
                text(MESSAGES_SQL), like
            ):
                if author == "customer":
                    found.customer_mids.setdefault(psid, []).append(mid)
                    if classification is not None:
                        found.classified.add(psid)
                elif author == "bot":
                    found.bot_messages[psid] += 1
            found.dead_letters = [
                (stage, subject, error_type, error[:200])
                for stage, subject, error_type, error in await connection.execute(
                    text(DEAD_LETTERS_SQL)
                )
            ]
    finally:
        await engine.dispose()
    return found


async def settled_ledger(
    database_url: str, flow: SteadyFlow, within: float = SETTLE_TIMEOUT_SECONDS
) -> Ledger:
    """The ledger once every accepted DM went all the way (or ``within`` seconds passed)."""
    deadline = time.monotonic() + within
    found = await ledger(database_url, flow.prefix)
    while not found.settled(flow.accepted) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        found = await ledger(database_url, flow.prefix)
    # Redeliveries still in flight would show up now as a second row or reply.
    await asyncio.sleep(2.0)
    return await ledger(database_url, flow.prefix)


def assert_exactly_once(flow: SteadyFlow, found: Ledger, stub: SendApiStub | None) -> None:
    """Every accepted DM stored once and routed; every bot reply sent at most once."""
    expected_mids = {dm.psid: dm.mid for dm in flow.posted}
    assert not flow.refused, f"ingest refused DMs for good: {flow.refused}"
    assert flow.accepted == {dm.psid for dm in flow.posted}, "some DMs were never accepted"
    missing = sorted(flow.accepted - found.customer_mids.keys())
    assert not missing, (
        f"{len(missing)} accepted DMs are not in the database, e.g. {missing[:5]};"
        f" dead letters: {found.dead_letters[:5]}"
    )
    assert set(found.customer_mids) == flow.accepted, "a message nobody sent is in the database"
    doubled = {psid: n for psid, n in found.conversations.items() if n != 1}
    assert not doubled, f"contacts with more than one conversation: {doubled}"
    wrong = {
        psid: mids for psid, mids in found.customer_mids.items() if mids != [expected_mids[psid]]
    }
    assert not wrong, f"conversations without exactly their one DM: {dict(list(wrong.items())[:5])}"
    unsettled = sorted(
        psid
        for psid in flow.accepted
        if psid not in found.classified or not (psid in found.routed or found.bot_messages[psid])
    )
    assert not unsettled, (
        f"{len(unsettled)} DMs not classified and routed, e.g. {unsettled[:5]};"
        f" dead letters: {found.dead_letters[:3]}"
    )
    repeated = {psid: n for psid, n in found.bot_messages.items() if n > 1}
    assert not repeated, f"conversations with more than one bot reply: {repeated}"
    if stub is not None:
        sent_twice = {
            psid: n
            for psid, n in stub.by_recipient().items()
            if psid.startswith(f"{flow.prefix}-") and n > 1
        }
        assert not sent_twice, f"bot replies sent more than once: {sent_twice}"


def summary(flow: SteadyFlow, found: Ledger, stub: SendApiStub | None) -> dict[str, Any]:
    """Counts worth recording beside the test's result."""
    return {
        "posted": len(flow.posted),
        "accepted": len(flow.accepted),
        "failed_attempts_retried": flow.failed_attempts,
        "stored": len(found.customer_mids),
        "routed": len(found.routed),
        "bot_replies_in_db": sum(found.bot_messages.values()),
        "bot_replies_at_stub": 0 if stub is None else len(stub.calls),
        "dead_letters": len(found.dead_letters),
    }
