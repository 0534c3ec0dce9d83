"""serving-check: reads live and staged and writes no alias; serving-check-cron runs it on a
schedule.

For every model with a serving back end (or the one ``model-name`` names) it compares the
versions ``live`` and ``staged`` name with what every replica of the model's server serves,
records a run in ``<pipeline>/serving`` and fails (exit 3) on drift: a restarted replica that
lost its slot, a load made by hand. ``serving-check-cron`` runs it on the build setting
``MLCP_SERVING_CHECK_SCHEDULE`` (installed running unless ``MLCP_SERVING_CHECK_SUSPEND=true``):
a failed run in Argo is drift, which ``serving-sync`` (or ``mlcp serving sync``) repairs.
"""

from __future__ import annotations

from steps.registry import serving_state

from .common import check_workflows

SPEC, template, cron = check_workflows(
    serving_state.CHECK,
    title="Serving against the registry, on a schedule",
    setting="serving_check",
)
template.__module__ = cron.__module__ = __name__
