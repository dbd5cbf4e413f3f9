"""One shipped classifier for the whole directory (loading it takes about a second)."""

import pytest

from services.classifier.pipeline import Classifier


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    """The classifier with the shipped model and the packaged policy."""
    return Classifier()
