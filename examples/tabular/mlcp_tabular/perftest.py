"""``mlcp tabular perf-test``: reads ``evaluated``, load-tests MLServer's staged slot side by
side with the champion's live slot in one locust run (``mlcp.perf``), writes ``benchmarked``.

Gates (``mlcp.perf``): ``p95-latency``, ``throughput``, ``error-rate``, and against the
champion ``p95-vs-champion`` and ``throughput-vs-champion``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlcp import (
    Reporter,
    Stage,
    data_source,
    option,
    perf,
    resolve_input,
    tracking,
)

from . import PIPELINE
from . import data as tabdata
from .evaluate import slots


@dataclass(kw_only=True)
class PerfConfig(perf.PerfTestConfig):
    users: int = option(2, help="concurrent simulated users per slot", min=1, max=32)
    duration: float = option(5.0, help="seconds of load", min=2, max=600)
    rows: int = option(8, help="rows per request", min=1, max=1000)


report = Reporter(PIPELINE, "perf-test")


def perf_test(cfg: PerfConfig) -> dict:
    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    replica, slot, champion, champion_slot = slots(
        client, cfg.model_name, version, cfg.champion_alias
    )
    _, table = tabdata.read(data_source(cfg.model_name, version, tags))
    x, _ = table.part("test")
    body = tabdata.v2_request(table.features, x[: cfg.rows])
    bodies = {perf.CHALLENGER: (f"/v2/models/{slot}/infer", body)}
    if champion_slot is not None:
        bodies[perf.CHAMPION] = (f"/v2/models/{champion_slot}/infer", body)
    name = tracking.run_name(cfg.model_name, {"v": version, "u": cfg.users, "r": cfg.rows})
    params = {k: v for k, v in vars(cfg).items() if k != "model_name"}
    params.update(champion_version=champion.version or "none", slots=len(bodies))
    with (
        report.stage_run(cfg.model_name, name, version=version, params=params),
        tempfile.TemporaryDirectory() as tmp,
    ):
        report(f"{cfg.users} users per slot for {cfg.duration:g} s against {slot} v{version}")
        measured = perf.load_and_judge(
            report,
            cfg,
            url=replica.url,
            bodies=bodies,
            version=version,
            champion=champion,
            tmp=Path(tmp),
        )
    return perf.advance(report, cfg, client, version, champion, measured)


STAGE = Stage(
    PIPELINE,
    "perf-test",
    "load-test the staged slot with locust, side by side with the champion",
    PerfConfig,
    perf_test,
    perf.GATES,
    title="Tabular: load-test MLServer's staged slot beside the champion (-> benchmarked)",
    description=(
        "One bounded locust load against MLServer's <model>-staged slot and the champion's "
        "<model>-live slot, interleaved; the p95-latency, throughput and error-rate gates and "
        "the p95-vs-champion and throughput-vs-champion gates decide output-alias (benchmarked)."
    ),
)
