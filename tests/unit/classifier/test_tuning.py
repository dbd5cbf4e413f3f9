"""Training settings are chosen on a validation split of the training data, and training is
reproducible: one command, one model."""

from dataclasses import replace
from pathlib import Path

import numpy as np

from services.classifier import datasets
from services.classifier.training import TrainingConfig, train
from services.classifier.tuning import (
    BANKING77,
    OWN,
    Candidate,
    choose,
    validation_split,
)


def candidate(name: str, banking77: float, own: float, **languages: float) -> Candidate:
    by_language = {"en": 0.7, "de": 0.7} | languages
    return Candidate(name, replace(TrainingConfig()), banking77, own, by_language)


def test_the_settings_stay_unless_others_win_on_banking77_without_costing_own_examples() -> None:
    start = candidate("before", 0.948, 0.650)
    costs_own = candidate("costs own", 0.952, 0.640)
    costs_a_language = candidate("costs german", 0.951, 0.655, de=0.6)
    assert choose([start, costs_own, costs_a_language]) is start
    better = candidate("better", 0.950, 0.648)
    assert choose([start, costs_own, better]) is better
    assert choose([start, candidate("tie", 0.948, 0.660)]) is start


def test_the_validation_split_is_carved_from_training_data_in_every_language() -> None:
    examples = {
        BANKING77: datasets.banking77("train"),
        OWN: datasets.own_examples(),
        "bitext": datasets.bitext_split()[0],
    }
    fitting, validation = validation_split(examples)
    assert set(validation) == {BANKING77, OWN}
    assert fitting["bitext"] == examples["bitext"]
    for source in (BANKING77, OWN):
        assert len(fitting[source]) + len(validation[source]) == len(examples[source])
        assert not {e.text for e in validation[source]} & {e.text for e in fitting[source]}
    languages = {example.language for example in examples[OWN]}
    assert {example.language for example in validation[OWN]} == languages


def test_training_twice_gives_the_same_model(tmp_path: Path) -> None:
    examples = {OWN: datasets.own_examples()}
    config = TrainingConfig(char_min_df=1)
    first = train(tmp_path / "first.npz", config, examples, social=[])
    second = train(tmp_path / "second.npz", config, examples, social=[])
    assert first.version == second.version
    with np.load(first.artifact) as one, np.load(second.artifact) as other:
        arrays = [name for name in one.files if name != "header"]
        assert arrays
        for name in arrays:
            assert np.array_equal(one[name], other[name]), name
