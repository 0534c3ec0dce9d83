"""llm-retrain: reads no alias and writes ``live`` (and ``previous``): a CronWorkflow that
submits the llm-pipeline WorkflowTemplate (``workflowTemplateRef``) on a schedule.

Schedule, time zone, model and whether it is installed suspended are build settings
(workflows/settings.py: ``MLCP_LLM_RETRAIN_SCHEDULE``, ``MLCP_RETRAIN_TIMEZONE``,
``MLCP_LLM_RETRAIN_MODEL``, ``MLCP_LLM_RETRAIN_SUSPEND``). ``concurrencyPolicy: Forbid``: a
run still going when the next is due makes that one skip. Switch it on with
``argo cron resume llm-retrain``.
"""

from __future__ import annotations

from .common import retrain_template
from .llm_pipeline import SPEC as PIPELINE

NAME = "llm-retrain"
template = retrain_template(__name__, PIPELINE, "llm", "LLM: scheduled retraining (llm-pipeline)")
