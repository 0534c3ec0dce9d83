"""cv-perf-test: reads ``input-alias`` (default ``evaluated``) and writes ``output-alias``
(default ``benchmarked``), only when the p95-latency, throughput, error-rate, p95-vs-champion
and throughput-vs-champion gates pass.

One container step running ``mlcp cv perf-test``: one bounded locust load against Triton's
staged slot and the champion's live slot, interleaved.
"""

from __future__ import annotations

from steps.cv import perftest

from .common import stage_template

SPEC, template = stage_template(
    __name__, perftest.STAGE, ("500m", "512Mi", "2", "2Gi"), deadline=900
)
