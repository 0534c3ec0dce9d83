"""llm-pipeline: reads no alias (the instruction set) and writes ``live`` (and ``previous``),
through ``candidate`` -> ``staged`` -> ``evaluated`` -> ``benchmarked`` on the way.

The whole LLM chain as ``templateRef`` steps: llm-train -> llm-deploy -> llm-evaluate ->
llm-perf-test -> promote (benchmarked -> live, requiring every LLM gate; it reloads vLLM's
``<model>-live`` slot). The steps pass each other nothing but the model name and the alias
names; a stage whose gate says no fails its step, which fails the workflow, so nothing after
it runs. ``promotion=rollout`` ends it with llm-rollout instead of promote (an Argo ``when``
on each: the live traffic moves in steps at the router, ``rollout-steps``,
``rollout-step-duration``, ``rollout-approval``)::

    argo submit --from workflowtemplate/llm-pipeline -p model-name=tiny-llama-instruct
"""

from __future__ import annotations

from steps.llm.pipeline import LLM

from . import llm_deploy, llm_evaluate, llm_perf_test, llm_rollout, llm_train, promote
from .common import pipeline_template

SPEC, template = pipeline_template(
    __name__, LLM, (llm_train, llm_deploy, llm_evaluate, llm_perf_test), promote, llm_rollout
)
