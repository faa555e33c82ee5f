"""What the browser tests need beside Python: Debian's chromium and the playwright package.

One place decides, for the search page's test and the Dagster UI test alike: where chromium is, and
why a test cannot run. With ``CI=true`` a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "needs Debian's chromium (scripts/setup.sh installs it)" if CHROMIUM is None else ""
try:
    from playwright import sync_api
except ImportError:
    sync_api = None
    MISSING = MISSING or "needs playwright: pip install -e '.[dev]'"


def browser_required(what: str) -> pytest.MarkDecorator:
    """A skip mark naming what is missing; raises instead when ``CI=true`` (in CI it is a failure)."""
    if MISSING and os.environ.get("CI") == "true":
        raise RuntimeError(f"{what} with CI=true: {MISSING}")
    return pytest.mark.skipif(bool(MISSING), reason=MISSING or "browser present")
