"""The AsyncAPI document of every ``dm.>`` subject, generated from the four services."""

from typing import Any
from urllib.parse import quote

from faststream.specification import AsyncAPI

from services.api.app import build as build_api
from services.classifier.app import build as build_classifier
from services.ingest.app import build as build_ingest
from services.responder.app import build as build_responder
from shared.bus import BatchConsumer
from shared.settings import Settings


def asyncapi_document() -> dict[str, Any]:
    """AsyncAPI 3.0 for the events the services publish and consume (default settings)."""
    settings = Settings(nats_url="nats://nats:4222")
    specs = [
        build(settings) for build in (build_ingest, build_classifier, build_responder, build_api)
    ]
    spec = AsyncAPI(
        *(spec.broker for spec in specs),
        title="dmdesk events",
        version="1",
        description="Every event dmdesk carries on the dm.> subjects of its JetStream stream.",
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    for service in specs:
        for consumer in service.batch_consumers:
            _receives(document, consumer)
    return document


def _receives(document: dict[str, Any], consumer: BatchConsumer) -> None:
    """Document a :class:`BatchConsumer` the way faststream documents its subscribers.

    It pulls with nats-py, outside faststream, so faststream does not see it. A
    consumer of several subjects gets a channel per subject (``<title> (<subject>)``).
    """
    several = len(consumer.schemas) > 1
    for subject, schema in consumer.schemas.items():
        title = f"{consumer.title} ({subject})" if several else consumer.title
        message = f"{title}:SubscribeMessage"
        channel_ref = f"#/channels/{quote(title)}"
        document["channels"][title] = {
            "address": subject,
            "bindings": {"nats": {"bindingVersion": "custom", "subject": subject}},
            "description": consumer.consumer.description,
            "messages": {
                "SubscribeMessage": {"$ref": f"#/components/messages/{quote(message, safe=':')}"}
            },
            "servers": [{"$ref": f"#/servers/{server}"} for server in document["servers"]],
        }
        document["operations"][title] = {
            "action": "receive",
            "channel": {"$ref": channel_ref},
            "messages": [{"$ref": f"{channel_ref}/messages/SubscribeMessage"}],
        }
        document["components"]["messages"][message] = {
            "correlationId": {"location": "$message.header#/correlation_id"},
            "payload": {"$ref": f"#/components/schemas/{schema.__name__}"},
            "title": message,
        }
