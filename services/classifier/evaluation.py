"""Measure the classifier beside the keyword baseline on data training never saw.

- BANKING77's official test split, categories mapped through ``label_map.json``;
- the held-out 20 % of the fixed-seed stratified Bitext split;
- complaint against not-complaint on the complaints set, read from its path (no licence:
  never copied), on all rows and on the tweets addressed to a company (without the random
  chatter); nothing was trained, tuned or chosen on any part of it;
- the team's own held-out examples, overall, per language, and complaint against not;
- the team's own held-out social-media tweets, complaint against not;
- priority: urgent BANKING77 test messages must never be classified below high;
- critical signals: urgent precision and recall per language on the team's held-out
  critical-signal DMs (with hard negatives);
- the language of short DMs (detector alone, and how many it leaves to the fallbacks);
- spam: the share of held-out customer DMs (every own held-out DM that is not spam) closed
  as spam without reply.

Macro-F1 averages the classes present in the gold labels; a prediction of any other
class counts as an error of the gold class (it lowers recall, it adds no zero-F1 class).
"""

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.classifier import datasets, keywords
from services.classifier.datasets import Example
from services.classifier.pipeline import Classifier, ClassifyRequest
from shared.events import Classification, Priority

Predictor = Callable[[list[str]], list[Classification]]


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Report:
    """Scores of one predictor on one dataset."""

    name: str
    classes: list[ClassScores]
    macro_f1: float
    accuracy: float
    labels: list[str]
    confusion: list[list[int]]
    size: int

    def lines(self, with_confusion: bool = True) -> list[str]:
        """The report as text: per-class table, macro-F1, confusion matrix."""
        width = max([len(score.label) for score in self.classes] + [10])
        out = [
            f"{self.name} (n={self.size})",
            f"  {'class':<{width}}  precision  recall     f1  support",
        ]
        out.extend(
            f"  {c.label:<{width}}  {c.precision:9.3f}  {c.recall:6.3f}  {c.f1:5.3f}"
            f"  {c.support:7d}"
            for c in self.classes
        )
        out.append(f"  macro-F1 {self.macro_f1:.4f}   accuracy {self.accuracy:.4f}")
        if with_confusion:
            out.append("  confusion (rows: gold, columns: predicted)")
            short = [label[:7] for label in self.labels]
            out.append(f"  {'':<{width}} " + " ".join(f"{label:>7}" for label in short))
            out.extend(
                f"  {label:<{width}} " + " ".join(f"{count:7d}" for count in row)
                for label, row in zip(self.labels, self.confusion, strict=True)
            )
        return out


def score(name: str, gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> Report:
    """Per-class precision, recall, F1, macro-F1 over the gold classes, and the confusion."""
    gold_labels = sorted({str(label) for label in gold})
    all_labels = gold_labels + sorted({str(p) for p in predicted} - set(gold_labels))
    pairs = Counter((str(g), str(p)) for g, p in zip(gold, predicted, strict=True))
    classes = []
    for label in gold_labels:
        true_positive = pairs[(label, label)]
        predicted_count = sum(count for (_, p), count in pairs.items() if p == label)
        support = sum(count for (g, _), count in pairs.items() if g == label)
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        classes.append(ClassScores(label, precision, recall, f1, support))
    correct = sum(count for (g, p), count in pairs.items() if g == p)
    return Report(
        name=name,
        classes=classes,
        macro_f1=sum(s.f1 for s in classes) / len(classes) if classes else 0.0,
        accuracy=correct / len(gold) if gold else 0.0,
        labels=all_labels,
        confusion=[[pairs[(g, p)] for p in all_labels] for g in all_labels],
        size=len(gold),
    )


@dataclass
class Evaluation:
    """Every report of one evaluation run, model and baseline side by side."""

    reports: list[tuple[Report, Report]] = field(default_factory=list)
    per_language: list[tuple[str, Report, Report]] = field(default_factory=list)
    priority_checks: list[str] = field(default_factory=list)
    criticality: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Every headline figure by name (macro-F1s, per-language F1s, critical, spam)."""
        figures = {model.name: model.macro_f1 for model, _ in self.reports}
        figures.update(
            {
                f"own held-out {language} macro-F1": m.macro_f1
                for language, m, _ in self.per_language
            }
        )
        return figures | self.figures

    def lines(self) -> list[str]:
        """The whole evaluation as text."""
        out: list[str] = []
        for model_report, baseline_report in self.reports:
            out.extend(model_report.lines())
            out.extend(baseline_report.lines(with_confusion=False))
            out.append("")
        out.append("own held-out examples per language (macro-F1 / accuracy)")
        out.extend(
            f"  {language}: model {m.macro_f1:.3f} / {m.accuracy:.3f}   "
            f"baseline {b.macro_f1:.3f} / {b.accuracy:.3f}   (n={m.size})"
            for language, m, b in self.per_language
        )
        out.append("")
        out.extend(self.priority_checks)
        out.append("")
        out.extend(self.criticality)
        out.append("")
        out.append("summary (macro-F1, model vs keyword baseline)")
        out.extend(f"  {m.name}: {m.macro_f1:.4f} vs {b.macro_f1:.4f}" for m, b in self.reports)
        return out


def evaluate(complaints_path: Path | None, classifier: Classifier | None = None) -> Evaluation:
    """Run every measurement; the complaints set is skipped when its path is None."""
    classifier = classifier or Classifier()

    def model(texts: list[str]) -> list[Classification]:
        return classifier.classify_batch([ClassifyRequest(text) for text in texts])

    def baseline(texts: list[str]) -> list[Classification]:
        return [keywords.classify(text) for text in texts]

    evaluation = Evaluation()
    banking_test = datasets.banking77("test")
    _, bitext_test = datasets.bitext_split()
    own_test = datasets.own_examples(datasets.OWN_EXAMPLES_TEST)
    banking_model = model([example.text for example in banking_test])
    for name, examples, predicted in (
        ("BANKING77 test (mapped categories)", banking_test, banking_model),
        ("Bitext held-out 20% (seed 77)", bitext_test, None),
        ("own held-out examples (6 languages)", own_test, None),
    ):
        texts = [example.text for example in examples]
        gold = [example.category.value for example in examples]
        model_predictions = predicted if predicted is not None else model(texts)
        evaluation.reports.append(
            (
                score(f"{name}: model", gold, [c.category.value for c in model_predictions]),
                score(
                    f"{name}: keyword baseline", gold, [c.category.value for c in baseline(texts)]
                ),
            )
        )
    social_test = datasets.social_examples(datasets.SOCIAL_EXAMPLES_TEST)
    evaluation.reports.append(
        _complaint_reports(
            "own held-out examples (6 languages), complaint vs not",
            [example.complaint for example in own_test],
            model([example.text for example in own_test]),
            baseline([example.text for example in own_test]),
        )
    )
    evaluation.reports.append(
        _complaint_reports(
            "own held-out social-media tweets, complaint vs not",
            [tweet.is_complaint for tweet in social_test],
            model([tweet.text for tweet in social_test]),
            baseline([tweet.text for tweet in social_test]),
        )
    )
    if complaints_path is not None:
        evaluation.reports.extend(_complaints(complaints_path, model, baseline))
    evaluation.per_language = _per_language(own_test, model, baseline)
    evaluation.priority_checks = _urgent_check(banking_test, banking_model, baseline)
    critical_test = datasets.critical_examples(datasets.CRITICAL_SIGNALS_TEST)
    critical_predictions = model([example.text for example in critical_test])
    figures = evaluation.figures
    evaluation.criticality = [
        *critical_lines(critical_test, critical_predictions, figures),
        *short_dm_lines(classifier, datasets.short_dms(datasets.SHORT_DMS_TEST), figures),
        *spam_lines(
            [example.text for example in own_test if example.category.value != "spam"]
            + [example.text for example in critical_test]
            + [text for text, _ in datasets.short_dms(datasets.SHORT_DMS_TEST)],
            model,
            figures,
        ),
    ]
    return evaluation


def critical_lines(
    examples: Sequence[datasets.CriticalExample],
    predictions: Sequence[Classification],
    figures: dict[str, float],
) -> list[str]:
    """Urgent precision and recall on critical-signal DMs, per language and overall."""
    lines = [
        f"critical signals, held-out DMs (n={len(examples)}): urgent precision / recall,"
        " signal named (of the critical ones)"
    ]
    languages = sorted({example.language for example in examples})
    for language in [*languages, "all"]:
        pairs = [
            (example, prediction)
            for example, prediction in zip(examples, predictions, strict=True)
            if language in ("all", example.language)
        ]
        gold = sum(bool(example.critical) for example, _ in pairs)
        urgent = [prediction.priority is Priority.URGENT for _, prediction in pairs]
        hits = sum(
            bool(example.critical) and is_urgent
            for (example, _), is_urgent in zip(pairs, urgent, strict=True)
        )
        named = sum(
            bool(example.critical & set(prediction.critical)) for example, prediction in pairs
        )
        precision = hits / sum(urgent) if sum(urgent) else 0.0
        recall = hits / gold if gold else 0.0
        figures[f"critical {language} urgent precision"] = precision
        figures[f"critical {language} urgent recall"] = recall
        lines.append(
            f"  {language}: precision {precision:.3f}  recall {recall:.3f}  "
            f"signal named {named}/{gold}  (n={len(pairs)}, critical {gold})"
        )
    return lines


def short_dm_lines(
    classifier: Classifier, dms: Sequence[tuple[str, str]], figures: dict[str, float]
) -> list[str]:
    """Language accuracy of the detector on short DMs, and how many it leaves unsure."""
    detected = classifier.languages.detect_batch([text for text, _ in dms])
    right = sum(found.language == gold for found, (_, gold) in zip(detected, dms, strict=True))
    unsure = sum(found.language is None for found in detected)
    wrong = len(dms) - right - unsure
    figures["short DMs language right"] = right / len(dms)
    figures["short DMs language wrong"] = wrong / len(dms)
    lines = [f"short DMs, language (n={len(dms)})"]
    lines.append(
        f"  detector: right {right / len(dms):.3f}, wrong {wrong / len(dms):.3f}, "
        f"left to the contact's or the page's language {unsure / len(dms):.3f}"
    )
    for language in sorted({gold for _, gold in dms}):
        subset = [
            found.language == gold
            for found, (_, gold) in zip(detected, dms, strict=True)
            if gold == language
        ]
        lines.append(f"    {language}: right {sum(subset)}/{len(subset)}")
    return lines


def spam_lines(
    customer_texts: Sequence[str], model: Predictor, figures: dict[str, float]
) -> list[str]:
    """The share of customer DMs (none of them spam) closed as spam without reply."""
    predictions = model(list(customer_texts))
    closed = sum(prediction.spam for prediction in predictions)
    figures["spam false-positive rate"] = closed / len(predictions)
    review = sum(
        prediction.category.value == "spam" and not prediction.spam for prediction in predictions
    )
    return [
        f"spam on held-out customer DMs (n={len(predictions)}): closed without reply "
        f"{closed} (false-positive rate {closed / len(predictions):.4f}), "
        f"sent to the spam review view {review}"
    ]


def _complaints(path: Path, model: Predictor, baseline: Predictor) -> list[tuple[Report, Report]]:
    rows = datasets.complaints(path)
    texts = [row.text for row in rows]
    gold = [row.is_complaint for row in rows]
    model_predictions = model(texts)
    baseline_predictions = baseline(texts)
    addressed = [i for i, row in enumerate(rows) if row.domain not in datasets.RANDOM_TWEET_DOMAINS]
    return [
        _complaint_reports(
            "complaints set, all rows", gold, model_predictions, baseline_predictions
        ),
        _complaint_reports(
            "complaints set, tweets addressed to a company",
            [gold[i] for i in addressed],
            [model_predictions[i] for i in addressed],
            [baseline_predictions[i] for i in addressed],
        ),
    ]


def _complaint_reports(
    name: str,
    gold: Sequence[bool],
    model_predictions: Sequence[Classification],
    baseline_predictions: Sequence[Classification],
) -> tuple[Report, Report]:
    def flags(values: Sequence[bool]) -> list[str]:
        return ["complaint" if value else "not" for value in values]

    return (
        score(f"{name}: model", flags(gold), flags([c.complaint for c in model_predictions])),
        score(
            f"{name}: keyword baseline",
            flags(gold),
            flags([c.complaint for c in baseline_predictions]),
        ),
    )


def _per_language(
    examples: list[Example], model: Predictor, baseline: Predictor
) -> list[tuple[str, Report, Report]]:
    results = []
    for language in sorted({example.language for example in examples}):
        subset = [example for example in examples if example.language == language]
        texts = [example.text for example in subset]
        gold = [example.category.value for example in subset]
        results.append(
            (
                language,
                score(f"{language}: model", gold, [c.category.value for c in model(texts)]),
                score(f"{language}: baseline", gold, [c.category.value for c in baseline(texts)]),
            )
        )
    return results


def _urgent_check(
    examples: list[Example], predictions: list[Classification], baseline: Predictor
) -> list[str]:
    urgent = [i for i, example in enumerate(examples) if example.priority is Priority.URGENT]
    baseline_predictions = baseline([examples[i].text for i in urgent])
    lines = [f"priority: urgent BANKING77 test messages (n={len(urgent)})"]
    for name, priorities in (
        ("model", [predictions[i].priority for i in urgent]),
        ("keyword baseline", [c.priority for c in baseline_predictions]),
    ):
        below = sum(priority.rank > Priority.HIGH.rank for priority in priorities)
        counts = Counter(priority.value for priority in priorities)
        verdict = "OK" if below == 0 else "FAILS"
        lines.append(
            f"  {name}: {below} below high ({verdict}); "
            + ", ".join(f"{p.value} {counts.get(p.value, 0)}" for p in Priority)
        )
    return lines


def urgent_below_high(evaluation: Evaluation) -> bool:
    """True when the model let an urgent BANKING77 test message fall below high."""
    return any(
        line.startswith("  model:") and "FAILS" in line for line in evaluation.priority_checks
    )
