"""Automation and scale: the batch schedule, the whole set following the batches, and the executor.

Exposes ``ASSETS``, ``CHECKS`` and ``SENSORS`` like a stage, plus the parts ``definitions.py`` builds from
the profile: ``schedules_for`` (the cron is a setting), ``follow_batches`` and ``executor_for``.
"""

from __future__ import annotations

import dagster as dg

from hotdog_dagster.core.settings import Profile
from hotdog_dagster.defs.automation.conditions import automation_sensor, whole_set_condition
from hotdog_dagster.defs.automation.conditions import follow_batches as _follow
from hotdog_dagster.defs.automation.executors import executor_for
from hotdog_dagster.defs.automation.schedules import build_batch_schedule
from hotdog_dagster.defs.shared import batches

ASSETS: list = []
CHECKS: list = []
SENSORS = [automation_sensor]


def follow_batches(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Every whole-set asset rebuilds once after each wave of batches (see ``conditions.py``)."""
    return _follow(assets, batches)


def schedules_for(profile: Profile, assets: list[dg.AssetsDefinition]) -> list[dg.ScheduleDefinition]:
    """The batch schedule over every per-batch asset of ``assets``."""
    keys = [k for a in assets if a.partitions_def == batches for k in a.keys]
    return [build_batch_schedule(keys, profile.scale, profile.generate)]


__all__ = ["ASSETS", "CHECKS", "SENSORS", "executor_for", "follow_batches", "schedules_for", "whole_set_condition"]
