"""Templates: personal, per language with a default, sandboxed, checked at validation."""

import pytest

from shared.events import Contact
from shared.rule_templates import Renderer, TemplateContact, TemplateContext, pick_language
from shared.rules import RuleSetError, compile_rule_set


def test_first_name_with_fallback() -> None:
    source = "Hi {{ contact.first_name or 'there' }}!"
    renderer = Renderer()
    named = TemplateContext(contact=TemplateContact.of(Contact(platform_id="1", name="Ana López")))
    anonymous = TemplateContext(contact=TemplateContact.of(Contact(platform_id="1")))
    assert renderer.render(source, named) == "Hi Ana!"
    assert renderer.render(source, anonymous) == "Hi there!"


def test_language_variant_falls_back_to_default() -> None:
    variants = {"en": "Hi", "es": "Hola"}
    assert pick_language(variants, "es", "en") == "es"
    assert pick_language(variants, "es-MX", "en") == "es"
    assert pick_language(variants, "ja", "en") == "en"
    assert pick_language(variants, None, "en") == "en"


def rule_set(template: str) -> dict[str, object]:
    return {
        "templates": {"t": {"en": template}},
        "rules": [{"id": "r", "then": [{"reply": "t"}]}],
    }


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("Hi {{ contact.frist_name }}", "UndefinedError"),
        ("Hi {{ contact.first_name ", "TemplateSyntaxError"),
        ("{{ ''.__class__.__mro__ }}", "SecurityError"),
        ("{% if false %}x{% endif %}", "empty message"),
    ],
)
def test_broken_template_is_refused_at_validation_with_its_name(template: str, reason: str) -> None:
    with pytest.raises(RuleSetError) as caught:
        compile_rule_set(rule_set(template))
    [problem] = caught.value.problems
    assert problem.location == "templates.t.en"
    assert reason in problem.reason


def test_template_without_default_language_variant_is_refused() -> None:
    document = {"templates": {"t": {"es": "Hola"}}, "rules": []}
    with pytest.raises(RuleSetError, match="default language"):
        compile_rule_set(document)


def test_a_name_that_only_renders_for_named_contacts_is_refused() -> None:
    # The sample contexts include a contact without a name: `.upper()` on None fails.
    with pytest.raises(RuleSetError, match="does not render"):
        compile_rule_set(rule_set("Hi {{ contact.first_name.upper() }}"))
