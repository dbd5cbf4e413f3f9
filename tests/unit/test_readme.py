"""The README's two commands stay true: CI runs the same test command."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return [line for block in blocks[:2] for line in block.splitlines() if not line.startswith("#")]


def test_readme_opens_with_the_run_and_the_test_command() -> None:
    run, test = readme_commands()
    assert run.endswith("dmdesk up")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    _, test = readme_commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
