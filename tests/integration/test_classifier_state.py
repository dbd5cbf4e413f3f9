"""The classifier remembers contacts' languages in NATS and follows the published model.

The classifier service runs in-process on a real NATS server, with its real model.
"""

from collections.abc import Callable
from pathlib import Path

import nats
from nats.js import JetStreamContext

from services.classifier.app import build
from services.classifier.model import DEFAULT_ARTIFACT, load, save
from services.classifier.stores import MODEL_OBJECT, contact_key, open_models, publish_model
from shared.events import Channel, ClassifiedMessage, InboundMessage, LanguageSource
from shared.service import service_app
from shared.settings import Settings
from shared.streams import CLASSIFIED, CLASSIFIER, MSG_ID_HEADER, inbound_subject, provision
from tests.events import generic_inbound
from tests.stack import bucket_keys, eventually, stored


async def send(js: JetStreamContext, message: InboundMessage) -> None:
    await js.publish(
        inbound_subject(Channel.GENERIC),
        message.model_dump_json().encode(),
        headers={MSG_ID_HEADER: f"in-{message.mid}"},
    )


async def classification_of(
    js: JetStreamContext, settings: Settings, mid: str
) -> ClassifiedMessage:
    async def find() -> list[ClassifiedMessage]:
        found = [
            ClassifiedMessage.model_validate_json(data)
            for data in await stored(js, CLASSIFIED, settings.stream_name)
        ]
        return [event for event in found if event.message.mid == mid]

    return (await eventually(find, bool, timeout=20))[0]


async def test_a_short_dm_takes_the_contacts_previous_language_else_the_pages_default(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(account_languages={"page": ["de", "es", "en"]})
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    try:
        await provision(js, settings, CLASSIFIER)
        app = service_app(build(settings))
        async with app.router.lifespan_context(app):
            await send(
                js,
                generic_inbound(
                    "long", contact="lucia", text="Hola, quiero cambiar la dirección de mi pedido"
                ),
            )
            first = await classification_of(js, settings, "long")
            assert first.classification.language == "es"
            await send(js, generic_inbound("short", contact="lucia", text="ok 👍"))
            await send(js, generic_inbound("stranger", contact="max", text="ok 👍"))
            short = (await classification_of(js, settings, "short")).classification
            stranger = (await classification_of(js, settings, "stranger")).classification
        assert (short.language, short.language_source) == ("es", LanguageSource.CONTACT)
        assert (stranger.language, stranger.language_source) == (
            "de",
            LanguageSource.ACCOUNT_DEFAULT,
        )
        kv = await js.key_value(settings.contact_languages_bucket)
        stored_keys = await bucket_keys(js, settings.contact_languages_bucket)
        assert stored_keys == {contact_key(generic_inbound("long", contact="lucia"))}
        assert (await kv.get(stored_keys.pop())).value == b"es"
    finally:
        await client.close()


async def test_a_published_model_reaches_the_running_classifier_and_a_bad_one_is_refused(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    shipped = load(DEFAULT_ARTIFACT)
    retrained = tmp_path / "retrained.npz"
    save(retrained, shipped.featurizer, shipped.heads, {**shipped.meta, "version": "retrained-1"})
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    try:
        await provision(js, settings, CLASSIFIER)
        app = service_app(build(settings))
        follower = app.state.model_follower
        async with app.router.lifespan_context(app):
            store = await open_models(js, settings)
            await store.put(MODEL_OBJECT, b"not a model at all")
            await eventually(lambda: _value(follower.refused), bool, timeout=20)
            await send(js, generic_inbound("before", text="where is my order?"))
            before = (await classification_of(js, settings, "before")).classification
            assert before.model_version.startswith(shipped.version)

            assert await publish_model(js, settings, retrained) == "retrained-1"
            await eventually(lambda: _value(follower.version), bool, timeout=20)
            await send(js, generic_inbound("after", text="where is my order?"))
            after = (await classification_of(js, settings, "after")).classification
        assert after.model_version.startswith("retrained-1+")
    finally:
        await client.close()


async def _value(value: str | None) -> str | None:
    return value
