"""``mlcp cv perf-test``: reads ``evaluated``, load-tests Triton's HTTP endpoint of the staged
slot with a headless locust run, writes ``benchmarked``.

Logged: p50/p95/p99 latency, requests per second, error rate, the raw statistics and a
latency-distribution picture. Gates: ``p95-latency`` (maximum, and no worse than the live
version's recorded decision by more than a margin), ``throughput`` (minimum, same), and
``error-rate`` (maximum).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import gates, tracking
from ..contract import BENCHMARKED, EVALUATED
from ..declare import Config, Stage, alias_option, option
from ..errors import MlcpError
from ..serving import triton
from ..stage import Reporter, data_source, resolve_input
from . import IMAGE_SIZE_TAG, PIPELINE
from . import data as cvdata
from .deploy import require_staged

P95_LATENCY = "p95-latency"
THROUGHPUT = "throughput"
ERROR_RATE = "error-rate"
GATES = (P95_LATENCY, THROUGHPUT, ERROR_RATE)


@dataclass(kw_only=True)
class PerfConfig(Config):
    input_alias: str = alias_option(EVALUATED, reads=True)
    output_alias: str = alias_option(BENCHMARKED, reads=False)
    users: int = option(4, help="concurrent simulated users", min=1, max=64)
    duration: float = option(8.0, help="seconds of load", min=1, max=600)
    batch: int = option(1, help="images per request", min=1, max=64)
    max_p95_ms: float = option(500.0, help="gate p95-latency: the highest p95 in ms", above=0)
    min_rps: float = option(5.0, help="gate throughput: the lowest requests per second", min=0)
    max_error_rate: float = option(
        0.01, help="gate error-rate: the highest share of failed requests", min=0, max=1
    )
    max_p95_regression_ms: float = option(
        100.0,
        help="gate p95-latency: the largest rise in ms allowed against the live version",
        min=0,
    )
    max_rps_regression: float = option(
        50.0,
        help="gate throughput: the largest drop in requests/s allowed against the live version",
        min=0,
    )
    triton_url: str | None = triton.url_option()


report = Reporter(PIPELINE, "perf-test")


def latency_png(response_times: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [float(k) for k in response_times]
    ws = list(response_times.values())
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(xs, bins=40, weights=ws)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def perf_test(cfg: PerfConfig) -> dict:
    import mlflow

    server = triton.Triton(cfg.triton_url)
    server.require_live()
    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    slot = require_staged(server, cfg.model_name, version)
    image_size = int(tags.get(IMAGE_SIZE_TAG, "32"))
    _, images = cvdata.read(data_source(cfg.model_name, version, tags))
    x = cvdata.preprocess(images.images["test"][: cfg.batch], image_size)
    body = {
        "inputs": [
            {
                "name": triton.INPUT_NAME,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.flatten().tolist(),
            }
        ],
        "outputs": [{"name": triton.OUTPUT_NAME}],
    }
    name = tracking.run_name(cfg.model_name, {"v": version, "u": cfg.users, "b": cfg.batch})
    params = {k: v for k, v in vars(cfg).items() if k not in ("model_name", "triton_url")}
    with (
        report.stage_run(cfg.model_name, name, version=version, params=params),
        tempfile.TemporaryDirectory() as tmp,
    ):
        body_path, out_path = Path(tmp) / "body.json", Path(tmp) / "stats.json"
        body_path.write_text(json.dumps(body))
        report(f"{cfg.users} users for {cfg.duration:g} s against {slot} v{version}")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "steps.cv.loadgen",
                "--url",
                server.url,
                "--path",
                f"/v2/models/{slot}/infer",
                "--body",
                str(body_path),
                "--users",
                str(cfg.users),
                "--duration",
                str(cfg.duration),
                "--out",
                str(out_path),
            ],
            timeout=cfg.duration + 120,
        )
        if proc.returncode != 0 or not out_path.exists():
            raise MlcpError(f"the load generator failed (exit {proc.returncode})")
        stats = json.loads(out_path.read_text())
        metrics = {k: float(stats[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "rps", "error_rate")}
        metrics["requests"] = float(stats["requests"])
        mlflow.log_metrics(metrics)
        mlflow.log_dict(stats, "perf/stats.json")
        png = Path(tmp) / "latency_distribution.png"
        latency_png(stats["response_times_ms"], png)
        mlflow.log_artifact(str(png), "perf")
        evidence = {"requests": stats["requests"], "errors": stats["errors"]}
        checks = [
            (
                gates.Gate(P95_LATENCY, "p95_ms", "<=", cfg.max_p95_ms, cfg.max_p95_regression_ms),
                metrics["p95_ms"],
            ),
            (
                gates.Gate(THROUGHPUT, "rps", ">=", cfg.min_rps, cfg.max_rps_regression),
                metrics["rps"],
            ),
            (
                gates.Gate(ERROR_RATE, "error_rate", "<=", cfg.max_error_rate),
                metrics["error_rate"],
            ),
        ]
        report.judge(checks, model=cfg.model_name, version=version, evidence=evidence)
    report.advance(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=f"p95 {metrics['p95_ms']:.0f} ms at {metrics['rps']:.1f} req/s",
        client=client,
    )
    return {"version": version, **metrics}


STAGE = Stage(
    PIPELINE,
    "perf-test",
    "load-test the staged slot with locust",
    PerfConfig,
    perf_test,
    GATES,
    title="CV: load-test the staged slot (evaluated -> benchmarked)",
    description=(
        "A bounded locust load against Triton's <model>-staged slot; records p50/p95/p99, "
        "requests per second and the error rate; the p95-latency, throughput and error-rate "
        "gates (also against live) decide output-alias (benchmarked)."
    ),
)
