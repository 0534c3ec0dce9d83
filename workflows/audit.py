"""audit: reads every alias and writes no alias; audit-cron runs it on a schedule.

It compares each alias of a model (every model a
pipeline registered, or the one ``model-name`` names) with its last recorded move, and what
every serving replica serves with the aliases, records a run in ``<pipeline>/audit`` and fails
(exit 3) when something is not explained: an alias moved outside ``mlcp``, a slot loaded by
hand. ``audit-cron`` runs it on the build setting ``MLCP_AUDIT_SCHEDULE`` (installed running
unless ``MLCP_AUDIT_SUSPEND=true``): its failure shows in Argo like any failed step.
"""

from __future__ import annotations

from hera.workflows import CronWorkflow, WorkflowTemplate

from steps import audit

from . import metrics
from .common import step_cron_workflow, step_workflow_template
from .serving_check import ANY_PIPELINE, RESOURCES
from .settings import Settings
from .specs import step_spec

SPEC = step_spec(
    audit.AUDIT,
    name=audit.AUDIT.template_name,
    title=audit.AUDIT.title,
    description=audit.AUDIT.description,
    outputs=(),
    resources=RESOURCES,
    active_deadline_seconds=600,
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(
        SPEC, settings=settings, step_metrics=metrics.step_metrics(ANY_PIPELINE, SPEC.name)
    )


def cron(settings: Settings | None = None) -> CronWorkflow:
    settings = settings or Settings()
    return step_cron_workflow(
        f"{SPEC.name}-cron",
        SPEC,
        title="Audit of aliases and serving, on a schedule",
        schedule=settings.audit_schedule,
        suspend=settings.audit_suspend,
        settings=settings,
    )
