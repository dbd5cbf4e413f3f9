"""Group commit: the projections of many concurrent handlers share one transaction.

Each of the api's consumers hands over a pull at a time (``shared.bus.BatchConsumer``),
and its handler gives the pull's projections to the :class:`ProjectionWriter` in one
call (:meth:`ProjectionWriter.apply_all`) and waits for their outcomes. The writer
applies whatever is waiting, from every consumer, in one transaction, in arrival order
except that a pull of events that follow others (outbound results, receipts) goes after
the group's other pulls (``order``): a result then finds its reply stored by the routed
DM of the same group instead of storing it from the result, to be merged after:

- a projection that raises rolls back alone, and only its handler gets the exception
  (its message is redelivered or dead-lettered, as with a transaction of its own): the
  group is first applied without savepoints (two statements, and on PostgreSQL two round
  trips, per event), and only when one of its projections fails is it rolled back and
  applied again with a savepoint each;
- when a dependency is down, or the commit fails, every handler of the group gets the
  error, so every message of the group is redelivered: nothing is acknowledged before
  it is committed.

One commit, one session and (on SQLite) one turn of the write lock per group instead
of per event is what lets the api keep up with the other stages.

A group runs as one blocking call on the writer's own thread, with a blocking driver
(``create_sync_engine``): through an async driver each of a DM's twenty-odd statements
costs several wake-ups of the event loop (aiosqlite hands every call to a thread of
its own), which made the api three times slower. The event loop only waits for the
group; the thread competes with it for the GIL for the Python work of the statements.

Metrics a projection records go through :func:`after_commit`, so a group applied twice
counts once, and a projection that rolls back counts nothing.

The writer's sessions do not autoflush (:func:`writer_sessions`): a conversation's
changes are written once per group, not before each of its events' queries.
"""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event, inspect
from sqlalchemy.orm import InstanceState, Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified, get_history
from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE

from services.api.changes import changed_in, read_changes
from services.api.clocks import earliest_deadline
from shared.bus import dependency_unavailable
from shared.events import ConversationChanged
from shared.tasks import stop_task

logger = logging.getLogger("dmdesk.api.writer")

Work = Callable[[Session], object]
Loader = Callable[[Session, list[Any]], object]
"""A ``projector.prefetch_*``: loads (and upserts) what projections of ``events`` need."""


@dataclass(frozen=True)
class Load:
    """What a pull's projections need loaded before they run: ``function`` (a
    ``projector.prefetch_*``) over the pull's ``events``, with a few multi-row statements.

    The writer runs each function once per group, over the events of every pull in the
    group that asked for it: a group of two pulls of routed DMs costs the statements
    (on PostgreSQL the round trips) of one.
    """

    function: Loader
    events: list[Any]


AFTER_COMMIT = "dmdesk.after_commit"
Committed = Callable[["Group"], Awaitable[None]]
MAX_GROUP = 256


def writer_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for the writer's groups, on a blocking engine (``create_sync_engine``).

    No autoflush: an event's queries find its conversation and clocks in the session
    (the identity map, and ``clocks``' per-transaction list), and the inserts and
    updates of rows that are not loaded as objects run on the Core tables. Flushing
    before every query wrote a conversation once per event instead of once per group.
    A savepoint flushes when it ends, so a projection that fails still fails alone.

    Rows of one table changed in one flush are updated alike (:func:`_update_alike`).
    """
    sessions = sessionmaker(engine, expire_on_commit=False, autoflush=False)
    event.listen(sessions, "before_flush", _update_alike)
    return sessions


def _update_alike(session: Session, _context: object, _instances: object) -> None:
    """Give the rows of a table that this flush updates the same changed columns.

    The flush updates rows whose changed columns are alike with one ``executemany`` (on
    PostgreSQL, psycopg's pipeline: one round trip), but a row with other columns changed
    breaks the run: a group of DMs half answered by the bot (status) and half handed off
    (team) updated its conversations one statement each. A column another row of the
    table changed is written with the value the row holds; the projections load the
    rows they change locked (``FOR UPDATE``; SQLite's writer holds the write lock), so no
    one else's change is written over.
    """
    by_table: defaultdict[type, list[InstanceState[object]]] = defaultdict(list)
    for row in session.dirty:
        by_table[type(row)].append(inspect(row))
    for states in by_table.values():
        if len(states) < 2:
            continue
        # The attributes set since the row was loaded (``committed_state``), of which those
        # whose value differs: what the flush itself writes.
        changed = [
            {
                key
                for key in state.committed_state
                if key in state.mapper.column_attrs
                and get_history(state.obj(), key, PASSIVE_NO_INITIALIZE).has_changes()
            }
            for state in states
        ]
        every = set[str]().union(*changed)
        for state, own in zip(states, changed, strict=True):
            for key in every - own:
                flag_modified(state.obj(), key)


@dataclass(frozen=True)
class Group:
    """What a committed group changed: the conversations' states (for the change feed,
    one each) and the earliest SLA time its clocks set (for the scheduler; None: none)."""

    changed: list[ConversationChanged]
    earliest_deadline: datetime | None = None


Outcome = Exception | None
"""What became of one work: None once committed, or the error it failed with."""


@dataclass(frozen=True)
class _Pending:
    """The works of one call, and the future of their outcomes (one per work, in order)."""

    works: Sequence[Work]
    done: asyncio.Future[list[Outcome]]
    loads: Sequence[Load] = ()
    order: int = 0


class ProjectionWriter:
    """Applies projections in groups, one transaction and one savepoint each."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        committed: Committed,
        max_group: int = MAX_GROUP,
    ) -> None:
        self.sessions = sessions
        self.committed = committed
        self.max_group = max_group
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projection-writer")

    async def apply(self, work: Work) -> None:
        """Run ``work`` in the next group; return once it is committed, or raise its error."""
        [outcome] = await self.apply_all([work])
        if outcome is not None:
            raise outcome

    async def apply_all(
        self, works: Sequence[Work], loads: Sequence[Load] = (), *, order: int = 0
    ) -> list[Outcome]:
        """Run ``works`` in the next group (never split); return each one's outcome.

        One call and one future per pull: a task and a future per message cost the
        api's event loop about as much as validating the message. ``loads`` load what
        the works will need with a few multi-row statements (:class:`Load`); they run
        before every work of the group, each function once over the events of all the
        group's calls, and only when the group is applied without savepoints (they change
        nothing a work would not). Within a group, calls are applied by ``order`` (lower
        first; loads too, each function where it first comes), then as they came.
        """
        if not works:
            return []
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="projection-writer")
        pending = _Pending(works, asyncio.get_running_loop().create_future(), loads, order)
        self._queue.put_nowait(pending)
        return await pending.done

    async def stop(self) -> None:
        """Stop writing; handlers still waiting are cancelled (their messages redelivered).

        A group already on the thread is let finish (its handlers are cancelled all the
        same: a redelivered projection changes nothing), so the engine is free after.
        """
        await stop_task(self._task)
        while not self._queue.empty():
            self._queue.get_nowait().done.cancel()
        await asyncio.to_thread(self._thread.shutdown, wait=True)

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            size = len(group[0].works)
            while size < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
                size += len(group[-1].works)
            # A handler cancelled while it waited (shutdown) no longer wants its work done.
            live = sorted(
                (pending for pending in group if not pending.done.done()),
                key=lambda pending: pending.order,
            )
            try:
                if live:
                    await self._commit(live)
            except asyncio.CancelledError:
                for pending in live:
                    pending.done.cancel()
                raise

    async def _commit(self, group: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        works = [work for pending in group for work in pending.works]
        loads = [load for pending in group for load in pending.loads]
        try:
            failed, done = await loop.run_in_executor(self._thread, self._write, works, loads)
        except Exception as error:
            for pending in group:
                _settle(pending, [error] * len(pending.works))
            return
        try:
            await self.committed(done)
        except Exception:  # the data is committed: say so, but do not fail the messages
            logger.exception("after-commit step failed", extra={"group": len(works)})
        start = 0
        for pending in group:
            _settle(pending, [failed.get(start + i) for i in range(len(pending.works))])
            start += len(pending.works)

    def _write(self, works: list[Work], loads: list[Load]) -> tuple[dict[int, Exception], Group]:
        """On the writer's thread: the group's transaction; what failed, what changed."""
        try:
            return self._transaction(works, loads, isolated=False)
        except Exception as error:
            if dependency_unavailable(error) or len(works) == 1:
                raise
        # One of the projections failed: apply the group again, each in a savepoint,
        # so that one fails alone.
        return self._transaction(works, [], isolated=True)

    def _transaction(
        self, works: list[Work], loads: list[Load], *, isolated: bool
    ) -> tuple[dict[int, Exception], Group]:
        failed: dict[int, Exception] = {}
        with self.sessions() as session, session.begin():
            for function, events in _merged(loads).items():
                function(session, events)
            for index, work in enumerate(works):
                if not isolated:
                    work(session)
                    continue
                effects = len(_effects(session))
                try:
                    with session.begin_nested():
                        work(session)
                except Exception as error:
                    if dependency_unavailable(error):
                        raise
                    failed[index] = error
                    del _effects(session)[effects:]
            # The changed conversations as this transaction leaves them, read before it
            # commits (on this thread, not by the event loop after it).
            session.flush()
            changes = read_changes(session, changed_in(session))
            earliest = earliest_deadline(session)
        return failed, Group(changes, earliest)


def _merged(loads: list[Load]) -> dict[Loader, list[Any]]:
    """Each load function once, where it first comes, over every pull's events for it."""
    merged: dict[Loader, list[Any]] = {}
    for load in loads:
        merged.setdefault(load.function, []).extend(load.events)
    return merged


def after_commit(session: Session, effect: Callable[[], object]) -> None:
    """Do ``effect`` (a metric) once ``session``'s transaction commits; never if it rolls back.

    Within the writer, the effects of a projection whose savepoint rolls back are dropped;
    a transaction that rolls back takes its session, and the effects noted on it, along.
    """
    _effects(session).append(effect)


def _effects(session: Session) -> list[Callable[[], object]]:
    effects: list[Callable[[], object]] = session.info.setdefault(AFTER_COMMIT, [])
    return effects


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: nothing is committed yet
        return
    for effect in session.info.pop(AFTER_COMMIT, []):
        effect()


def _settle(pending: _Pending, outcomes: list[Outcome]) -> None:
    if not pending.done.done():  # not cancelled meanwhile
        pending.done.set_result(outcomes)
