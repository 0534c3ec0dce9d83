"""llm-perf-test: reads ``input-alias`` (default ``evaluated``) and writes ``output-alias``
(default ``benchmarked``), only when the ttft-p95, e2e-p95, tokens-per-second and
success-rate gates pass.

One container step running ``mlcp llm perf-test``: a bounded locust load of streaming
completions against vLLM's staged slot.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.llm import perftest

from .common import step_workflow_template
from .settings import Settings
from .specs import STAGE_OUTPUTS, Resources, step_spec

SPEC = step_spec(
    perftest.STAGE,
    name="llm-perf-test",
    title="LLM: load-test the staged slot (evaluated -> benchmarked)",
    description=(
        "A bounded locust load of streaming completions against vLLM's <model>-staged slot; "
        "records time to first token, end-to-end latency, tokens per second and the success "
        "rate; the ttft-p95, e2e-p95, tokens-per-second (also against live) and success-rate "
        "gates decide output-alias (benchmarked)."
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources("500m", "512Mi", "2", "2Gi"),
    active_deadline_seconds=900,
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(SPEC)
