"""Fixtures of the end-to-end tests: the Send API stand-in and stacks that send through it.

A module that uses ``send_api`` names the pages it knows in a ``page_tokens`` fixture.
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.stack import Stack
from tests.unit.responder.sendapi_stub import SendApiStub


@pytest.fixture
def send_api(page_tokens: dict[str, str]) -> Iterator[SendApiStub]:
    """The Send API stand-in, accepting ``page_tokens``."""
    with SendApiStub(page_tokens) as stub:
        yield stub


@pytest.fixture
def meta_stack_factory(
    clean_nats: str, database_url: str, tmp_path: Path, send_api: SendApiStub
) -> Callable[..., Stack]:
    """Stacks (not started) whose responder sends through ``send_api``; keywords add env."""

    def make(**env: str) -> Stack:
        return Stack(
            nats_url=clean_nats,
            database_url=database_url,
            workdir=tmp_path,
            extra_env={
                "DMDESK_SEND_ADAPTER": "meta",
                "DMDESK_GRAPH_API_URL": send_api.base_url,
                "DMDESK_PAGE_ACCESS_TOKENS": json.dumps(send_api.tokens),
                **env,
            },
        )

    return make
