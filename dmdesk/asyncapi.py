"""The AsyncAPI document of every ``dm.>`` subject, generated from the four services."""

from typing import Any

from faststream.specification import AsyncAPI

from services.api.app import build as build_api
from services.classifier.app import build as build_classifier
from services.ingest.app import build as build_ingest
from services.responder.app import build as build_responder
from shared.settings import Settings


def asyncapi_document() -> dict[str, Any]:
    """AsyncAPI 3.0 for the events the services publish and consume (default settings)."""
    settings = Settings(nats_url="nats://nats:4222")
    brokers = [
        build(settings).broker
        for build in (build_ingest, build_classifier, build_responder, build_api)
    ]
    spec = AsyncAPI(
        *brokers,
        title="dmdesk events",
        version="1",
        description="Every event dmdesk carries on the dm.> subjects of its JetStream stream.",
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return document
