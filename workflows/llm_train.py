"""llm-train: reads no alias (the versioned instruction set, ``data``, and the base model) and
writes ``output-alias`` (default ``candidate``), only when the max-eval-perplexity gate passes.

One container step running ``mlcp llm train``, as ``mlcp llm chain`` runs it locally: a LoRA
adapter with transformers + peft. GPUs are a build setting (``MLCP_LLM_TRAIN_GPUS``, default
0: workflows/settings.py).
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.llm import train

from .common import step_workflow_template
from .settings import Settings
from .specs import STAGE_OUTPUTS, Resources, step_spec

SPEC = step_spec(
    train.STAGE,
    name="llm-train",
    title="LLM: train a LoRA adapter (writes candidate)",
    description=(
        "Trains a LoRA adapter (transformers + peft) on the base model with the versioned "
        "instruction set, registers the version, records the max-eval-perplexity gate and "
        "points output-alias (candidate) at it only on a pass."
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources("1", "4Gi", "4", "16Gi"),
    active_deadline_seconds=7200,
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    settings = settings or Settings()
    return step_workflow_template(SPEC, gpus=settings.llm_train_gpus)
