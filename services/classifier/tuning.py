"""Choose the category and intent heads' settings on a validation split of the training data.

Never on a test split: the validation split is carved out of what ``training`` trains on,
20 % of BANKING77's *training* split (stratified by intent) and 20 % of the own training
examples (stratified by language and category). Each candidate is fitted on the rest (with
the Bitext training part and the own tweets' chatter, as ``train`` does), written and read
back as an artefact (its int8 weights are what runs), and measured on the validation part:
mapped-category macro-F1 on the BANKING77 part, and macro-F1 on the own part, overall and
per language. ``dmdesk tune-classifier`` prints one line per candidate.

The rule that picks a candidate is fixed before the candidates are measured (``choose``):
the best BANKING77 validation macro-F1 among the candidates that keep the own validation
macro-F1 within ``OWN_TOLERANCE`` of the settings it starts from and lose no language more than
``LANGUAGE_TOLERANCE`` (each language has 30 validation DMs or fewer, one or two per
category: a language's figure moves by 0.05 with one message); ties keep the first.
"""

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from services.classifier import datasets
from services.classifier.datasets import Example
from services.classifier.evaluation import score
from services.classifier.model import load, save
from services.classifier.training import (
    TrainingConfig,
    stratified_split,
    training_examples,
    training_weight,
)
from services.classifier.training import fit as fit_heads

VALIDATION_SHARE = 0.2
VALIDATION_SEED = 2024
# The settings the tuning started from (those of catmodel-20261204-e0f85f4e): every
# candidate is a change to them, so the command measures the same list whatever the
# defaults in TrainingConfig became after it (intent_weight 0.15).
TUNED_FROM = replace(TrainingConfig(), intent_weight=0.1)
OWN_TOLERANCE = 0.005
LANGUAGE_TOLERANCE = 0.05
BANKING77 = "banking77"
OWN = "own"


@dataclass(frozen=True)
class Candidate:
    """One setting and what it reached on the validation split."""

    name: str
    config: TrainingConfig
    banking77: float
    own: float
    own_by_language: dict[str, float]

    def line(self) -> str:
        """The candidate's figures on one line."""
        languages = " ".join(
            f"{language} {value:.3f}" for language, value in sorted(self.own_by_language.items())
        )
        return (
            f"{self.name:<34} BANKING77 val {self.banking77:.4f}  own val {self.own:.4f}"
            f"  ({languages})"
        )


def candidates(base: TrainingConfig | None = None) -> list[tuple[str, TrainingConfig]]:
    """The settings tried: ``base`` first, then one or two changes to it at a time.

    The changes are relative to ``base``, so the list stays the one that was measured
    whatever the defaults become (see docs/classifier.md for its figures).
    """
    base = base or TUNED_FROM
    changes: list[tuple[str, dict[str, float]]] = [
        ("before", {}),
        ("own weight 2", {"own_example_weight": 2.0}),
        ("own weight 1.5", {"own_example_weight": 1.5}),
        ("C 0.7", {"category_c": 0.7, "intent_c": 0.7}),
        ("C 1.0", {"category_c": 1.0, "intent_c": 1.0}),
        ("C 0.35", {"category_c": 0.35, "intent_c": 0.35}),
        ("intent weight 0.2", {"intent_weight": 0.2}),
        ("intent weight 0.05", {"intent_weight": 0.05}),
        ("own weight 2, C 0.7", {"own_example_weight": 2.0, "category_c": 0.7, "intent_c": 0.7}),
        ("own weight 2, intent weight 0.2", {"own_example_weight": 2.0, "intent_weight": 0.2}),
        # A second round, added after the first had been measured (same split, same rule).
        ("own weight 4", {"own_example_weight": 4.0}),
        ("own weight 5", {"own_example_weight": 5.0}),
        ("intent temperature 0.2", {"intent_temperature": 0.2}),
        ("intent weight 0.15", {"intent_weight": 0.15}),
        ("char min_df 3", {"char_min_df": 3}),
        ("word min_df 2", {"word_min_df": 2}),
    ]
    return [(name, replace(base, **change)) for name, change in changes]  # type: ignore[arg-type]


def validation_split(
    examples: dict[str, list[Example]], seed: int = VALIDATION_SEED
) -> tuple[dict[str, list[Example]], dict[str, list[Example]]]:
    """(fitting, validation) by source: BANKING77 and own examples lose a share each."""
    keys: dict[str, Callable[[Example], str]] = {
        BANKING77: lambda example: example.intent,
        OWN: lambda example: f"{example.language}:{example.category.value}",
    }
    fitting: dict[str, list[Example]] = {}
    validation: dict[str, list[Example]] = {}
    for source, items in examples.items():
        if source not in keys:
            fitting[source] = list(items)
            continue
        kept, held_out = stratified_split(items, VALIDATION_SHARE, seed, key=keys[source])
        fitting[source] = [items[i] for i in kept]
        validation[source] = [items[i] for i in held_out]
    return fitting, validation


def measure(
    name: str,
    config: TrainingConfig,
    fitting: dict[str, list[Example]],
    validation: dict[str, list[Example]],
    tweets: Sequence[datasets.ComplaintExample],
) -> Candidate:
    """Fit ``config`` on ``fitting`` and measure it on ``validation``."""
    everything = [example for items in fitting.values() for example in items]
    weights = np.array(
        [
            training_weight(source, example, config)
            for source, items in fitting.items()
            for example in items
        ]
    )
    model, _ = fit_heads(everything, weights, tweets, config, version=f"validation-{name}")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "candidate.npz"
        save(path, model.featurizer, model.heads, model.meta)
        model = load(path)

    def macro_f1(examples: Sequence[Example]) -> float:
        predicted = model.predict([example.text for example in examples])
        gold = [example.category.value for example in examples]
        return score(name, gold, [p.category.value for p in predicted]).macro_f1

    own = validation[OWN]
    return Candidate(
        name=name,
        config=config,
        banking77=macro_f1(validation[BANKING77]),
        own=macro_f1(own),
        own_by_language={
            language: macro_f1([example for example in own if example.language == language])
            for language in sorted({example.language for example in own})
        },
    )


def choose(measured: Sequence[Candidate]) -> Candidate:
    """The rule fixed in advance (see the module's docstring); the first is the starting point."""
    start = measured[0]
    allowed = [
        candidate
        for candidate in measured
        if candidate.own >= start.own - OWN_TOLERANCE
        and all(
            value >= start.own_by_language[language] - LANGUAGE_TOLERANCE
            for language, value in candidate.own_by_language.items()
        )
    ]
    # max keeps the first of equals: the starting settings win a tie.
    return max(allowed or [start], key=lambda candidate: candidate.banking77)


def tune(report: Callable[[str], None] = print) -> Candidate:
    """Measure every candidate, report each line, and return the chosen one."""
    fitting, validation = validation_split(training_examples())
    tweets = datasets.social_examples()
    report(
        f"validation split (seed {VALIDATION_SEED}): BANKING77 {len(validation[BANKING77])}, "
        f"own {len(validation[OWN])}; fitted on "
        + ", ".join(f"{source} {len(items)}" for source, items in fitting.items())
    )
    measured = []
    for name, config in candidates():
        measured.append(measure(name, config, fitting, validation, tweets))
        report(measured[-1].line())
    chosen = choose(measured)
    report(f"chosen: {chosen.name}")
    return chosen
