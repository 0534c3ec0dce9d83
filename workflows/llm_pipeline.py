"""llm-pipeline: reads no alias (the instruction set) and writes ``live`` (and ``previous``),
through ``candidate`` -> ``staged`` -> ``evaluated`` -> ``benchmarked`` on the way.

The whole LLM chain as ``templateRef`` steps: llm-train -> llm-deploy -> llm-evaluate ->
llm-perf-test -> promote (benchmarked -> live, requiring every LLM gate; it reloads vLLM's
``<model>-live`` slot). The steps pass each other nothing but the model name and the alias
names; a stage whose gate says no fails its step, which fails the workflow, so nothing after
it runs::

    argo submit --from workflowtemplate/llm-pipeline -p model-name=tiny-llama-instruct
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from .common import pipeline_workflow_template
from .settings import Settings
from .specs import LLM_PIPELINE


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return pipeline_workflow_template(LLM_PIPELINE)
