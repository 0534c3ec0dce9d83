"""audit: reads every alias and writes no alias; audit-cron runs it on a schedule.

It compares each alias of a model (every model a pipeline registered, or the one
``model-name`` names) with its last recorded move, and what every serving replica serves with
the aliases, records a run in ``<pipeline>/audit`` and fails (exit 3) when something is not
explained: an alias moved outside ``mlcp``, a slot loaded by hand. ``audit-cron`` runs it on
the build setting ``MLCP_AUDIT_SCHEDULE`` (installed running unless
``MLCP_AUDIT_SUSPEND=true``): its failure shows in Argo like any failed step.
"""

from __future__ import annotations

from steps.registry import audit

from .common import check_workflows

SPEC, template, cron = check_workflows(
    audit.AUDIT, title="Audit of aliases and serving, on a schedule", setting="audit"
)
template.__module__ = cron.__module__ = __name__
