"""llm-perf-test: reads ``input-alias`` (default ``evaluated``) and writes ``output-alias``
(default ``benchmarked``), only when the ttft-p95, e2e-p95, tokens-per-second and
success-rate gates pass.

One container step running ``mlcp llm perf-test``: a bounded locust load of streaming
completions against vLLM's staged slot.
"""

from __future__ import annotations

from steps.llm import perftest

from .common import stage_template

SPEC, template = stage_template(
    __name__, perftest.STAGE, ("500m", "512Mi", "2", "2Gi"), deadline=900
)
