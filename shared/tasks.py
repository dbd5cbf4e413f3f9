"""Stopping a background task for certain."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

CANCEL_EVERY_SECONDS = 0.1
WATCH_STOP_SECONDS = 5.0
WATCH_RETRY_SECONDS = 1.0

logger = logging.getLogger("dmdesk.tasks")


class Watcher(Protocol):
    """nats-py's KV and object-store watchers, as :func:`follow` uses them."""

    async def updates(self, timeout: float = ...) -> Any:  # noqa: ASYNC109 - nats-py's API
        """The next update (None marks the end of the initial values)."""

    async def stop(self) -> None:
        """Unsubscribe."""


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and return once it has ended (re-raising what it failed with).

    One ``cancel()`` is not always enough on Python 3.11: a task inside
    ``asyncio.wait_for`` (nats-py's KV watcher and requests use it) can swallow the
    cancellation, or be left waiting for an inner task that never ends, and a loop
    around it then carries on for good. So the task is cancelled again until it ends.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_EVERY_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


async def follow(
    watch: Callable[[], Awaitable[Watcher]],
    on_update: Callable[[Any | None], Awaitable[None]],
    *,
    what: str,
    recheck_seconds: float,
) -> None:
    """Follow a KV or object-store watch until cancelled.

    Each update is handed to ``on_update``; when none comes within ``recheck_seconds`` it
    gets None, so the caller re-reads (a watch can be lost to a reconnect or an inactive
    consumer's clean-up without a word). A watch that fails is opened again a second
    later; its unsubscribe is given WATCH_STOP_SECONDS.
    """
    while True:
        watcher = None
        try:
            watcher = await watch()
            while True:
                try:
                    update = await watcher.updates(timeout=recheck_seconds)
                # nats-py raises its own TimeoutError or asyncio's: both are TimeoutError.
                except TimeoutError:
                    update = None
                await on_update(update)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("watch failed; retrying", extra={"watch": what})
            await asyncio.sleep(WATCH_RETRY_SECONDS)
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(WATCH_STOP_SECONDS):
                        await watcher.stop()
