"""``mlcp tabular perf-test``: reads ``evaluated``, load-tests MLServer's staged slot side by
side with the champion's live slot in one locust run (``mlcp.perf``), writes ``benchmarked``.

Gates (``mlcp.perf``): ``p95-latency``, ``throughput``, ``error-rate``, and against the
champion ``p95-vs-champion`` and ``throughput-vs-champion``. This module supplies the
requests; the slots are evaluate's, the rest ``mlcp.perf.PerfTest``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlcp import Reporter, Stage, option, perf

from . import PIPELINE
from . import data as tabdata
from .evaluate import first_replica, slots


@dataclass(kw_only=True)
class PerfConfig(perf.PerfTestConfig):
    users: int = option(2, help="concurrent simulated users per slot", min=1, max=32)
    duration: float = option(5.0, help="seconds of load", min=2, max=600)
    rows: int = option(8, help="rows per request", min=1, max=1000)


class PerfTest(perf.PerfTest):
    report = Reporter(PIPELINE, "perf-test")
    data = tabdata
    connect = staticmethod(first_replica)
    slots = staticmethod(slots)

    def run_name(self, t):
        return {"v": t.version, "u": t.cfg.users, "r": t.cfg.rows}

    def bodies(self, t):
        x, _ = t.data.part("test")
        body = tabdata.v2_request(t.data.features, x[: t.cfg.rows])
        both = {perf.CHALLENGER: body, perf.CHAMPION: body}
        return both if t.champion_slot else {perf.CHALLENGER: body}


STAGE = Stage(
    PIPELINE,
    "perf-test",
    "load-test the staged slot with locust, side by side with the champion",
    PerfConfig,
    PerfTest(),
    perf.GATES,
    title="Tabular: load-test MLServer's staged slot beside the champion (-> benchmarked)",
    description=(
        "One bounded locust load against MLServer's <model>-staged slot and the champion's "
        "<model>-live slot, interleaved; the p95-latency, throughput and error-rate gates and "
        "the p95-vs-champion and throughput-vs-champion gates decide output-alias (benchmarked)."
    ),
)
