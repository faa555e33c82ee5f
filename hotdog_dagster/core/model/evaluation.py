"""Measure an encoder against the sketch world's ground truth, on a held-out seed.

These are the figures the embedded default promises: zero-shot labels, text search, and image
search behave like a real CLIP on the world the model was trained on. The held-out set is simply
another seed of the same stream, so no image seen in training (seed 0) is scored here.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import SKETCH_MODEL
from hotdog_dagster.core.model.sketch import CLASS_PROMPTS, COLORS, SHAPE_PROMPTS, draw, shape_prompt

#: Held-out seed: anything but the training seed works; this one is fixed so figures are comparable.
EVAL_SEED = 20261121
TOP_K = 10
#: A colour+shape prompt is scored only when the held-out set has at least TOP_K matching images,
#: otherwise precision@10 would be capped below 1 by the set, not by the model.
MIN_RELEVANT = TOP_K
#: Scores of exact duplicates (pure black frames) tie with the query itself up to float rounding.
TIE_TOLERANCE = 1e-5

#: The quality bar the bundled model is held to (tests and the training script check these).
TARGETS: dict[str, float] = {
    "zero_shot_accuracy": 0.95,
    "precision_at_10": 0.9,
    "self_score": 0.999,
    "blue_over_red": 0.9,
}


@dataclass
class EvalReport:
    """Held-out figures for one encoder; ``failures()`` names each target it misses."""

    spec: str
    seed: int
    n: int
    classes: list[str]
    zero_shot_accuracy: float
    zero_shot_images: int
    confusion: list[list[int]]
    precision_at_10: dict[str, float]
    relevant_counts: dict[str, int]
    skipped_prompts: dict[str, int]
    self_min_score: float
    self_rank1_fraction: float
    blue_square_queries: int
    blue_over_red_fraction: float
    blue_minus_red_margin: float
    seconds: float
    targets: dict[str, float] = field(default_factory=lambda: dict(TARGETS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failures(self) -> list[str]:
        """The targets this model misses, one readable line each (empty when it meets all)."""
        t = self.targets
        out = []
        if self.zero_shot_accuracy < t["zero_shot_accuracy"]:
            out.append(f"zero-shot accuracy {self.zero_shot_accuracy:.3f} < {t['zero_shot_accuracy']}")
        out += [
            f"P@{TOP_K} {p!r} {v:.2f} < {t['precision_at_10']}"
            for p, v in self.precision_at_10.items()
            if v < t["precision_at_10"]
        ]
        if self.self_min_score < t["self_score"]:
            out.append(f"self-query score {self.self_min_score:.4f} < {t['self_score']}")
        if self.self_rank1_fraction < 1.0:
            out.append(f"self-query ranks first for only {self.self_rank1_fraction:.3f} of images")
        if self.blue_square_queries == 0:
            out.append("no blue squares with blue and red circles in the held-out set")
        elif self.blue_over_red_fraction < t["blue_over_red"] or self.blue_minus_red_margin <= 0:
            out.append(
                f"blue circle above red circle for {self.blue_over_red_fraction:.2f} of blue squares "
                f"(margin {self.blue_minus_red_margin:+.3f})"
            )
        return out

    def format(self) -> str:
        short = [CLASS_PROMPTS[c] for c in self.classes]
        width = max(len(s) for s in short) + 2
        lines = [
            f"{self.spec} on held-out seed {self.seed}, n={self.n} ({self.seconds:.0f}s)",
            f"zero-shot accuracy {self.zero_shot_accuracy:.3f} over {self.zero_shot_images} images "
            f"(rows: truth, columns: predicted)",
            " " * width + "".join(f"{s[:12]:>14}" for s in short),
        ]
        lines += [
            f"{s:<{width}}" + "".join(f"{v:>14d}" for v in row) for s, row in zip(short, self.confusion, strict=True)
        ]
        lines.append(f"text->image precision@{TOP_K} (relevant images in the set):")
        lines += [f"  {p:<40} {v:.2f}  ({self.relevant_counts[p]})" for p, v in self.precision_at_10.items()]
        if self.skipped_prompts:
            skipped = ", ".join(f"{p!r} ({c})" for p, c in self.skipped_prompts.items())
            lines.append(f"  skipped, fewer than {MIN_RELEVANT} images: {skipped}")
        lines.append(
            f"image->image: self score min {self.self_min_score:.5f}, ranked first {self.self_rank1_fraction:.3f}; "
            f"blue square -> blue circle above red circle for {self.blue_over_red_fraction:.2f} of "
            f"{self.blue_square_queries} queries (mean margin {self.blue_minus_red_margin:+.3f})"
        )
        failures = self.failures()
        lines.append("targets: all met" if not failures else "targets MISSED: " + "; ".join(failures))
        return "\n".join(lines)


@dataclass(frozen=True)
class HeldOut:
    """The held-out images' truth, index-aligned with their vectors."""

    labels: np.ndarray  # (n,) class names
    colors: np.ndarray  # (n,) colour names, "" where the class has none


def evaluate_sketch_model(
    spec: str = SKETCH_MODEL, seed: int = EVAL_SEED, n: int = 1000, batch_size: int = 250, device: str = "cpu"
) -> EvalReport:
    """Draw ``n`` held-out sketches, embed them with ``spec`` and score every figure in one pass.

    CPU by default: the sketch model is small enough, and fp32 on CPU gives the same figures on
    every machine (a GPU would run it under autocast).
    """
    t0 = time.perf_counter()
    enc = ClipEncoder(spec, device=device)
    sketches = [draw(seed, i) for i in range(n)]
    truth = HeldOut(
        labels=np.array([s.label for s in sketches]),
        colors=np.array([s.color or "" for s in sketches]),
    )
    images = np.concatenate(
        [enc.encode_pil([s.image for s in sketches[i : i + batch_size]]) for i in range(0, n, batch_size)]
    )
    classes = list(CLASS_PROMPTS)
    accuracy, confusion, scored = zero_shot(enc, images, truth, classes)
    precision, counts, skipped = text_retrieval(enc, images, truth)
    self_min, rank1 = self_queries(images)
    queries, fraction, margin = colour_over_shape(images, truth)
    return EvalReport(
        spec=str(spec),
        seed=seed,
        n=n,
        classes=classes,
        zero_shot_accuracy=accuracy,
        zero_shot_images=scored,
        confusion=confusion,
        precision_at_10=precision,
        relevant_counts=counts,
        skipped_prompts=skipped,
        self_min_score=self_min,
        self_rank1_fraction=rank1,
        blue_square_queries=queries,
        blue_over_red_fraction=fraction,
        blue_minus_red_margin=margin,
        seconds=round(time.perf_counter() - t0, 2),
    )


def zero_shot(
    enc: ClipEncoder, images: np.ndarray, truth: HeldOut, classes: list[str]
) -> tuple[float, list[list[int]], int]:
    """Accuracy and confusion matrix of argmax over the class prompts, on images of those classes."""
    mask = np.isin(truth.labels, classes)
    texts = enc.encode_texts([CLASS_PROMPTS[c] for c in classes])
    predicted = (images[mask] @ texts.T).argmax(axis=1)
    actual = np.array([classes.index(label) for label in truth.labels[mask]], dtype=np.int64)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (actual, predicted), 1)
    scored = int(mask.sum())
    accuracy = float((predicted == actual).mean()) if scored else 0.0
    return accuracy, confusion.tolist(), scored


def retrieval_prompts(truth: HeldOut) -> dict[str, np.ndarray]:
    """Each prompt with the boolean mask of the held-out images it should retrieve."""
    prompts = {CLASS_PROMPTS[c]: truth.labels == c for c in CLASS_PROMPTS}
    for shape in SHAPE_PROMPTS:
        for color in COLORS:
            prompts[shape_prompt(shape, color)] = (truth.labels == shape) & (truth.colors == color)
    return prompts


def text_retrieval(
    enc: ClipEncoder, images: np.ndarray, truth: HeldOut
) -> tuple[dict[str, float], dict[str, int], dict[str, int]]:
    """Precision@10 of exact text->image search for every prompt with enough relevant images."""
    prompts = retrieval_prompts(truth)
    kept = {p: m for p, m in prompts.items() if m.sum() >= MIN_RELEVANT}
    skipped = {p: int(m.sum()) for p, m in prompts.items() if p not in kept}
    if not kept:
        return {}, {}, skipped
    scores = enc.encode_texts(list(kept)) @ images.T  # (prompts, images)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_K]
    relevant = np.stack(list(kept.values()))  # (prompts, images)
    hits = np.take_along_axis(relevant, top, axis=1).sum(axis=1)
    precision = {p: float(h) / TOP_K for p, h in zip(kept, hits, strict=True)}
    return precision, {p: int(m.sum()) for p, m in kept.items()}, skipped


def self_queries(images: np.ndarray) -> tuple[float, float]:
    """Each image as a query against all: its own score, and whether nothing outscores it.

    Exact duplicates (pure black frames) tie with the query, so "first" allows ties within
    ``TIE_TOLERANCE``; a different image strictly above the query itself would be a real failure.
    """
    scores = images @ images.T
    own = np.diag(scores)
    beaten = (scores > own[:, None] + TIE_TOLERANCE).sum(axis=1)
    return float(own.min()), float((beaten == 0).mean())


def colour_over_shape(images: np.ndarray, truth: HeldOut) -> tuple[int, float, float]:
    """For blue-square queries: is a blue circle nearer than a red one (colour shared, shape not)?

    Per query the mean score of the blue circles is compared with that of the red circles; the
    fraction of queries where blue wins and the mean margin are returned.
    """
    queries = images[(truth.labels == "square") & (truth.colors == "blue")]
    blue = images[(truth.labels == "circle") & (truth.colors == "blue")]
    red = images[(truth.labels == "circle") & (truth.colors == "red")]
    if len(queries) == 0 or len(blue) == 0 or len(red) == 0:
        return 0, 0.0, 0.0
    margin = (queries @ blue.T).mean(axis=1) - (queries @ red.T).mean(axis=1)
    return len(queries), float((margin > 0).mean()), float(margin.mean())
