"""cv-perf-test: reads ``input-alias`` (default ``evaluated``) and writes ``output-alias``
(default ``benchmarked``), only when the p95-latency, throughput and error-rate gates pass.

One container step running ``mlcp cv perf-test``: a bounded locust load against Triton's
staged slot.
"""

from __future__ import annotations

from steps.cv import perftest

from .common import stage_template

SPEC, template = stage_template(
    __name__, perftest.STAGE, ("500m", "512Mi", "2", "2Gi"), deadline=900
)
