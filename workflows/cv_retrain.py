"""cv-retrain: reads no alias and writes ``live`` (and ``previous``): a CronWorkflow that
submits the cv-pipeline WorkflowTemplate (``workflowTemplateRef``) on a schedule.

Schedule, time zone, model and whether it is installed suspended are build settings
(workflows/settings.py: ``MLCP_CV_RETRAIN_SCHEDULE``, ``MLCP_RETRAIN_TIMEZONE``,
``MLCP_CV_RETRAIN_MODEL``, ``MLCP_CV_RETRAIN_SUSPEND``). ``concurrencyPolicy: Forbid``: a
run still going when the next is due makes that one skip. Switch it on with
``argo cron resume cv-retrain``.
"""

from __future__ import annotations

from hera.workflows import CronWorkflow

from .common import retrain_cron_workflow
from .cv_pipeline import SPEC as PIPELINE
from .settings import Settings

NAME = "cv-retrain"


def template(settings: Settings | None = None) -> CronWorkflow:
    settings = settings or Settings()
    return retrain_cron_workflow(
        NAME,
        PIPELINE,
        title="CV: scheduled retraining (cv-pipeline)",
        description=(
            f"Runs cv-pipeline for {settings.cv_retrain_model} on '{settings.cv_retrain_schedule}'"
            f" ({settings.retrain_timezone}); a run still going makes the next one skip."
        ),
        schedule=settings.cv_retrain_schedule,
        timezone=settings.retrain_timezone,
        suspend=settings.cv_retrain_suspend,
        model_name=settings.cv_retrain_model,
    )
