"""Attachments that last: inbound images, videos, audio and files copied into NATS.

Meta's attachment URLs expire, so the responder copies each inbound attachment soon
after arrival, on a durable consumer of its own (``responder-contacts-v2``, with the
profile fetcher; the DM itself is never held up), into the object store bucket
``DMDESK_ATTACHMENTS_BUCKET``. A copy larger than ``DMDESK_ATTACHMENT_MAX_BYTES`` or of
a content type not in ``DMDESK_ATTACHMENT_CONTENT_TYPES`` is refused; a download that
fails is tried again with back-off, then recorded as failed. Each outcome is published
on ``dm.attachment`` for the api, which serves stored copies at
``/v1/attachments/{object_name}``.
"""

import asyncio
import fnmatch
import hashlib
import logging
from collections.abc import Callable

import aiohttp
from nats.js.api import ObjectMeta
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from services.responder.meta import MAX_BACKOFF_SECONDS
from shared.events import (
    Attachment,
    AttachmentCopied,
    AttachmentCopyState,
    Channel,
    InboundMessage,
)
from shared.settings import Settings

logger = logging.getLogger("dmdesk.responder.attachments")

COPIED_TYPES = frozenset({"image", "video", "audio", "file"})


class AttachmentRefusedError(Exception):
    """An attachment not kept, with the reason."""


def object_name(message: InboundMessage, index: int) -> str:
    """The copy's name in the bucket: stable for a message's attachment."""
    key = f"{message.channel.value}\x00{message.account_id}\x00{message.mid}\x00{index}"
    return hashlib.sha256(key.encode()).hexdigest()


class AttachmentCopier:
    """Downloads inbound attachments into the object store."""

    def __init__(
        self, http: Callable[[], aiohttp.ClientSession], store: ObjectStore, settings: Settings
    ) -> None:
        self.http = http
        self.store = store
        self.max_bytes = settings.attachment_max_bytes
        self.content_types = settings.attachment_content_types
        self.timeout = settings.attachment_timeout_seconds
        self.max_attempts = settings.attachment_max_attempts
        self.backoff = settings.send_backoff_seconds

    async def copy_all(self, message: InboundMessage) -> list[AttachmentCopied]:
        """Copy each of the message's attachments that has a URL; how each ended."""
        if message.is_echo or message.channel == Channel.GENERIC:
            return []
        return [
            await self.copy(message, index, attachment)
            for index, attachment in enumerate(message.attachments)
            if attachment.type in COPIED_TYPES and attachment.url
        ]

    async def copy(
        self, message: InboundMessage, index: int, attachment: Attachment
    ) -> AttachmentCopied:
        """Copy one attachment (once: a copy already stored is not fetched again)."""
        name = object_name(message, index)
        outcome = AttachmentCopied(
            conversation=message.conversation,
            mid=message.mid,
            index=index,
            state=AttachmentCopyState.STORED,
            object_name=name,
        )
        try:
            info = await self.store.get_info(name)
        except NotFoundError:
            pass
        else:
            return outcome.model_copy(update={"content_type": info.description, "size": info.size})
        assert attachment.url is not None
        reason = "not fetched"
        for attempt in range(1, self.max_attempts + 1):
            try:
                content_type, data = await self._download(attachment.url)
            except AttachmentRefusedError as refused:
                return outcome.model_copy(
                    update={
                        "state": AttachmentCopyState.REFUSED,
                        "object_name": None,
                        "reason": str(refused),
                    }
                )
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = f"download failed: {type(error).__name__}"
            else:
                meta = ObjectMeta(name=name, description=content_type)
                await self.store.put(name, data, meta=meta)
                return outcome.model_copy(update={"content_type": content_type, "size": len(data)})
            logger.warning(
                "attachment download failed",
                extra={"channel": message.channel.value, "attempt": attempt, "reason": reason},
            )
            if attempt < self.max_attempts:
                await asyncio.sleep(min(MAX_BACKOFF_SECONDS, self.backoff * 2 ** (attempt - 1)))
        return outcome.model_copy(
            update={"state": AttachmentCopyState.FAILED, "object_name": None, "reason": reason}
        )

    async def _download(self, url: str) -> tuple[str, bytes]:
        """The content type and bytes at ``url``; AttachmentRefusedError past the limits."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self.http().get(url, timeout=timeout) as response:
            if response.status in (403, 404, 410):
                raise AttachmentRefusedError(f"the platform answered {response.status} (expired?)")
            response.raise_for_status()
            content_type = response.headers.get("content-type", "").split(";")[0].strip()
            if not any(fnmatch.fnmatch(content_type, allowed) for allowed in self.content_types):
                raise AttachmentRefusedError(f"content type {content_type or 'unknown'!r} not kept")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise AttachmentRefusedError(f"larger than {self.max_bytes} bytes")
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > self.max_bytes:
                    raise AttachmentRefusedError(f"larger than {self.max_bytes} bytes")
            return content_type, bytes(data)
