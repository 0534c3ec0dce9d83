"""llm-train: reads no alias (the versioned instruction set, ``data``, and the base model) and
writes ``output-alias`` (default ``candidate``), only when the max-eval-perplexity gate passes.

One container step running ``mlcp llm train``, as ``mlcp llm chain`` runs it locally: a LoRA
adapter with transformers + peft. GPUs are a build setting (``MLCP_LLM_TRAIN_GPUS``, default
0: workflows/settings.py).
"""

from __future__ import annotations

from steps.llm import train

from .common import stage_template

SPEC, template = stage_template(
    __name__,
    train.STAGE,
    ("1", "4Gi", "4", "16Gi"),
    deadline=7200,
    gpus="llm_train_gpus",
    training=True,
)
