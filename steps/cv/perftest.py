"""``mlcp cv perf-test``: reads ``evaluated``, load-tests Triton's HTTP endpoint of the staged
slot, side by side with the champion's slot, in one headless locust run; writes
``benchmarked``.

The challenger's slot ``<model>-staged`` and the champion's ``<model>-live`` (the version
``--champion-alias``, ``live`` by default, names; the slot is checked to serve it) each get
``--users`` users of the same locust run, for the same seconds, sending the same test images
(each at its version's image size): their requests interleave on the same server, so both
are measured on the same machine at the same moments. Logged per slot: p50/p95/p99 latency,
requests per second, error rate, the raw statistics and a latency-distribution picture; and
the challenger/champion ratios of the p95 latency (per-request latencies, bootstrap) and of
the throughput (requests in the same one-second buckets, paired bootstrap) with their 95%
intervals (steps/paired.py). Gates: ``p95-latency`` (a maximum), ``throughput`` (a minimum),
``error-rate`` (a maximum), and, against the champion, ``p95-vs-champion`` (refused when the
interval's lower end is above ``--max-p95-ratio``) and ``throughput-vs-champion`` (refused
when its upper end is below ``--min-rps-ratio``): a challenger is refused when its interval
shows it slower than the tolerance allows. With no champion (the first version) the load
goes to the staged slot only, and only the absolute gates apply.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import gates, paired, tracking
from ..contract import BENCHMARKED, EVALUATED
from ..declare import Config, Stage, alias_option, option
from ..errors import MlcpError
from ..serving import triton
from ..stage import Reporter, data_source, resolve_input
from . import IMAGE_SIZE_TAG, PIPELINE
from . import data as cvdata
from .deploy import require_champion, require_staged

P95_LATENCY = "p95-latency"
THROUGHPUT = "throughput"
ERROR_RATE = "error-rate"
P95_VS_CHAMPION = "p95-vs-champion"
THROUGHPUT_VS_CHAMPION = "throughput-vs-champion"
GATES = (P95_LATENCY, THROUGHPUT, ERROR_RATE, P95_VS_CHAMPION, THROUGHPUT_VS_CHAMPION)
CHALLENGER, CHAMPION = "challenger", "champion"  # the load generator's labels of the slots
# Per-request latencies resampled per slot at most (evenly spread over the run): the BCa
# interval's jackknife costs n^2, and a fast server answers tens of thousands in a run.
MAX_LATENCY_SAMPLES = 3000


@dataclass(kw_only=True)
class PerfConfig(Config):
    input_alias: str = alias_option(EVALUATED, reads=True)
    output_alias: str = alias_option(BENCHMARKED, reads=False)
    champion_alias: str = paired.champion_option()
    users: int = option(
        4, help="concurrent simulated users per slot (the champion's gets as many)", min=1, max=32
    )
    duration: float = option(8.0, help="seconds of load", min=2, max=600)
    batch: int = option(1, help="images per request", min=1, max=64)
    max_p95_ms: float = option(500.0, help="gate p95-latency: the highest p95 in ms", above=0)
    min_rps: float = option(5.0, help="gate throughput: the lowest requests per second", min=0)
    max_error_rate: float = option(
        0.01, help="gate error-rate: the highest share of failed requests", min=0, max=1
    )
    # 1.5 and 0.67: a challenger may be half as slow again as the champion, measured side by
    # side, before it is refused; it is refused only when the whole interval says so, so an
    # equal version on a noisy shared machine is not, and one with 4x the compute is.
    max_p95_ratio: float = option(
        1.5,
        help="gate p95-vs-champion: the highest challenger/champion ratio of the p95 latency "
        "(refused when the 95% interval's lower end is above it)",
        above=0,
    )
    min_rps_ratio: float = option(
        0.67,
        help="gate throughput-vs-champion: the lowest challenger/champion ratio of the "
        "requests per second (refused when the 95% interval's upper end is below it)",
        min=0,
    )
    triton_url: str | None = triton.url_option()


report = Reporter(PIPELINE, "perf-test")


def latency_png(latencies: dict[str, list[float]], path: Path) -> None:
    """The distribution of the per-request latencies, one histogram per slot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = [v for found in latencies.values() for v in found] or [0.0]
    bins = np.linspace(min(values), max(values) + 1e-9, 41)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, found in latencies.items():
        ax.hist(found, bins=bins, alpha=0.6, label=label)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def request_body(images, image_size: int, batch: int) -> dict:
    """The JSON inference request of ``batch`` test images at ``image_size``."""
    x = cvdata.preprocess(images.images["test"][:batch], image_size)
    return {
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


def spread(values: list[float], most: int = MAX_LATENCY_SAMPLES) -> list[float]:
    """At most ``most`` of ``values``, evenly spread over them (they are in time order)."""
    if len(values) <= most:
        return values
    step = len(values) / most
    return [values[int(i * step)] for i in range(most)]


def comparisons(
    stats: dict, cfg: PerfConfig, version: str, champion
) -> tuple[paired.Comparison, paired.Comparison]:
    """The challenger/champion ratios of the p95 latency and of the throughput."""
    ours, theirs = stats["targets"][CHALLENGER], stats["targets"][CHAMPION]
    if len(ours["per_second"]) < 2:
        raise MlcpError(
            f"the load ran {len(ours['per_second'])} whole second(s): too short to compare "
            "throughput per second (give --duration 2 or more)"
        )
    common = {
        "challenger_version": version,
        "champion_version": champion.version,
        "champion_alias": champion.alias,
    }
    try:
        p95 = paired.ratio(
            spread(ours["latencies_ms"]),
            spread(theirs["latencies_ms"]),
            statistic="p95",
            margin=cfg.max_p95_ratio,
            **common,
        )
        rps = paired.ratio(
            ours["per_second"],
            theirs["per_second"],
            statistic="mean",
            paired=True,
            margin=cfg.min_rps_ratio,
            **common,
        )
    except ValueError as exc:  # e.g. a slot that answered nothing
        raise MlcpError(f"cannot compare v{version} with the champion: {exc}") from None
    return p95, rps


def perf_test(cfg: PerfConfig) -> dict:
    import mlflow

    server = triton.Triton(cfg.triton_url)
    server.require_live()
    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    slot = require_staged(server, cfg.model_name, version)
    champion, champion_slot = require_champion(
        server, client, cfg.model_name, cfg.champion_alias, version
    )
    _, images = cvdata.read(data_source(cfg.model_name, version, tags))
    bodies = {
        CHALLENGER: (slot, request_body(images, int(tags.get(IMAGE_SIZE_TAG, "32")), cfg.batch))
    }
    if champion.version is not None:
        champion_tags = client.get_model_version(cfg.model_name, champion.version).tags
        size = int(champion_tags.get(IMAGE_SIZE_TAG, "32"))
        bodies[CHAMPION] = (champion_slot, request_body(images, size, cfg.batch))
    name = tracking.run_name(cfg.model_name, {"v": version, "u": cfg.users, "b": cfg.batch})
    params = {k: v for k, v in vars(cfg).items() if k not in ("model_name", "triton_url")}
    params.update(champion_version=champion.version or "none", slots=len(bodies))
    with (
        report.stage_run(cfg.model_name, name, version=version, params=params),
        tempfile.TemporaryDirectory() as tmp,
    ):
        out_path = Path(tmp) / "stats.json"
        command = [sys.executable, "-m", "steps.cv.loadgen", "--url", server.url]
        for label, (target, body) in bodies.items():
            body_path = Path(tmp) / f"{label}.json"
            body_path.write_text(json.dumps(body))
            command += ["--target", label, f"/v2/models/{target}/infer", str(body_path)]
        command += ["--users", str(cfg.users), "--duration", str(cfg.duration)]
        against = f" and {champion_slot} v{champion.version}" if champion.version else ""
        report(
            f"{cfg.users} users per slot for {cfg.duration:g} s against {slot} v{version}{against}"
        )
        proc = subprocess.run([*command, "--out", str(out_path)], timeout=cfg.duration + 120)
        if proc.returncode != 0 or not out_path.exists():
            raise MlcpError(f"the load generator failed (exit {proc.returncode})")
        stats = json.loads(out_path.read_text())
        found = stats["targets"]
        keys = ("p50_ms", "p95_ms", "p99_ms", "rps", "error_rate", "requests")
        metrics = {k: float(found[CHALLENGER][k]) for k in keys}
        if CHAMPION in found:
            metrics.update({f"champion_{k}": float(found[CHAMPION][k]) for k in keys})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(stats, "perf/stats.json")
        png = Path(tmp) / "latency_distribution.png"
        latency_png({label: found[label]["latencies_ms"] for label in found}, png)
        mlflow.log_artifact(str(png), "perf")
        p95: paired.Comparison | str = champion.missing or ""
        rps: paired.Comparison | str = p95
        if champion.version is not None:
            p95, rps = comparisons(stats, cfg, version, champion)
            for what, compared in (("p95_ratio", p95), ("rps_ratio", rps)):
                mlflow.log_metrics(
                    {
                        what: compared.estimate,
                        f"{what}_ci_low": compared.ci_low,
                        f"{what}_ci_high": compared.ci_high,
                    }
                )
                report(compared.line())
        evidence = {
            "requests": found[CHALLENGER]["requests"],
            "errors": found[CHALLENGER]["errors"],
        }
        checks = [
            (gates.Gate(P95_LATENCY, "p95_ms", "<=", cfg.max_p95_ms), metrics["p95_ms"]),
            (gates.Gate(THROUGHPUT, "rps", ">=", cfg.min_rps), metrics["rps"]),
            (
                gates.Gate(ERROR_RATE, "error_rate", "<=", cfg.max_error_rate),
                metrics["error_rate"],
            ),
            gates.champion_check(
                gates.Gate(
                    P95_VS_CHAMPION,
                    "p95_ratio_ci_low",
                    "<=",
                    cfg.max_p95_ratio,
                    against_champion=True,
                ),
                p95,
                "ci_low",
            ),
            gates.champion_check(
                gates.Gate(
                    THROUGHPUT_VS_CHAMPION,
                    "rps_ratio_ci_high",
                    ">=",
                    cfg.min_rps_ratio,
                    against_champion=True,
                ),
                rps,
                "ci_high",
            ),
        ]
        report.judge(checks, model=cfg.model_name, version=version, evidence=evidence)
    vs = (
        f"; p95 x{p95.estimate:.2f} [{p95.ci_low:.2f}, {p95.ci_high:.2f}] and req/s "
        f"x{rps.estimate:.2f} [{rps.ci_low:.2f}, {rps.ci_high:.2f}] of "
        f"{champion.alias} v{champion.version}"
        if isinstance(p95, paired.Comparison) and isinstance(rps, paired.Comparison)
        else f"; {champion.missing}, only the absolute gates applied"
    )
    report.advance(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=f"p95 {metrics['p95_ms']:.0f} ms at {metrics['rps']:.1f} req/s{vs}",
        client=client,
    )
    result = {"version": version, **metrics}
    if isinstance(p95, paired.Comparison) and isinstance(rps, paired.Comparison):
        result.update(
            champion_version=champion.version,
            p95_ratio=p95.estimate,
            p95_ratio_ci=[p95.ci_low, p95.ci_high],
            rps_ratio=rps.estimate,
            rps_ratio_ci=[rps.ci_low, rps.ci_high],
        )
    return result


STAGE = Stage(
    PIPELINE,
    "perf-test",
    "load-test the staged slot with locust, side by side with the champion",
    PerfConfig,
    perf_test,
    GATES,
    title="CV: load-test the staged slot beside the champion (evaluated -> benchmarked)",
    description=(
        "One bounded locust load against Triton's <model>-staged slot and the champion's "
        "<model>-live slot, interleaved; records p50/p95/p99, requests per second and the "
        "error rate of each, and the challenger/champion ratios of the p95 latency and the "
        "throughput with bootstrap 95% intervals; the p95-latency, throughput and "
        "error-rate gates and the p95-vs-champion and throughput-vs-champion gates decide "
        "output-alias (benchmarked)."
    ),
)
