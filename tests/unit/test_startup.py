"""A service that starts before its dependencies waits for them, and only for them."""

import gc
import weakref

import nats.errors
import pytest
from nats.js.errors import ServiceUnavailableError

from shared import service


async def test_start_up_step_is_retried_while_jetstream_has_no_responders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "MAX_STARTUP_DELAY_SECONDS", 0.01)
    attempts: list[int] = []

    async def step() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise nats.errors.NoRespondersError

    await service.patiently(step)
    assert len(attempts) == 3


async def test_start_up_step_that_is_wrong_fails_at_once() -> None:
    attempts: list[int] = []

    async def step() -> None:
        attempts.append(1)
        raise ValueError("bad rules file")

    with pytest.raises(ValueError, match="bad rules file"):
        await service.patiently(step)
    assert attempts == [1]


async def test_start_up_gives_up_after_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "STARTUP_PATIENCE_SECONDS", 0.05)
    monkeypatch.setattr(service, "MAX_STARTUP_DELAY_SECONDS", 0.01)

    async def step() -> None:
        raise ConnectionRefusedError

    with pytest.raises(ConnectionRefusedError):
        await service.patiently(step)


async def test_start_up_waits_while_jetstream_is_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "MAX_STARTUP_DELAY_SECONDS", 0.01)
    attempts: list[int] = []

    async def step() -> None:
        attempts.append(1)
        if len(attempts) < 2:
            raise ServiceUnavailableError(
                code=503, err_code=10008, description="JetStream not ready"
            )

    await service.patiently(step)
    assert len(attempts) == 2


class Node:
    peer: "Node | None" = None


def test_a_started_service_leaves_its_startup_objects_out_of_later_collections() -> None:
    threshold = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    built_at_startup: list[object] = [[] for _ in range(1_000)]
    cycle = Node()
    cycle.peer = cycle  # startup's garbage: collected, not frozen for good
    left = weakref.ref(cycle)
    del cycle
    try:
        service.freeze_startup_heap()
        assert left() is None
        assert gc.get_freeze_count() >= frozen_before + len(built_at_startup)
        assert not any(item is built_at_startup for item in gc.get_objects())
        assert gc.get_threshold() == (service.YOUNG_GC_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
