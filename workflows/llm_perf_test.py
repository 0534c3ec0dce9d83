"""llm-perf-test: reads ``input-alias`` (default ``evaluated``) and writes ``output-alias``
(default ``benchmarked``), only when the ttft-p95, e2e-p95, tokens-per-second and
success-rate gates pass.

One container step running ``mlcp llm perf-test``: a bounded locust load of streaming
completions against vLLM's staged slot.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from .common import step_workflow_template
from .settings import Settings
from .specs import LLM_PERF_TEST


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(LLM_PERF_TEST)
