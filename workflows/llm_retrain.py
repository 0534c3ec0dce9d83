"""llm-retrain: reads no alias and writes ``live`` (and ``previous``): a CronWorkflow that
submits the llm-pipeline WorkflowTemplate (``workflowTemplateRef``) on a schedule.

The LLM twin of cv-retrain (see there), with its own build settings
``MLCP_LLM_RETRAIN_*`` and an hour later by default, so the two do not compete.
"""

from __future__ import annotations

from .common import retrain_template
from .llm_pipeline import SPEC as PIPELINE

template = retrain_template(__name__, PIPELINE, "llm", "LLM: scheduled retraining (llm-pipeline)")
