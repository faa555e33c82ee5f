"""Zero-shot label scores: every image against a label set in one matrix product.

The seed scored each image by one search per image against a labels index (93k HTTP round trips
for 93k images). Here the label texts are encoded once, averaged over prompt templates as CLIP
does, and the whole (images x labels) cosine matrix is one ``vectors @ labels.T``. Probabilities
are the softmax of cosine times the model's logit scale, the same calibration CLIP's own zero-shot
classifier uses. Changing the label set re-scores from stored vectors without re-embedding.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.io.vectors import column_matrix

#: Columns of the images table a label slug may not shadow, since search filters on both.
RESERVED = frozenset(
    {
        "id",
        "partition",
        "fingerprint",
        "model",
        "source",
        "path",
        "label",
        "color",
        "caption",
        "keep",
        "score",
        "top_label",
        "top_probability",
    }
)


class LabelSetError(ValueError):
    """A label set that cannot be scored; raised before any work is done."""


def slug(label: str) -> str:
    """The column name of a label: lower-case words joined by underscores (``"a face"`` -> ``a_face``)."""
    s = re.sub(r"[^0-9a-z]+", "_", label.strip().lower()).strip("_")
    if s and s[0].isdigit():
        s = f"l_{s}"
    return s


@dataclass(frozen=True)
class LabelSet:
    labels: tuple[str, ...]
    templates: tuple[str, ...] = ("{}",)

    @property
    def slugs(self) -> tuple[str, ...]:
        return tuple(slug(lb) for lb in self.labels)

    @classmethod
    def build(cls, labels: Sequence[str], templates: Sequence[str] | None = None) -> LabelSet:
        """Validate a label set: non-empty, no duplicates, no two labels sharing a column name."""
        labels = tuple(labels)
        if not labels:
            raise LabelSetError("the label set is empty: give at least one label, e.g. 'one hot dog'")
        seen: dict[str, str] = {}
        for label in labels:
            if not isinstance(label, str) or not label.strip():
                raise LabelSetError(f"label {label!r} is empty: every label needs some text")
            s = slug(label)
            if not s:
                raise LabelSetError(f"label {label!r} has no letters or digits to name its column")
            if s in RESERVED:
                raise LabelSetError(f"label {label!r} would be column {s!r}, which the images table already uses")
            if s in seen:
                what = "is listed twice" if seen[s] == label else f"and {seen[s]!r} would both be column {s!r}"
                raise LabelSetError(f"label {label!r} {what}; labels must have distinct column names")
            seen[s] = label
        for s in seen:
            if s.startswith("p_") and s[2:] in seen:
                raise LabelSetError(
                    f"labels {seen[s]!r} and {seen[s[2:]]!r} clash: the probability column of {seen[s[2:]]!r} is "
                    f"named {s!r} too; reword one of them"
                )
        templates = tuple(templates or ("{}",))
        for t in templates:
            if t.count("{}") != 1:
                raise LabelSetError(f"prompt template {t!r} must contain '{{}}' exactly once, where the label goes")
        return cls(labels=labels, templates=templates)


def label_vectors(encode_texts: Callable[[list[str]], np.ndarray], label_set: LabelSet) -> np.ndarray:
    """One unit vector per label: the mean of its templated prompts' vectors, renormalised (CLIP's ensembling)."""
    prompts = [t.format(lb) for lb in label_set.labels for t in label_set.templates]
    vecs = np.asarray(encode_texts(prompts), dtype=np.float32).reshape(
        len(label_set.labels), len(label_set.templates), -1
    )
    mean = vecs.mean(axis=1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)


def score(vectors: np.ndarray, labels: np.ndarray, logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Cosine ``(N, L)`` and softmax probabilities ``(N, L)`` for unit image and label vectors."""
    cos = vectors.astype(np.float32, copy=False) @ labels.T
    logits = cos * np.float32(logit_scale)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return cos, p


def scores_table(ids: Sequence[str], label_set: LabelSet, cos: np.ndarray, prob: np.ndarray) -> pa.Table:
    """``id``, one cosine column per label slug, ``p_<slug>`` probabilities, and the top label."""
    cols: dict[str, pa.Array] = {"id": pa.array(list(ids), pa.string())}
    for j, s in enumerate(label_set.slugs):
        cols[s] = pa.array(cos[:, j], pa.float32())
    for j, s in enumerate(label_set.slugs):
        cols[f"p_{s}"] = pa.array(prob[:, j], pa.float32())
    top = prob.argmax(axis=1) if len(ids) else np.zeros(0, dtype=np.int64)
    cols["top_label"] = pa.array(label_set.labels, pa.string()).take(pa.array(top))
    cols["top_probability"] = pa.array(prob[np.arange(len(top)), top], pa.float32())
    return pa.table(cols)


def fingerprint(label_set: LabelSet) -> str:
    """A short hash of the labels and templates: scores made with another set are stale."""
    text = json.dumps({"labels": list(label_set.labels), "templates": list(label_set.templates)})
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def label_set_table(label_set: LabelSet, partition: str, model: str) -> pa.Table:
    """The set one partition was scored with, so SQL and the staleness check know which slugs are valid."""
    n = len(label_set.labels)
    return pa.table(
        {
            "partition": pa.array([partition] * n, pa.string()),
            "slug": pa.array(label_set.slugs, pa.string()),
            "label": pa.array(label_set.labels, pa.string()),
            "position": pa.array(range(n), pa.int32()),
            "fingerprint": pa.array([fingerprint(label_set)] * n, pa.string()),
            "model": pa.array([model] * n, pa.string()),
        }
    )


@dataclass(frozen=True)
class ScoredSet:
    table: pa.Table
    label_set: pa.Table
    seconds: float


def score_partition(
    store: Store,
    partition: str,
    encode_texts: Callable[[list[str]], np.ndarray],
    logit_scale: float,
    label_set: LabelSet,
    model: str = "",
) -> ScoredSet:
    """Score one partition's images from their stored vectors (never re-embeds); the caller writes.

    Every embedded image is scored, flagged or not: cleaning is resolved over the whole set later,
    and a batch's scores must not depend on other batches. Views and dbt read only clean images.
    """
    embeddings = store.read_table("embeddings", partition, columns=["id", "vector"])
    if embeddings is None:
        raise FileNotFoundError(
            f"partition {partition!r} has no embeddings yet; materialise image_embeddings for it first"
        )
    t0 = time.perf_counter()
    labels = label_vectors(encode_texts, label_set)
    # A batch whose files were all unreadable has no vectors: its partition is an empty table, not an error.
    vectors = (
        column_matrix(embeddings.column("vector"))
        if embeddings.num_rows
        else np.zeros((0, labels.shape[1]), np.float32)
    )
    cos, prob = score(vectors, labels, logit_scale)
    table = scores_table(embeddings.column("id").to_pylist(), label_set, cos, prob)
    table = table.add_column(1, "partition", pa.array([partition] * table.num_rows, pa.string()))
    return ScoredSet(
        table=table, label_set=label_set_table(label_set, partition, model), seconds=time.perf_counter() - t0
    )
