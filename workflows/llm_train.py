"""llm-train: reads no alias (the versioned instruction set, ``data``, and the base model) and
writes ``output-alias`` (default ``candidate``), only when the max-eval-perplexity gate passes.

One container step running ``mlcp llm train``, as ``mlcp llm chain`` runs it locally: a LoRA
adapter with transformers + peft. GPUs are a build setting (``MLCP_LLM_TRAIN_GPUS``, default
0: workflows/settings.py).
"""

from __future__ import annotations

import dataclasses

from hera.workflows import WorkflowTemplate

from .common import step_workflow_template
from .settings import Settings
from .specs import LLM_TRAIN


def template(settings: Settings | None = None) -> WorkflowTemplate:
    settings = settings or Settings()
    resources = dataclasses.replace(LLM_TRAIN.resources, gpus=settings.llm_train_gpus)
    return step_workflow_template(dataclasses.replace(LLM_TRAIN, resources=resources))
