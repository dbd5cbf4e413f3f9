"""The committed AsyncAPI document is what the services generate."""

import json
from pathlib import Path

from dmdesk.asyncapi import asyncapi_document

DOCUMENT = Path(__file__).parents[2] / "docs" / "asyncapi.json"


def test_committed_asyncapi_document_is_current() -> None:
    committed = json.loads(DOCUMENT.read_text())
    assert committed == asyncapi_document(), (
        "docs/asyncapi.json is stale: run `dmdesk asyncapi --output docs/asyncapi.json`"
    )


def test_asyncapi_documents_every_subject_family() -> None:
    addresses = {channel["address"] for channel in asyncapi_document()["channels"].values()}
    assert {
        "dm.inbound.*",
        "dm.echo.*",
        "dm.classified",
        "dm.routed.reply",
        "dm.routed.quiet",
        "dm.outbound.requested",
        "dm.outbound.result",
        "dm.status.*",
        "dm.dlq.classifier",
    } <= addresses
