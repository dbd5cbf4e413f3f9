"""Files shipped inside dmdesk's packages (the defaults), or a file given instead."""

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


def parse_yaml(text: str) -> Any:
    """The YAML document ``text`` (safe loading, with libyaml where PyYAML has it)."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
