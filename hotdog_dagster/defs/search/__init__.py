"""Search: the BM25 keyword index over captions and prompts that keyword and hybrid search read."""

from hotdog_dagster.defs.search.assets import keyword_index
from hotdog_dagster.defs.search.checks import keyword_index_matches_images

ASSETS = [keyword_index]
CHECKS = [keyword_index_matches_images]
SENSORS: list = []
