"""Stopping a background task for certain."""

import asyncio
import contextlib
from typing import Any

CANCEL_EVERY_SECONDS = 0.1


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
