"""Automation and scale: the batch schedule, the whole set following the batches, and the executor.

Exposes ``ASSETS``, ``CHECKS`` and ``SENSORS`` like a stage, plus the parts ``definitions.py`` builds from
the profile: ``schedules_for`` (the cron is a setting), ``follow_batches`` and ``executor_for``.
"""

from __future__ import annotations

import dagster as dg

from hotdog_dagster.core.settings import Profile
from hotdog_dagster.defs.automation.conditions import WHOLE_SET_CONDITION, automation_sensor, follow_batches
from hotdog_dagster.defs.automation.executors import executor_for
from hotdog_dagster.defs.automation.schedules import build_batch_schedule
from hotdog_dagster.defs.shared import batches

ASSETS: list = []
CHECKS: list = []
SENSORS = [automation_sensor]


def schedules_for(profile: Profile, assets: list[dg.AssetsDefinition]) -> list[dg.ScheduleDefinition]:
    """The batch schedule over every per-batch asset of ``assets``."""
    keys = [k for a in assets if a.partitions_def == batches for k in a.keys]
    return [build_batch_schedule(keys, profile.scale)]


__all__ = ["ASSETS", "CHECKS", "SENSORS", "WHOLE_SET_CONDITION", "executor_for", "follow_batches", "schedules_for"]
