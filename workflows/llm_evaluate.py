"""llm-evaluate: reads ``input-alias`` (default ``staged``) and writes ``output-alias``
(default ``evaluated``), only when the correct-rate, refusal-rate and gain-over-base gates pass.

One container step running ``mlcp llm evaluate``: the eval split through vLLM's staged slot
and the bare base, every answer graded by the judge (``reference`` or an OpenAI-compatible
endpoint), whose instructions are a versioned prompt.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from .common import step_workflow_template
from .settings import Settings
from .specs import LLM_EVALUATE


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(LLM_EVALUATE)
