"""Personal reply templates: Jinja2 in a sandbox, one variant per language (no framework).

Templates are rendered at validation time against sample contexts (a contact with a
name and one without), so a broken template is refused with its rule set, never at
send time. Undefined names are errors (``StrictUndefined``): a typo cannot send
an empty greeting.
"""

import functools
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from shared.events import Contact

MAX_TEXT_CHARS = 2000


# Honorifics people put before their name on a profile, in the six supported languages.
TITLES = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "dr",
        "prof",
        "sir",
        "dame",
        "rev",
        "herr",
        "frau",
        "fr",
        "hr",
        "dipl",
        "ing",
        "mag",
        "sr",
        "sra",
        "srta",
        "don",
        "doña",
        "dona",
        "dra",
        "mme",
        "mlle",
        "m",
        "monsieur",
        "madame",
        "dott",
        "dottssa",
        "dottoressa",
        "dottsa",
        "sig",
        "sigra",
        "signor",
        "signora",
        "avv",
        "srª",
    ]
)
_APOSTROPHES = "'\u2019-"
_NAME_CHARS = re.compile(rf"[^\w{_APOSTROPHES}]+", re.UNICODE)


def greeting_name(name: str | None) -> str | None:
    """The word to greet a contact by: the first real name, without titles or emoji.

    "Dr. Hans Müller" -> "Hans", "🌸 mia 🌸" -> "Mia", "" or "🌸" -> None. A template
    writes ``{% if contact.greeting_name %}`` so no greeting reads "Thanks !".
    """
    for raw in unicodedata.normalize("NFC", name or "").split():
        word = _NAME_CHARS.sub("", raw).strip(_APOSTROPHES)
        if raw.lower().replace(".", "").strip(",") in TITLES or word.lower() in TITLES:
            continue
        if len(word) < 2 or not any(char.isalpha() for char in word):
            continue
        return word[0].upper() + word[1:] if word.islower() else word
    return None


class TemplateContact(BaseModel):
    """What a template may say about the contact."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    first_name: str | None = None
    greeting_name: str | None = None
    tags: list[str] = []
    vip: bool = False

    @classmethod
    def of(cls, contact: Contact) -> "TemplateContact":
        """The template view of a platform contact."""
        name = (contact.name or "").strip() or None
        given = (contact.first_name or "").strip() or None  # the platform's, when known
        first = given or (name.split()[0] if name else None)
        return cls(
            name=name,
            first_name=first,
            greeting_name=greeting_name(given) or greeting_name(name),
            tags=list(contact.tags),
            vip=contact.vip,
        )


class TemplateContext(BaseModel):
    """Everything a template can use: ``contact``, ``message`` and ``team``."""

    model_config = ConfigDict(frozen=True)

    contact: TemplateContact
    channel: str = "generic"
    language: str = "en"
    category: str = "inquiry"
    priority: str = "normal"
    team: str | None = None
    answer: str | None = None
    open_now: bool = True
    back_at: str | None = Field(
        default=None, description="When the team is next in, in the customer's language."
    )
    asked_day: str | None = Field(
        default=None, description="The day an hours question is about, in the customer's words."
    )

    def as_mapping(self) -> dict[str, Any]:
        """The context as the plain mapping Jinja renders with."""
        return self.model_dump()


SAMPLE_CONTEXTS = (
    TemplateContext(
        contact=TemplateContact(
            name="Ana María López", first_name="Ana", greeting_name="Ana", tags=["vip"], vip=True
        ),
        team="support",
        answer="A sample answer.",
    ),
    TemplateContext(
        contact=TemplateContact(),
        channel="whatsapp",
        language="es",
        open_now=False,
        back_at="Monday at 9:00",
        asked_day="Friday 25 December",
    ),
)


class TemplateRenderError(ValueError):
    """A template that does not compile or render."""


TEMPLATE_CACHE_SIZE = 1024


class Renderer:
    """Compiles and renders templates in a sandboxed Jinja environment."""

    def __init__(self) -> None:
        self._env = SandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
        )
        # Compiling is the slow part (Jinja generates and execs Python): once per source.
        self._compile = functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)(self._env.from_string)

    def render(self, source: str, context: TemplateContext | Mapping[str, Any]) -> str:
        """Render ``source``; raises TemplateRenderError with Jinja's reason."""
        values = context.as_mapping() if isinstance(context, TemplateContext) else dict(context)
        try:
            text = self._compile(source).render(values)
        except TemplateError as error:
            raise TemplateRenderError(f"{type(error).__name__}: {error}") from error
        return text.strip()

    def check(self, source: str) -> None:
        """Render ``source`` against every sample context; raise when any fails or is empty."""
        for context in SAMPLE_CONTEXTS:
            text = self.render(source, context)
            if not text:
                raise TemplateRenderError("renders to an empty message")
            if len(text) > MAX_TEXT_CHARS:
                raise TemplateRenderError(
                    f"renders to {len(text)} characters (max {MAX_TEXT_CHARS})"
                )


def pick_language(variants: Mapping[str, str], language: str | None, default: str) -> str:
    """The variant language to use: the customer's when there is one, else the default."""
    if language and language in variants:
        return language
    if language and "-" in language and (base := language.split("-")[0]) in variants:
        return base
    return default
