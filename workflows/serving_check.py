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

from hera.workflows import CronWorkflow, WorkflowTemplate

from steps import serving_state

from . import metrics
from .common import step_cron_workflow, step_workflow_template
from .settings import Settings
from .specs import Resources, step_spec

# A few REST calls per model: as small as promote.
RESOURCES = Resources("100m", "256Mi", "1", "1Gi")
# The checks serve every pipeline: their metrics' pipeline label says so.
ANY_PIPELINE = "all"
SPEC = step_spec(
    serving_state.CHECK,
    name=serving_state.CHECK.template_name,
    title=serving_state.CHECK.title,
    description=serving_state.CHECK.description,
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
        title="Serving against the registry, on a schedule",
        schedule=settings.serving_check_schedule,
        suspend=settings.serving_check_suspend,
        settings=settings,
    )
