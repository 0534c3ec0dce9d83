"""llm-retrain: reads no alias and writes ``live`` (and ``previous``): a CronWorkflow that
submits the llm-pipeline WorkflowTemplate (``workflowTemplateRef``) on a schedule.

Schedule, time zone, model and whether it is installed suspended are build settings
(workflows/settings.py: ``MLCP_LLM_RETRAIN_SCHEDULE``, ``MLCP_RETRAIN_TIMEZONE``,
``MLCP_LLM_RETRAIN_MODEL``, ``MLCP_LLM_RETRAIN_SUSPEND``). ``concurrencyPolicy: Forbid``: a
run still going when the next is due makes that one skip. Switch it on with
``argo cron resume llm-retrain``.
"""

from __future__ import annotations

from hera.workflows import CronWorkflow

from .common import retrain_cron_workflow
from .llm_pipeline import SPEC as PIPELINE
from .settings import Settings

NAME = "llm-retrain"


def template(settings: Settings | None = None) -> CronWorkflow:
    settings = settings or Settings()
    return retrain_cron_workflow(
        NAME,
        PIPELINE,
        title="LLM: scheduled retraining (llm-pipeline)",
        description=(
            f"Runs llm-pipeline for {settings.llm_retrain_model} on "
            f"'{settings.llm_retrain_schedule}' ({settings.retrain_timezone}); a run still "
            f"going makes the next one skip."
        ),
        schedule=settings.llm_retrain_schedule,
        timezone=settings.retrain_timezone,
        suspend=settings.llm_retrain_suspend,
        model_name=settings.llm_retrain_model,
    )
