"""llm-evaluate: reads ``input-alias`` (default ``staged``) and writes ``output-alias``
(default ``evaluated``), only when the correct-rate, refusal-rate and gain-over-base gates pass.

One container step running ``mlcp llm evaluate``: the eval split through vLLM's staged slot
and the bare base, every answer graded by the judge (``reference`` or an OpenAI-compatible
endpoint), whose instructions are a versioned prompt.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.llm import evaluate

from .common import step_workflow_template
from .settings import Settings
from .specs import STAGE_OUTPUTS, Resources, step_spec

SPEC = step_spec(
    evaluate.STAGE,
    name="llm-evaluate",
    title="LLM: judge the staged slot's answers (staged -> evaluated)",
    description=(
        "Answers the eval split through vLLM's <model>-staged slot and through the bare base; "
        "a judge (versioned prompt) grades every answer; the correct-rate (also against "
        "live), refusal-rate and gain-over-base gates decide output-alias (evaluated)."
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources("250m", "512Mi", "1", "2Gi"),
    active_deadline_seconds=1800,
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(SPEC)
