"""llm-perf-test: reads ``input-alias`` (default ``evaluated``) and writes ``output-alias``
(default ``benchmarked``), only when the ttft-p95, e2e-p95, tokens-per-second, success-rate,
ttft-p95-vs-champion and tokens-per-second-vs-champion gates pass.

One container step running ``mlcp llm perf-test``: one bounded locust load of streaming
completions against vLLM's staged slot and the champion's live slot, interleaved.
"""

from __future__ import annotations

from steps.llm import perftest

from .common import stage_template

SPEC, template = stage_template(
    __name__, perftest.STAGE, ("500m", "512Mi", "2", "2Gi"), deadline=900
)
