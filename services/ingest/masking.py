"""Private information masked before anything is published: the stream never holds a card.

Card numbers (all but the last four digits) and their security codes are always masked;
the other kinds only when ``settings.ingest_masked_kinds`` lists them, otherwise they are
kept and the classifier flags them. An inbound message says in ``masked`` which kinds were
masked, so the responder can tell the customer not to send them in a DM.
"""

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from services.ingest.meta import Normalised
from shared import pii
from shared.events import InboundMessage, MessageUpdate, PrivateInfoKind, RawEvent


def masked_kinds(configured: Iterable[PrivateInfoKind]) -> list[PrivateInfoKind]:
    """The kinds ingest masks: the configured ones, and cards always."""
    return sorted({PrivateInfoKind.CARD, *configured}, key=list(PrivateInfoKind).index)


def masked(events: Sequence[Normalised], kinds: Sequence[PrivateInfoKind]) -> list[Normalised]:
    """``events`` with the private information of ``kinds`` masked in their text."""
    return [_masked(normalised, kinds) for normalised in events]


def _masked(normalised: Normalised, kinds: Sequence[PrivateInfoKind]) -> Normalised:
    event = normalised.event
    if isinstance(event, InboundMessage) and event.text:
        text, found = pii.mask_kinds(event.text, kinds)
        if not found:
            return normalised
        merged = [kind for kind in PrivateInfoKind if kind in {*found, *event.masked}]
        event = event.model_copy(update={"text": text, "masked": merged})
    elif isinstance(event, MessageUpdate) and event.text:
        text, found = pii.mask_kinds(event.text, kinds)
        if not found:
            return normalised
        event = event.model_copy(update={"text": text})
    elif isinstance(event, RawEvent) and event.body:
        event = event.model_copy(update={"body": _masked_document(event.body, kinds)})
    else:
        return normalised
    return dataclasses.replace(normalised, event=event)


def _masked_document(document: Any, kinds: Sequence[PrivateInfoKind]) -> Any:
    # Raw bodies nest at most MAX_JSON_DEPTH levels (the contract), so recursion is bounded.
    if isinstance(document, str):
        return pii.mask_kinds(document, kinds)[0]
    if isinstance(document, dict):
        return {key: _masked_document(value, kinds) for key, value in document.items()}
    if isinstance(document, list):
        return [_masked_document(value, kinds) for value in document]
    return document
