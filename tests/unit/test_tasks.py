"""stop_task ends a task even when it swallows a cancellation."""

import asyncio

import pytest

from shared.tasks import stop_task


async def test_a_task_that_swallows_one_cancellation_is_stopped_all_the_same() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what asyncio.wait_for can do on Python 3.11

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_task(task), timeout=5)
    assert task.cancelled()
    assert swallowed == 1


async def test_what_the_task_failed_with_is_raised() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await stop_task(task)


async def test_no_task_is_nothing_to_stop() -> None:
    await stop_task(None)
