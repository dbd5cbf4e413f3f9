"""Inbound attachments' copies, served from the NATS object store (platform URLs expire)."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from nats.js.errors import NotFoundError

from services.api.auth import ReadKey
from services.api.schemas import KEYED, Problem
from shared.settings import Settings
from shared.streams import attachments_store_config, bind_object_store

router = APIRouter(prefix="/v1", tags=["attachments"], responses=KEYED)

ObjectName = Annotated[
    str, Path(pattern=r"^[0-9a-f]{64}$", description="The copy's name (from the message).")
]


@router.get(
    "/attachments/{name}",
    response_class=Response,
    responses={
        200: {
            "description": "The attachment, with the content type it was served with.",
            "content": {"application/octet-stream": {}},
        },
        404: {"model": Problem},
    },
)
async def get_attachment(name: ObjectName, request: Request, _key: ReadKey) -> Response:
    """A stored copy of an inbound attachment."""
    settings: Settings = request.app.state.settings
    js = request.app.state.broker.connection.jetstream()
    store = await bind_object_store(js, attachments_store_config(settings))
    try:
        found = await store.get(name)
    except NotFoundError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such attachment") from error
    return Response(
        content=found.data or b"",
        media_type=found.info.description or "application/octet-stream",
    )
