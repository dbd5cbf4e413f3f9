"""Files shipped inside dmdesk's packages (the defaults), or a file given instead."""

from importlib import resources
from pathlib import Path


def read_text(package: str, resource: str, path: Path | None = None) -> str:
    """The text of the file at ``path``, or of ``resource`` packaged in ``package``."""
    if path is None:
        return resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    return path.read_text(encoding="utf-8")
