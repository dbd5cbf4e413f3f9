"""The live rule set: stored in a NATS KV bucket, watched by every responder replica.

The api validates and stores a rule set (``PUT /v1/rules``); each replica's
:class:`LiveRules` watches the key and swaps its compiled rule set in one
assignment, so a DM is decided entirely by the old set or entirely by the new.
A stored set that does not compile (written around the api) is logged and
ignored: the replica keeps the set it has.
"""

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from shared.rules import CompiledRuleSet, RuleSetError, compile_rule_set
from shared.settings import Settings
from shared.streams import RULES_KEY, open_key_value, rules_bucket_config
from shared.tasks import follow, stop_task

logger = logging.getLogger("dmdesk.responder.rules")

RECHECK_SECONDS = 5.0
# Stopping never waits longer than this on NATS (an unsubscribe can block on a sick link).
STOP_SECONDS = 5.0


async def open_rules_bucket(js: JetStreamContext, settings: Settings) -> KeyValue:
    """The rules bucket (keeps the last few versions for inspection)."""
    return await open_key_value(js, rules_bucket_config(settings))


async def read_document(kv: KeyValue) -> tuple[dict[str, Any] | None, int]:
    """The stored rule-set document and its revision; (None, 0) when there is none."""
    try:
        entry = await kv.get(RULES_KEY)
    except (KeyNotFoundError, KeyDeletedError):
        return None, 0
    if not entry.value:
        return None, entry.revision or 0
    document = json.loads(entry.value)
    return (document if isinstance(document, dict) else None), entry.revision or 0


def encode_document(document: dict[str, Any]) -> bytes:
    """The stored form of a rule-set document (JSON)."""
    return json.dumps(document, ensure_ascii=False, default=str).encode()


async def seed_defaults(kv: KeyValue, document: dict[str, Any]) -> None:
    """Store ``document`` unless a rule set is already there (replicas may race: one wins)."""
    with contextlib.suppress(KeyWrongLastSequenceError):
        await kv.create(RULES_KEY, encode_document(document))


class LiveRules:
    """The current compiled rule set of this replica, kept in step with the bucket."""

    def __init__(self, kv: KeyValue, initial: CompiledRuleSet) -> None:
        self.kv = kv
        self.current = initial
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    async def refresh(self) -> bool:
        """Load the stored rule set if it is newer than the current one; True if swapped."""
        document, revision = await read_document(self.kv)
        return self._offer(document, revision)

    def _offer(self, document: dict[str, Any] | None, revision: int) -> bool:
        if document is None or revision <= self.current.revision:
            return False
        try:
            compiled = compile_rule_set(document)
        except RuleSetError as error:
            logger.error(  # noqa: TRY400 - the problems say it all; no traceback
                "stored rule set does not compile; keeping the current one",
                extra={"revision": revision, "problems": [p.as_dict() for p in error.problems]},
            )
            self.current = self.current.with_revision(revision)
            return False
        self.current = compiled.with_revision(revision)
        logger.info("rule set switched", extra={"revision": revision})
        self.changed.set()
        return True

    def start(self) -> None:
        """Follow the bucket in the background."""
        self._task = asyncio.create_task(self._follow(), name="rules-watch")

    async def stop(self) -> None:
        """Stop following (the watch's unsubscribe is given STOP_SECONDS)."""
        await stop_task(self._task)

    async def _follow(self) -> None:
        # A watch delivers changes at once; the periodic re-read covers a lost watch.
        async def changed(entry: KeyValue.Entry | None) -> None:
            if entry is None:
                await self.refresh()
            elif entry.value and isinstance(document := json.loads(entry.value), dict):
                self._offer(document, entry.revision or 0)

        await follow(
            lambda: self.kv.watch(RULES_KEY),
            changed,
            what="rules",
            recheck_seconds=RECHECK_SECONDS,
        )
