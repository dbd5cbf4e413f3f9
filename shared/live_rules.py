"""The live rule set: stored in a NATS KV bucket, watched by every responder replica.

The api validates and stores a rule set (``PUT /v1/rules``); each replica's
:class:`LiveRules` watches the key and swaps its compiled rule set in one
assignment, so a DM is decided entirely by the old set or entirely by the new.
A stored set that does not compile (written around the api) is logged and
ignored: the replica keeps the set it has.

The first replica to start seeds the packaged defaults. A stored set that is still the
untouched defaults of an earlier release is replaced by this release's at start, so the
rule fixes a release ships reach a stack that never customised its rules; a set anybody
changed (``PUT /v1/rules``) is kept. ``defaults/rules_releases.json`` lists the digest
of every default rule set dmdesk has shipped, oldest first: the order is what keeps a
rolling upgrade from flip-flopping (a replica of the previous build restarted meanwhile
does not know the newer defaults' digest, so it takes them for a customised set and
leaves them alone). A test keeps the list's last digest equal to the packaged defaults'.
"""

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue
from pydantic import TypeAdapter

from shared import packaged
from shared.rules import CompiledRuleSet, RuleSetError, compile_rule_set
from shared.settings import Settings
from shared.streams import RULES_KEY, open_key_value, rules_bucket_config
from shared.tasks import follow, stop_task

logger = logging.getLogger("dmdesk.responder.rules")

RELEASES_RESOURCE = "rules_releases.json"
_RELEASES = TypeAdapter(tuple[str, ...])
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


def document_digest(document: dict[str, Any]) -> str:
    """A rule-set document's digest: the same for the document parsed and as stored."""
    stored = json.loads(encode_document(document))  # dates as strings, as stored
    canonical = json.dumps(stored, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@functools.cache
def default_releases() -> tuple[str, ...]:
    """The digests of the default rule sets dmdesk has shipped, oldest first (read once: the
    api answers every ``GET /v1/rules`` with it)."""
    return _RELEASES.validate_json(packaged.read_text("shared.defaults", RELEASES_RESOURCE))


def defaults_release(document: dict[str, Any], releases: Sequence[str]) -> int | None:
    """Which entry of ``releases`` ``document`` is (1: the first), or None: customised."""
    digest = document_digest(document)
    return releases.index(digest) + 1 if digest in releases else None


async def seed_defaults(
    kv: KeyValue, document: dict[str, Any], releases: Sequence[str] = ()
) -> None:
    """Store the defaults ``document`` unless a rule set is already there; replace a
    stored set that is an earlier entry of ``releases`` (the untouched defaults of an
    earlier release) when ``document`` is a later one. Replicas may race: one wins."""
    stored, revision = await read_document(kv)
    if stored is None:
        with contextlib.suppress(KeyWrongLastSequenceError):
            await kv.create(RULES_KEY, encode_document(document))
        return
    was, now = defaults_release(stored, releases), defaults_release(document, releases)
    if was is None or now is None or was >= now:
        return  # customised, not ours to know, or as new as these defaults: kept
    with contextlib.suppress(KeyWrongLastSequenceError):
        await kv.update(RULES_KEY, encode_document(document), last=revision)
        logger.info("default rule set upgraded", extra={"from_release": was, "to_release": now})


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
