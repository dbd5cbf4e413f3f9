"""The api stands on the contract alone: it never imports the responder or the classifier
(issue #16, part 7). Their shared contracts (the rule-set document and its compiler, the
priority policy file, the private-information detector) live in ``shared/``."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("services.responder", "services.classifier")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in {"import_module", "__import__", "files"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))  # importlib, resources.files
    return found


def _forbidden_imports(package: Path) -> list[str]:
    return [
        f"{path.relative_to(package)}:{line}: {name}"
        for path in sorted(package.rglob("*.py"))
        for line, name in sorted(_imports(path))
        if name.startswith(FORBIDDEN)
    ]


@pytest.mark.parametrize("package", ["services/api", "shared"])
def test_the_api_and_the_contract_import_neither_the_responder_nor_the_classifier(
    package: str,
) -> None:
    assert _forbidden_imports(ROOT / package) == []


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import services.responder.faq\n"
        "from services.classifier import priority\n"
        "from services.responder.rules import compile_rule_set\n"
        "def f():\n"
        "    from services.classifier.priority import PolicyStore\n"
        "importlib.import_module('services.responder.decide')\n"
        "resources.files('services.responder.defaults')\n"
        "from shared import rules\n"
    )
    found = [line.split(": ")[1] for line in _forbidden_imports(tmp_path)]
    assert found == [
        "services.responder.faq",
        "services.classifier",
        "services.classifier.priority",
        "services.responder.rules",
        "services.responder.rules.compile_rule_set",
        "services.classifier.priority",
        "services.classifier.priority.PolicyStore",
        "services.responder.decide",
        "services.responder.defaults",
    ]
