"""Files shipped inside dmdesk's packages (the defaults), or a file given instead."""

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# libyaml's loader where PyYAML was built with it: six times as fast on the larger files.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(package: str, resource: str, path: Path | None = None) -> str:
    """The text of the file at ``path``, or of ``resource`` packaged in ``package``."""
    if path is None:
        return resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    return path.read_text(encoding="utf-8")


def parse_yaml(text: str | bytes) -> Any:
    """The YAML or JSON document ``text`` (safe loading, with libyaml where PyYAML has it).

    JSON is read as JSON first: YAML, of which JSON is nearly a subset, reads an emoji that
    JSON escapes as a surrogate pair (``json.dumps`` writes "😊" so) as two lone surrogates.
    """
    try:
        return json.loads(text)
    except ValueError:  # not JSON (UnicodeDecodeError included): YAML says why, if it is not
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader


def utf8_encodable(document: Any) -> bool:
    """Whether every string of a decoded JSON or YAML ``document`` can be written as UTF-8.

    Both formats decode an unpaired UTF-16 surrogate escape ("\\ud800"), and YAML decodes
    even a paired one (an emoji as ``json.dumps`` writes it, "\\ud83d\\ude0a") as two lone
    surrogates: no UTF-8 store, log or bus message takes them.
    """
    try:
        json.dumps(document, ensure_ascii=False, default=str).encode()
    except UnicodeEncodeError:
        return False
    return True
