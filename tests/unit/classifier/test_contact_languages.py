"""The contacts' languages help the classifier, and never stop it."""

from collections.abc import Iterable, Mapping

from services.classifier.app import classify_remembering_languages
from services.classifier.pipeline import Classifier
from services.classifier.stores import ContactLanguages, contact_key
from shared.events import Classification, LanguageSource
from shared.settings import Settings
from tests.events import generic_inbound


class MemoryLanguages(ContactLanguages):
    def __init__(self, known: dict[str, str], broken: bool = False) -> None:
        super().__init__(lambda: None, Settings())  # type: ignore[arg-type,return-value]
        self.known = known
        self.broken = broken
        self.writes: list[dict[str, str]] = []

    async def read(self, keys: Iterable[str]) -> dict[str, str]:
        if self.broken:
            raise ConnectionError("no KV")
        return {key: self.known[key] for key in keys if key in self.known}

    async def write(self, changed: Mapping[str, str]) -> None:
        if self.broken:
            raise ConnectionError("no KV")
        self.writes.append(dict(changed))


async def test_languages_are_read_per_pull_and_written_only_when_they_change(
    classifier: Classifier,
) -> None:
    known = generic_inbound("1", contact="known", text="Hola, quiero cambiar mi dirección de envío")
    short = generic_inbound("2", contact="short", text="ok 👍")
    store = MemoryLanguages({contact_key(known): "es", contact_key(short): "it"})
    outcomes = await classify_remembering_languages(classifier, store, [known, short], Settings())
    first, second = outcomes
    assert isinstance(first, Classification)
    assert isinstance(second, Classification)
    assert (first.language, first.language_source) == ("es", LanguageSource.DETECTOR)
    assert (second.language, second.language_source) == ("it", LanguageSource.CONTACT)
    assert store.writes == []  # es was known already; "ok" decided nothing


async def test_a_broken_bucket_does_not_stop_classification(classifier: Classifier) -> None:
    message = generic_inbound("1", text="where is my order?")
    outcomes = await classify_remembering_languages(
        classifier, MemoryLanguages({}, broken=True), [message], Settings()
    )
    assert isinstance(outcomes[0], Classification)
    assert outcomes[0].language == "en"


async def test_a_new_contacts_language_is_written_only_when_it_is_not_the_pages_default(
    classifier: Classifier,
) -> None:
    # A short DM falls back to the stored language, else the page's default (en): a new
    # contact writing English needs no entry; one writing Spanish does, and so does a
    # known Spanish writer who now writes English (the entry would be wrong).
    english = generic_inbound("1", contact="new-en", text="Hi, I would like to change my address")
    spanish = generic_inbound("2", contact="new-es", text="Hola, quiero cambiar mi dirección")
    switched = generic_inbound("3", contact="was-es", text="Hi, I would like to change my address")
    store = MemoryLanguages({contact_key(switched): "es"})
    outcomes = await classify_remembering_languages(
        classifier, store, [english, spanish, switched], Settings()
    )
    assert [o.language for o in outcomes if isinstance(o, Classification)] == ["en", "es", "en"]
    assert store.writes == [{contact_key(spanish): "es", contact_key(switched): "en"}]
