"""What the stateless classifier keeps in NATS: contacts' languages and the live model.

- ``dmdesk_contact_languages`` (KV): a contact's last language the detector was sure of,
  read once per pull for the pull's contacts and written only when it changes; the
  fallback for the next short DM.
- ``dmdesk_models`` (object store): the category model artefact. ``publish_model`` puts
  a trained artefact there; every classifier's :class:`ModelFollower` loads each new
  version, refuses one that does not load (the old model stays) and swaps it in without
  a restart.
"""

import asyncio
import base64
import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta
from nats.js.errors import KeyNotFoundError, ObjectNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from services.classifier.model import CategoryModel, load
from shared import streams
from shared.bus import nats_credentials
from shared.events import InboundMessage
from shared.settings import Settings
from shared.tasks import follow, stop_task

logger = logging.getLogger("dmdesk.classifier.stores")

MODEL_OBJECT = "category_model"
RECHECK_SECONDS = 30.0
STOP_SECONDS = 5.0


async def open_contact_languages(js: JetStreamContext, settings: Settings) -> KeyValue:
    """Bind the contact-languages bucket, creating it when missing."""
    return await streams.open_key_value(js, streams.contact_languages_bucket_config(settings))


async def open_models(js: JetStreamContext, settings: Settings) -> ObjectStore:
    """Bind the model bucket, creating it when missing."""
    return await streams.bind_object_store(js, streams.models_store_config(settings))


def contact_key(message: InboundMessage) -> str:
    """The KV key of a message's contact: channel, page and contact, hashed (KV-safe)."""
    raw = f"{message.channel.value}\x00{message.account_id}\x00{message.contact.platform_id}"
    return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest()[:18]).decode()


class ContactLanguages:
    """Contacts' last languages in the KV bucket, read and written a pull at a time."""

    def __init__(self, jetstream: Callable[[], JetStreamContext], settings: Settings) -> None:
        """Open the bucket on first use, through ``jetstream()`` (a connected context)."""
        self.jetstream = jetstream
        self.settings = settings
        self._kv: KeyValue | None = None

    @property
    def kv(self) -> KeyValue:
        """The bound bucket (after a first read)."""
        if self._kv is None:
            raise RuntimeError("contact languages read before the bucket was opened")
        return self._kv

    async def read(self, keys: Iterable[str]) -> dict[str, str]:
        """The known language of each key (missing keys are left out), read concurrently."""
        if self._kv is None:
            self._kv = await open_contact_languages(self.jetstream(), self.settings)
        unique = list(dict.fromkeys(keys))
        values = await asyncio.gather(*(self._get(key) for key in unique))
        return {key: value for key, value in zip(unique, values, strict=True) if value}

    async def _get(self, key: str) -> str | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def write(self, changed: Mapping[str, str]) -> None:
        """Store the languages that changed (the caller passes only those)."""
        await asyncio.gather(*(self.kv.put(key, value.encode()) for key, value in changed.items()))


async def publish_model(js: JetStreamContext, settings: Settings, artefact: Path) -> str:
    """Put a trained artefact in the model bucket; returns its version.

    Raises:
        ModelError: the artefact does not load here (never published).
    """
    model, data = await asyncio.to_thread(_read_artefact, artefact)
    store = await open_models(js, settings)
    await store.put(
        MODEL_OBJECT,
        data,
        meta=ObjectMeta(name=MODEL_OBJECT, description=model.version),
    )
    return model.version


def _read_artefact(path: Path) -> tuple[CategoryModel, bytes]:
    return load_checked(path), path.read_bytes()


def load_from_bytes(data: bytes) -> CategoryModel:
    """Load an artefact from its bytes (through a temporary file), checked."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "category_model.npz"
        path.write_bytes(data)
        return load_checked(path)


def load_checked(path: Path) -> CategoryModel:
    """Load an artefact and make sure it predicts (a model that cannot is refused)."""
    model = load(path)
    model.predict(["where is my order?"])
    return model


class ModelFollower:
    """Follows the model bucket and hands each new, loadable model to ``swap``."""

    def __init__(self, settings: Settings, swap: Callable[[CategoryModel], None]) -> None:
        """``swap`` receives each new model that loads; a bad artefact is logged and refused."""
        self.settings = settings
        self.swap = swap
        self.version: str | None = None
        self.refused: str | None = None
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, load the published model if there is one, and follow the bucket."""
        if self._client is None:
            self._client = await nats.connect(
                self.settings.nats_url.split(","),
                name="dmdesk-classifier-models",
                **nats_credentials(self.settings),
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
            )
        store = await open_models(self._client.jetstream(), self.settings)
        await self.refresh(store)
        self._task = asyncio.create_task(self._follow(store), name="model-watch")

    async def stop(self) -> None:
        """Stop following and close the connection."""
        await stop_task(self._task)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()

    async def refresh(self, store: ObjectStore) -> bool:
        """Load the published model if it is new; True when it was swapped in."""
        try:
            info = await store.get_info(MODEL_OBJECT)
        except ObjectNotFoundError:
            return False
        if info.deleted or info.nuid in (self.version, self.refused):
            return False
        result = await store.get(MODEL_OBJECT)
        try:
            model = await asyncio.to_thread(load_from_bytes, result.data or b"")
        except Exception as error:
            self.refused = info.nuid
            logger.error(  # noqa: TRY400 - the reason says it all
                "published model refused; keeping the current one",
                extra={"error_type": type(error).__name__, "reason": str(error)[:200]},
            )
            return False
        self.version = info.nuid
        self.swap(model)
        logger.info("model switched", extra={"model_version": model.version})
        return True

    async def _follow(self, store: ObjectStore) -> None:
        async def changed(_update: object) -> None:
            await self.refresh(store)

        await follow(
            lambda: store.watch(updates_only=True),
            changed,
            what="model",
            recheck_seconds=RECHECK_SECONDS,
        )
