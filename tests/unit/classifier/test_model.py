from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer

from services.classifier import datasets
from services.classifier.features import char_features, normalise, word_features
from services.classifier.model import DEFAULT_ARTIFACT, ModelError, load
from services.classifier.pipeline import Classifier
from services.classifier.training import COMPLAINT_THRESHOLDS, TrainingConfig, train
from shared.events import Category


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Where is my order? It should have arrived on Monday", Category.ORDER_SHIPPING),
        ("I forgot my password and can't log in", Category.ACCOUNT),
        (
            "Hi! I'm an influencer with 80k followers, would you like to collaborate?",
            Category.PARTNERSHIP,
        ),
        ("¿Dónde está mi pedido? Lo compré hace dos semanas", Category.ORDER_SHIPPING),
        ("Je voudrais être remboursé, j'ai été débité deux fois", Category.REFUND_BILLING),
        ("Die App stürzt ständig ab, wenn ich sie öffne", Category.TECHNICAL),
        ("Esqueci minha senha e não consigo entrar na conta", Category.ACCOUNT),
        (
            "Il peggior prodotto mai comprato, si è rotto subito. Sconsigliato",
            Category.NEGATIVE_REVIEW,
        ),
        ("Gana dinero desde casa, haz clic en el enlace de mi bio", Category.SPAM),
    ],
)
def test_clear_examples_in_each_language_get_their_category(
    classifier: Classifier, text: str, category: Category
) -> None:
    assert classifier.classify(text).category is category


def test_every_classification_carries_version_reasons_and_languages(classifier: Classifier) -> None:
    results = classifier.classify_batch([])
    assert results == []
    result = classifier.classify("Mi pedido llegó roto y nadie responde, es una vergüenza")
    assert result.language == "es"
    assert result.sentiment < 0
    assert result.complaint
    assert result.model_version.startswith(classifier.model.version)
    assert any(reason.startswith("top features:") for reason in result.reasons)


@pytest.mark.parametrize(
    "text",
    [
        "@SkyBridgeAir two hours on the runway, no water, no updates. never again",
        "@MobiCell_Help day 4 with no broadband and still no engineer booked",
        "@ParcelPostUK tracking says delivered, nothing here, neighbours have nothing either",
    ],
)
def test_social_media_complaints_are_flagged(classifier: Classifier, text: str) -> None:
    assert classifier.classify(text).complaint


@pytest.mark.parametrize(
    "text",
    [
        "@SkyBridgeAir thanks so much to the crew today, lovely flight",
        "@MobiCell_Help do your sim only plans work in canada?",
        "so cold this morning, could barely feel my fingers on the walk to work",
        "@jamie_k haha no way, see you at the pub later",
    ],
)
def test_questions_praise_and_chatter_are_not_complaints(classifier: Classifier, text: str) -> None:
    assert not classifier.classify(text).complaint


def test_training_chooses_the_complaint_threshold_on_own_tweets(tmp_path: Path) -> None:
    tweets = datasets.social_examples()[:300]
    report = train(
        tmp_path / "model.npz",
        TrainingConfig(char_min_df=1),
        {"own": datasets.own_examples()[:200]},
        social=tweets,
    )
    model = load(tmp_path / "model.npz")
    assert report.complaint.threshold in COMPLAINT_THRESHOLDS
    assert report.complaint.macro_f1 is not None
    assert model.complaint_threshold == report.complaint.threshold
    assert Category.OTHER in model.categories


def test_own_tweets_for_training_and_for_testing_share_no_text() -> None:
    training = {tweet.text.lower() for tweet in datasets.social_examples()}
    held_out = {
        tweet.text.lower() for tweet in datasets.social_examples(datasets.SOCIAL_EXAMPLES_TEST)
    }
    assert training.isdisjoint(held_out)
    domains = {tweet.domain for tweet in datasets.social_examples(datasets.SOCIAL_EXAMPLES_TEST)}
    assert datasets.RANDOM_TWEET_DOMAINS.issubset(domains)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("@Brand Sooooo slow!!!! #FAIL", " xhandlex  soo slow!! # fail"),
        ("Pleeease help???", "pleease help??"),
        ("order 1234, aaa", "order 0000, aa"),
        ("see https://t.co/x1 or mail a.b@c.com", "see  xurlx  or mail  xemailx "),
    ],
)
def test_normalisation_folds_social_media_spelling(text: str, normalised: str) -> None:
    assert normalise(text) == normalised


def test_missing_artefact_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="train-classifier"):
        load(tmp_path / "none.npz")


def test_shipped_artefact_is_small() -> None:
    assert DEFAULT_ARTIFACT.stat().st_size < 5_000_000


def test_trained_artefact_round_trips_and_features_match_scikit_learn(tmp_path: Path) -> None:
    examples = datasets.own_examples()
    output = tmp_path / "model.npz"
    report = train(output, TrainingConfig(char_min_df=1), {"own": examples}, social=[])
    model = load(output)
    assert model.version == report.version
    texts = [normalise(example.text) for example in examples[:50]]
    words = TfidfVectorizer(analyzer=word_features, sublinear_tf=True, dtype=np.float32)
    chars = TfidfVectorizer(analyzer=char_features, sublinear_tf=True, dtype=np.float32)
    all_texts = [normalise(example.text) for example in examples]
    words.fit(all_texts)
    chars.fit(all_texts)
    expected = hstack([words.transform(texts), chars.transform(texts)]).toarray()
    rows = model.featurizer.transform([example.text for example in examples[:50]])
    actual = np.zeros_like(expected)
    for position in range(len(texts)):
        indices, values = rows.row(position)
        actual[position, indices] = values
    assert np.allclose(actual, expected, atol=1e-5)
    predictions = model.predict([example.text for example in examples])
    correct = sum(p.category is e.category for p, e in zip(predictions, examples, strict=True))
    assert correct / len(examples) > 0.9


def test_corrections_become_examples_of_the_corrected_category() -> None:
    from services.classifier.training import correction_examples

    examples = correction_examples(
        [
            ("my prize never arrived", "order_shipping"),
            ("text without a category", None),
            (None, "complaint"),
            ("an unknown category", "weather"),
        ]
    )
    assert [(example.text, example.category.value) for example in examples] == [
        ("my prize never arrived", "order_shipping")
    ]
