"""Zero-shot scoring units: slugs, label-set validation, the matrix product, and re-scoring without re-embedding."""

from __future__ import annotations

import numpy as np
import pytest

from hotdog_dagster.core.labels.scoring import (
    LabelSet,
    LabelSetError,
    label_vectors,
    score,
    scores_table,
    slug,
)
from hotdog_dagster.core.settings import DEFAULT_LABELS


def test_slugs_of_the_seed_labels() -> None:
    assert [slug(lb) for lb in DEFAULT_LABELS] == ["one_hot_dog", "two_hot_dogs", "a_hamburger", "a_face"]
    assert slug("  A  Face! ") == "a_face" and slug("2 hot dogs") == "l_2_hot_dogs"


@pytest.mark.parametrize(
    ("labels", "templates", "message"),
    [
        ([], None, "the label set is empty"),
        (["a face", "a face"], None, "listed twice"),
        (["a face", "A FACE"], None, "would both be column 'a_face'"),
        (["x", "p x"], None, "clash"),
        (["!!!"], None, "no letters or digits"),
        (["  "], None, "is empty"),
        (["path"], None, "already uses"),
        (["a face"], ["a photo of"], "must contain '{}' exactly once"),
    ],
)
def test_bad_label_sets_are_refused(labels: list[str], templates: list[str] | None, message: str) -> None:
    with pytest.raises(LabelSetError, match=message.replace("(", r"\(")):
        LabelSet.build(labels, templates)


def test_score_is_cosine_and_softmax_at_the_logit_scale() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    lab = rng.standard_normal((3, 16)).astype(np.float32)
    lab /= np.linalg.norm(lab, axis=1, keepdims=True)
    cos, p = score(v, lab, logit_scale=50.0)
    assert np.allclose(cos, v @ lab.T, atol=1e-6)
    expected = np.exp(50 * cos) / np.exp(50 * cos).sum(axis=1, keepdims=True)
    assert np.allclose(p, expected, atol=1e-5) and np.allclose(p.sum(axis=1), 1, atol=1e-5)


def test_templates_are_averaged_per_label_then_renormalised() -> None:
    table = {"a cat": [1, 0, 0], "a photo of a cat": [0, 1, 0], "a dog": [0, 0, 1], "a photo of a dog": [0, 0, 1]}

    def encode(texts: list[str]) -> np.ndarray:
        return np.array([table[t] for t in texts], dtype=np.float32)

    ls = LabelSet.build(["a cat", "a dog"], ["{}", "a photo of {}"])
    vecs = label_vectors(encode, ls)
    assert np.allclose(vecs[0], np.array([1, 1, 0]) / np.sqrt(2)) and np.allclose(vecs[1], [0, 0, 1])


def test_scores_table_columns_and_top_label() -> None:
    ls = LabelSet.build(DEFAULT_LABELS)
    cos = np.array([[0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.1, 0.1]], dtype=np.float32)
    _, p = score(np.eye(2, 4, dtype=np.float32), np.eye(4, dtype=np.float32), 1.0)
    t = scores_table(["a", "b"], ls, cos, p)
    assert t.column_names[:5] == ["id", "one_hot_dog", "two_hot_dogs", "a_hamburger", "a_face"]
    assert "p_a_face" in t.column_names and t.column("top_label").to_pylist() == ["one hot dog", "two hot dogs"]
