"""cv-retrain: reads no alias and writes ``live`` (and ``previous``): a CronWorkflow that
submits the cv-pipeline WorkflowTemplate (``workflowTemplateRef``) on a schedule.

Schedule, time zone, model and whether it is installed suspended are build settings
(workflows/settings.py: ``MLCP_CV_RETRAIN_SCHEDULE``, ``MLCP_RETRAIN_TIMEZONE``,
``MLCP_CV_RETRAIN_MODEL``, ``MLCP_CV_RETRAIN_SUSPEND``). ``concurrencyPolicy: Forbid``: a
run still going when the next is due makes that one skip. Switch it on with
``argo cron resume cv-retrain``.
"""

from __future__ import annotations

from .common import retrain_template
from .cv_pipeline import SPEC as PIPELINE

template = retrain_template(__name__, PIPELINE, "cv", "CV: scheduled retraining (cv-pipeline)")
