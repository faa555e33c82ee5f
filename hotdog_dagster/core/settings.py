"""Every setting of every stage, declared once: its type, default, bounds and meaning.

One pydantic model per stage. A YAML profile nests them (``model:``, ``ingest:``, ``clean:`` ...),
each Dagster resource *is* one of them (see ``hotdog_dagster/resources.py``), and run config is
validated by the same model, so a default or a bound lives in exactly one place. Fields are plain
types (``list`` rather than ``tuple``) because Dagster's config system builds its schema from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hotdog_dagster.core.io.decode import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS
from hotdog_dagster.core.model.names import SKETCH_MODEL

DEFAULT_LABELS: list[str] = ["one hot dog", "two hot dogs", "a hamburger", "a face"]
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_templates(value: list[str], what: str) -> list[str]:
    """Prompt templates hold exactly one ``{}`` (where ``what`` goes); none given means the text alone."""
    for t in value:
        if t.count("{}") != 1:
            raise ValueError(f"prompt template {t!r} must contain '{{}}' exactly once, where {what} goes")
    return value or ["{}"]


class Settings(BaseModel):
    """Unknown keys are errors, so a typo in a profile never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    def values(self) -> dict[str, Any]:
        """This stage's own fields (without anything a Dagster resource adds)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    def fingerprint(self) -> str:
        """A short hash of this stage's values: an asset's code version, so output made with other
        settings shows stale in the UI."""
        text = json.dumps(self.values(), sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


class ModelSettings(Settings):
    """The OpenCLIP model and how to run it."""

    name: str = Field(SKETCH_MODEL, description="open_clip/<arch>/<pretrained or checkpoint path>")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16/fp16 autocast on GPU"
    )
    batch_size: int = Field(64, ge=1, description="images per forward pass")
    num_workers: int = Field(1, ge=0, description="DataLoader decode workers")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {value!r}")
        return value


class IngestSettings(Settings):
    """Decoding limits and parallelism at ingest, and the size of drawn sketches."""

    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="larger images are rejected (decompression bombs)")
    max_file_bytes: int = Field(
        DEFAULT_MAX_FILE_BYTES, ge=1, description="larger files and zip members are rejected (too_large), not read"
    )
    workers: int = Field(4, ge=1, description="decode threads")
    sketch_size: int = Field(128, ge=16, le=4096, description="side of drawn sketches, pixels")


class IndexSettings(Settings):
    """Which FAISS index to build over the image vectors."""

    kind: Literal["auto", "flat", "ivf", "hnsw"] = Field("auto", description="auto: exact up to 2M vectors, IVF beyond")
    rebuild: bool = Field(False, description="build from scratch instead of adding and removing changed partitions")


class WatchSettings(Settings):
    """The folder the sensor watches (empty: the sensor skips) and how many files per partition."""

    folder: str = Field("", description="folder or .zip the new-files sensor watches")
    chunk: int = Field(1000, ge=1, description="files per partition the sensor adds")


class CleanSettings(Settings):
    """Thresholds of blank-frame and duplicate detection; measured on planted sets (docs/cleaning.md)."""

    dark_mean_max: float = Field(20.0, ge=0, le=255, description="dark frame: luminance mean at most this ...")
    dark_std_max: float = Field(8.0, ge=0, le=255, description="... and luminance spread at most this")
    flat_std_max: float = Field(
        0.0, ge=0, le=255, description="flat frame at any brightness: spread at most this (0: off)"
    )
    use_safety_checker: bool = Field(True, description="count the generator's safety verdict as blank")
    exact_duplicates: bool = Field(True, description="group identical bytes and identical pixels")
    near_duplicates: bool = Field(True, description="group near duplicates (re-encodes, resizes, slight crops)")
    near_threshold: float = Field(0.8, ge=-1, le=1, description="near duplicates: image cosine at least this ...")
    pixel_max_distance: float | None = Field(
        3.5, ge=0, description="... and aligned 32x32 thumbnail RMSE at most this (null: no pixel confirmation)"
    )
    max_crop: float = Field(0.1, ge=0, lt=0.5, description="largest crop per side the pixel check undoes")
    grid_radius: float | None = Field(
        3.0, ge=0, description="candidates: aligned 4x4 thumbnail grids this close (RMS levels; null: off) ..."
    )
    signature_radius: float | None = Field(
        3.5, ge=0, description="... or background/object colour signatures this close (RMS levels; null: off)"
    )
    max_candidates: int = Field(
        256, ge=1, description="candidates kept per image in a dense region (a warning says so)"
    )


class LabelSettings(Settings):
    """The zero-shot label set; changing it re-scores from stored vectors, without re-embedding."""

    labels: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS), description="columns named by slug")
    templates: list[str] = Field(default_factory=lambda: ["{}"], description="prompt templates averaged per label")

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return check_templates(value, "the label")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        from hotdog_dagster.core.labels.scoring import LabelSet

        LabelSet.build(value)  # raises LabelSetError (a ValueError) naming the bad label
        return value


class GenerateSettings(Settings):
    """Stable Diffusion generation (the ``diffusion`` source); every field that shapes the pixels is
    written into each batch manifest, so any partition, or any one image, regenerates identically."""

    model: str = Field(
        "CompVis/stable-diffusion-v1-4",
        description="diffusers model: a local folder, a Hugging Face id already in the local cache, or tiny-random",
    )
    prompts: list[str] = Field(
        default_factory=lambda: ["a photo of a hot dog"], description="used in turn, image by image"
    )
    prompt_file: str = Field("", description="text file, one prompt per line (# starts a comment); adds to prompts")
    templates: list[str] = Field(default_factory=lambda: ["{}"], description="every prompt goes into every template")
    negative_prompt: str = Field("", description="what to steer away from (needs guidance > 1)")
    steps: int = Field(50, ge=1, le=1000, description="denoising steps (2-8 for LCM or turbo models)")
    guidance: float = Field(7.5, ge=0, le=50, description="classifier-free guidance scale; 1 or less turns it off")
    scheduler: str = Field("default", description="sampler by name (default: the model's own); see schedulers.py")
    width: int = Field(512, ge=8, le=4096, multiple_of=8, description="pixels, a multiple of 8")
    height: int = Field(512, ge=8, le=4096, multiple_of=8, description="pixels, a multiple of 8")
    batch_size: int = Field(4, ge=1, description="images per denoising pass; lower it when the GPU runs out of memory")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 weights on a GPU, fp32 on the CPU"
    )
    compile: bool = Field(False, description="torch.compile the denoiser (GPU; the first batch pays for compiling)")
    safety_checker: bool = Field(True, description="run the model's safety checker; flagged images are blanked")
    seed: int = Field(0, ge=0, description="run seed: image seeds derive from (seed, partition, index)")
    fused_embedding: bool = Field(False, description="embed images from memory in the generating step (no re-read)")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        from hotdog_dagster.core.model.schedulers import check_scheduler

        return check_scheduler(value)  # SchedulerError (a ValueError) lists the valid names

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return check_templates(value, "the prompt")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must name a diffusers model folder or Hugging Face id")
        return value

    @model_validator(mode="after")
    def _some_prompt(self) -> GenerateSettings:
        if not self.prompt_file and not any(p.strip() for p in self.prompts):
            raise ValueError("give at least one prompt (prompts) or a prompt_file")
        return self


class ScaleSettings(Settings):
    """How runs execute and when the batch schedule ticks: a deployment's choice, so one machine and a
    cluster run the same code with another profile (``deploy/`` has the cluster's files)."""

    executor: Literal["in_process", "multiprocess", "celery", "k8s"] = Field(
        "in_process",
        description="in_process: a run's steps share its process (least start-up); multiprocess: one forked "
        "process per step; celery: steps go to Celery workers (GPU steps to the 'gpu' queue); k8s: one pod per step",
    )
    celery_broker: str = Field("redis://localhost:6379/0", description="Celery broker URL (executor: celery)")
    celery_backend: str = Field("redis://localhost:6379/1", description="Celery result backend URL (executor: celery)")
    schedule_cron: str = Field(
        "*/15 * * * *", description="when the batch schedule registers new batches and runs missing ones (cron, UTC)"
    )
    max_attempts: int = Field(3, ge=1, description="runs the schedule starts for one partition before it gives up")
    generate_per_tick: int = Field(
        0,
        ge=0,
        description="images of the next Stable Diffusion batch each schedule tick registers once the previous one is "
        "done (0: off); the batch continues the generate section's run seed",
    )
    generate_limit: int = Field(
        0, ge=0, description="stop registering generation batches at this many images (0: none)"
    )

    @field_validator("schedule_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"schedule_cron must have 5 fields (minute hour day month weekday), got {value!r}")
        return value


class WalkSettings(Settings):
    """One named walk through the images (one partition of the walk assets) and how it is drawn.

    The defaults are the sketch world's walk among faces, after the original's filter on the face
    score (in the sketch world only faces score 0.58 or more on ``a face``); the real profile's
    original walk starts at "a photo of a smiling face" with the same filter.
    """

    name: str = Field("faces", description="the walk's name: its partition key and media folder")
    start: str = Field("a smiling face", description="where it starts: a text, an image path or URL, or an image id")
    start_kind: Literal["text", "image", "id"] = Field("text", description="what start is")
    filter: str = Field(
        "a_face:[0.58 TO 0.99]", description="which images, in the search filter language ('' keeps every image)"
    )
    space: Literal["image", "description", "both"] = Field(
        "image", description="image vectors, caption vectors, or both (uncaptioned images sit out the last two)"
    )
    include_flagged: bool = Field(False, description="also walk images cleaning flagged (blank frames, duplicates)")
    min_start_score: float | None = Field(
        None, ge=-1, le=1, description="the start must match an image inside the filter at least this well"
    )
    max_length: int = Field(500, ge=2, description="frames at most: the first frames of the full tour")
    improve: bool = Field(True, description="shorten the greedy tour with 2-opt and Or-opt moves (same frames)")
    size: int = Field(256, ge=64, le=2048, multiple_of=16, description="side of the square animation frames, pixels")
    fps: float = Field(12.0, gt=0, le=60, description="animation frames per second")
    caption: bool = Field(True, description="draw each frame's top label and its probability")
    sheet_every: int = Field(0, ge=0, description="contact sheet of every n-th frame (0: at most 64 frames)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        from hotdog_dagster.core.io.store import check_partition_key

        return check_partition_key(value)  # a ValueError naming the allowed characters

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("start is empty: give a text such as 'a smiling face', an image path, or an image id")
        return value

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str) -> str:
        from hotdog_dagster.core.search.filters import parse

        if value.strip():
            parse(value)  # FilterError (a ValueError) with the position; columns are checked when it runs
        return value


class Profile(Settings):
    """A run profile: one section per stage. ``configs/embedded.yaml`` is the default spelled out."""

    model: ModelSettings = Field(default_factory=ModelSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    clean: CleanSettings = Field(default_factory=CleanSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    generate: GenerateSettings = Field(default_factory=GenerateSettings)
    walk: WalkSettings = Field(default_factory=WalkSettings)
    scale: ScaleSettings = Field(default_factory=ScaleSettings)

    def with_overrides(self, section: str, **overrides: Any) -> Profile:
        """A copy with some fields of one section replaced (None means: keep)."""
        current = getattr(self, section)
        update = {k: v for k, v in overrides.items() if v is not None}
        return self.model_copy(update={section: type(current)(**{**current.values(), **update})})


class SettingsError(ValueError):
    """A bad setting: names the key, the file and what is allowed."""


def describe_errors(exc: ValidationError, where: str) -> str:
    """One line per problem: ``clean.near_threshold in configs/x.yaml: must be <= 1 (got 2.0)``."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            section = _section_of(err["loc"])
            allowed = ", ".join(section.model_fields) if section else ""
            lines.append(f"unknown setting {key!r} in {where}; allowed here: {allowed}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"setting {key!r} in {where}: {msg} (got {err.get('input')!r})")
    return "; ".join(lines)


def _section_of(loc: tuple[Any, ...]) -> type[Settings] | None:
    model: type[Settings] = Profile
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, Settings)):
            return None
        model = annotation
    return model


def load_profile(path: str | os.PathLike[str] | None = None) -> Profile:
    """The profile in ``path`` (YAML), or ``$HOTDOG_CONFIG``, or the embedded default."""
    path = path or os.environ.get("HOTDOG_CONFIG") or None
    if not path:
        return Profile()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {p} must be a mapping of sections, got {type(data).__name__}")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc, str(p))) from None
