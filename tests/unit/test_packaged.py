"""Defaults are read from the package unless a file is given instead."""

from pathlib import Path

from shared import packaged

ROOT = Path(__file__).parents[2]


def test_without_a_path_the_packaged_resource_is_read() -> None:
    shipped = (ROOT / "shared" / "defaults" / "rules.yaml").read_text(encoding="utf-8")
    assert packaged.read_text("shared.defaults", "rules.yaml") == shipped


def test_a_given_path_is_read_instead_of_the_packaged_resource(tmp_path: Path) -> None:
    given = tmp_path / "rules.yaml"
    given.write_text("rules: []  # ünïcode\n", encoding="utf-8")
    assert packaged.read_text("shared.defaults", "rules.yaml", given) == "rules: []  # ünïcode\n"
