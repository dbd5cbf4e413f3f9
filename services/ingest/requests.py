"""Message requests: is this DM from someone the page never talked to?

Ingest is stateless and may run as many replicas, so what it remembers about a
contact lives in a NATS KV bucket (``settings.contacts_bucket``), keyed
``<channel>.<account>.<contact>``: ``known`` once the page has written to them (an
echo, or a send status for one of its messages). A DM is a request unless the
contact is known, so a contact who only ever wrote has no entry: a DM from a new
contact costs one read, no write. A retried body decides the same, because a request
stays a request until the page answers. (Before, a first DM also stored ``request``,
which said nothing the absence of ``known`` does not; such entries are read as that.)
Contacts who talked to the page before dmdesk was installed look new to it; the queue
shows them as requests until the page answers once.
"""

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Protocol

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from services.ingest.meta import Normalised
from shared.events import Channel, InboundMessage, StatusEvent, StatusKind
from shared.settings import Settings
from shared.streams import contact_key, contacts_bucket_config, open_key_value

KNOWN = b"known"
KNOWN_CACHE_SIZE = 100_000


class ContactStore(Protocol):
    """Where contact states are kept (a NATS KV bucket; a dict in unit tests)."""

    async def get(self, key: str) -> bytes | None:
        """The state stored under ``key``, or None."""
        ...

    async def put(self, key: str, state: bytes) -> None:
        """Store ``state`` under ``key``."""
        ...


class MessageRequests:
    """Marks first DMs from unknown contacts ``is_request`` and learns who the page wrote to."""

    def __init__(self, store: ContactStore) -> None:
        self.store = store
        # "known" never goes back to "request": remembering it saves a round trip per DM.
        self.known: dict[str, None] = {}

    async def annotate(self, events: Sequence[Normalised]) -> list[Normalised]:
        """``events`` with ``is_request`` set on DMs from contacts the page never wrote to."""
        annotated: list[Normalised] = []
        for original in events:
            normalised, event = original, original.event
            if isinstance(event, InboundMessage) and event.channel != Channel.GENERIC:
                key = contact_key(event.conversation)
                if event.is_echo:
                    await self._remember_known(key)
                elif await self._is_request(key):
                    normalised = dataclasses.replace(
                        normalised, event=event.model_copy(update={"is_request": True})
                    )
            elif isinstance(event, StatusEvent) and event.kind != StatusKind.FAILED:
                await self._remember_known(contact_key(event.conversation))
            annotated.append(normalised)
        return annotated

    async def _is_request(self, key: str) -> bool:
        if key in self.known:
            return False
        if await self.store.get(key) == KNOWN:
            self._cache(key)
            return False
        return True

    async def _remember_known(self, key: str) -> None:
        if key not in self.known:
            await self.store.put(key, KNOWN)
            self._cache(key)

    def _cache(self, key: str) -> None:
        if len(self.known) >= KNOWN_CACHE_SIZE:
            self.known.pop(next(iter(self.known)))
        self.known[key] = None


class KvContactStore:
    """:class:`ContactStore` on a JetStream KV bucket, created on first use."""

    def __init__(self, broker: NatsBroker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self._bucket: KeyValue | None = None
        self._lock = asyncio.Lock()

    async def bucket(self) -> KeyValue:
        """The bucket, created when missing (also the readiness check)."""
        if self._bucket is not None:
            return self._bucket
        async with self._lock:
            if self._bucket is None:
                js = self.broker.connection.jetstream()
                self._bucket = await open_key_value(js, contacts_bucket_config(self.settings))
            return self._bucket

    async def ready(self) -> None:
        """Readiness: the bucket exists (created if needed)."""
        await self.bucket()

    async def get(self, key: str) -> bytes | None:
        """See :class:`ContactStore`."""
        try:
            entry = await (await self.bucket()).get(key)
        except KeyNotFoundError:
            return None
        return entry.value

    async def put(self, key: str, state: bytes) -> None:
        """See :class:`ContactStore`."""
        await (await self.bucket()).put(key, state)
