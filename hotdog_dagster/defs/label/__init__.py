"""Label: zero-shot label scores per batch, from stored vectors."""

from hotdog_dagster.defs.label.assets import label_scores
from hotdog_dagster.defs.label.checks import scores_use_current_label_set

ASSETS = [label_scores]
CHECKS = [scores_use_current_label_set]
SENSORS: list = []
