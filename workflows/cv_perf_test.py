"""cv-perf-test: reads ``input-alias`` (default ``evaluated``) and writes ``output-alias``
(default ``benchmarked``), only when the p95-latency, throughput and error-rate gates pass.

One container step running ``mlcp cv perf-test``: a bounded locust load against Triton's
staged slot.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from .common import step_workflow_template
from .settings import Settings
from .specs import CV_PERF_TEST


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(CV_PERF_TEST)
