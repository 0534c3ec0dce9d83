"""cv-perf-test: reads ``input-alias`` (default ``evaluated``) and writes ``output-alias``
(default ``benchmarked``), only when the p95-latency, throughput and error-rate gates pass.

One container step running ``mlcp cv perf-test``: a bounded locust load against Triton's
staged slot.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.cv import perftest

from .common import step_workflow_template
from .settings import Settings
from .specs import STAGE_OUTPUTS, Resources, step_spec

SPEC = step_spec(
    perftest.STAGE,
    name="cv-perf-test",
    title="CV: load-test the staged slot (evaluated -> benchmarked)",
    description=(
        "A bounded locust load against Triton's <model>-staged slot; records p50/p95/p99, "
        "requests per second and the error rate; the p95-latency, throughput and error-rate "
        "gates (also against live) decide output-alias (benchmarked)."
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources("500m", "512Mi", "2", "2Gi"),
    active_deadline_seconds=900,
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(SPEC)
