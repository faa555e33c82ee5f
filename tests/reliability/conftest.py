"""The reliability suite's shared reference: one clean ``hotdog run`` of a folder of sketches, traced.

Every crash and concurrency test compares its home with this one, table by table.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from faultkit import Reference, build_reference


@pytest.fixture(scope="session")
def fault_seed() -> int:
    """``HOTDOG_FAULT_SEED`` or a fresh one; printed so a failure can be replayed."""
    seed = int(os.environ.get("HOTDOG_FAULT_SEED") or random.SystemRandom().randrange(2**31))
    print(f"\nreliability: fault seed {seed} (replay with HOTDOG_FAULT_SEED={seed})")
    return seed


@pytest.fixture
def rng(fault_seed: int, request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator per test, from the printed seed and the test's name (tests stay independent)."""
    return np.random.default_rng([fault_seed, *request.node.name.encode()])


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    ref = build_reference(tmp_path_factory.mktemp("reliability"))
    print(f"reliability: clean reference run {ref.seconds:.0f} s, {len(ref.trace)} fault points")
    return ref
