"""Cleaning: blank frames, exact and near duplicates, and the checks that guard the tables.

Per batch: :func:`blank_table` (the ``image_quality`` partition) and :func:`batch_edges` (the
``duplicate_edges`` partition, found against every stored image). Over the whole set, cheaply:
:func:`resolve_groups` (``duplicate_groups``). :func:`assess` cleans everything as one batch.
"""

from hotdog_dagster.core.clean.blank import BLANK_CODES, QUALITY_SCHEMA, blank_table
from hotdog_dagster.core.clean.edges import EDGES_SCHEMA, EdgeResult, batch_edges
from hotdog_dagster.core.clean.groups import DUP_CODES, GROUPS_SCHEMA, resolve_groups
from hotdog_dagster.core.clean.rebuild import Assessment, assess
from hotdog_dagster.core.clean.report import batch_sample_paths, sample_paths, summarize

__all__ = [
    "BLANK_CODES",
    "DUP_CODES",
    "EDGES_SCHEMA",
    "GROUPS_SCHEMA",
    "QUALITY_SCHEMA",
    "Assessment",
    "EdgeResult",
    "assess",
    "batch_edges",
    "blank_table",
    "resolve_groups",
    "batch_sample_paths",
    "sample_paths",
    "summarize",
]
