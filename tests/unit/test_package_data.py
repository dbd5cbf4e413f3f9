"""Every file the services read at run time ships in the package (pyproject's package-data)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _package_data() -> dict[str, list[str]]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data: dict[str, list[str]] = pyproject["tool"]["setuptools"]["package-data"]
    return data


def _shipped(path: Path, package_data: dict[str, list[str]]) -> bool:
    relative = path.relative_to(ROOT)
    for depth in range(len(relative.parts) - 1, 0, -1):
        package = ".".join(relative.parts[:depth])
        inside = Path(*relative.parts[depth:])
        if any(inside.match(pattern) for pattern in package_data.get(package, [])):
            return True
    return False


def test_every_data_file_of_shared_and_the_services_is_package_data() -> None:
    package_data = _package_data()
    files = [
        path
        for folder in ("shared", "services")
        for path in sorted((ROOT / folder).rglob("*"))
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    ]
    assert files, "no data files found: the test looks in the wrong place"
    assert [str(p.relative_to(ROOT)) for p in files if not _shipped(p, package_data)] == []


def test_the_moved_contracts_ship_their_files() -> None:
    package_data = _package_data()
    for name in ("shared/priority_policy.yaml", "shared/defaults/rules.yaml"):
        assert _shipped(ROOT / name, package_data), name
