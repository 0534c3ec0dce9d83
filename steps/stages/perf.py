"""The closing every perf-test shares: one bounded locust load against a V2-protocol server
(:mod:`steps.decisions.v2load`), the challenger's slot side by side with the champion's, its figures
and pictures logged, the challenger/champion ratios of the p95 latency and the throughput
(steps/decisions/paired.py), the five gates judged, and the output alias written.

A pipeline's perf-test derives its config from :class:`PerfTestConfig` (the gates' thresholds),
adds ``users`` and ``duration`` (:class:`PerfLimits`), builds each slot's request, and calls
:func:`load_and_judge` inside its stage run, then :func:`advance`. Core side: it never
imports a pipeline; numpy, matplotlib and mlflow are imported inside the functions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..base.errors import MlcpError
from ..decisions import gates, paired
from ..spec.contract import BENCHMARKED, EVALUATED
from ..spec.declare import Config, alias_option, option
from . import runner

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
KEYS = ("p50_ms", "p95_ms", "p99_ms", "rps", "error_rate", "requests")


@dataclass(kw_only=True)
class PerfTestConfig(Config):
    """What every perf-test takes, declared once: the aliases it reads and writes, the
    champion's, and the thresholds of the five gates. A pipeline's config derives from this
    and adds its load (``users``, ``duration``) and what its requests hold."""

    input_alias: str = alias_option(EVALUATED, reads=True)
    output_alias: str = alias_option(BENCHMARKED, reads=False)
    champion_alias: str = paired.champion_option()
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


class PerfLimits(Protocol):
    """What :func:`load_and_judge` reads of a perf-test's config."""

    model_name: str
    output_alias: str
    users: int
    duration: float
    max_p95_ms: float
    min_rps: float
    max_error_rate: float
    max_p95_ratio: float
    min_rps_ratio: float


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


def spread(values: list[float], most: int = MAX_LATENCY_SAMPLES) -> list[float]:
    """At most ``most`` of ``values``, evenly spread over them (they are in time order)."""
    if len(values) <= most:
        return values
    step = len(values) / most
    return [values[int(i * step)] for i in range(most)]


def comparisons(
    stats: dict, cfg: PerfLimits, version: str, champion
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


def run_load(
    url: str, bodies: dict[str, tuple[str, dict]], users: int, duration: float, tmp: Path
) -> dict:
    """One locust run (its own process) against ``url``: each label's (path, JSON body) gets
    ``users`` users; the statistics :mod:`steps.decisions.v2load` writes."""
    out_path = Path(tmp) / "stats.json"
    command = [sys.executable, "-m", "steps.decisions.v2load", "--url", url]
    for label, (path, body) in bodies.items():
        body_path = Path(tmp) / f"{label}.json"
        body_path.write_text(json.dumps(body))
        command += ["--target", label, path, str(body_path)]
    command += ["--users", str(users), "--duration", str(duration), "--out", str(out_path)]
    proc = subprocess.run(command, timeout=duration + 120)
    if proc.returncode != 0 or not out_path.exists():
        raise MlcpError(f"the load generator failed (exit {proc.returncode})")
    return json.loads(out_path.read_text())


def load_and_judge(
    report, cfg: PerfLimits, *, url: str, bodies: dict, version: str, champion, tmp: Path
) -> tuple[dict, Any, Any]:
    """Inside the stage's run: load ``bodies`` (the challenger's, and the champion's when
    there is one), log the figures, the raw statistics and the latency picture, compare with
    the champion, and judge the five gates (GateFailed on a failure). Returns the metrics and
    both comparisons (or the reason there is no champion, twice)."""
    import mlflow

    stats = run_load(url, bodies, cfg.users, cfg.duration, tmp)
    found = stats["targets"]
    metrics = {k: float(found[CHALLENGER][k]) for k in KEYS}
    if CHAMPION in found:
        metrics.update({f"champion_{k}": float(found[CHAMPION][k]) for k in KEYS})
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
    evidence = {"requests": found[CHALLENGER]["requests"], "errors": found[CHALLENGER]["errors"]}
    checks = [
        (gates.Gate(P95_LATENCY, "p95_ms", "<=", cfg.max_p95_ms), metrics["p95_ms"]),
        (gates.Gate(THROUGHPUT, "rps", ">=", cfg.min_rps), metrics["rps"]),
        (gates.Gate(ERROR_RATE, "error_rate", "<=", cfg.max_error_rate), metrics["error_rate"]),
        gates.champion_check(
            gates.Gate(
                P95_VS_CHAMPION, "p95_ratio_ci_low", "<=", cfg.max_p95_ratio, against_champion=True
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
    return metrics, p95, rps


def closing(cfg: PerfLimits, version: str, champion, measured) -> tuple[str, dict]:
    """The output alias's move reason (the figures and the ratios) and the stage's result."""
    metrics, p95, rps = measured
    compared = isinstance(p95, paired.Comparison) and isinstance(rps, paired.Comparison)
    vs = (
        f"; p95 x{p95.estimate:.2f} [{p95.ci_low:.2f}, {p95.ci_high:.2f}] and req/s "
        f"x{rps.estimate:.2f} [{rps.ci_low:.2f}, {rps.ci_high:.2f}] of "
        f"{champion.alias} v{champion.version}"
        if compared
        else f"; {champion.missing}, only the absolute gates applied"
    )
    result = {"version": version, **metrics}
    if compared:
        result.update(
            champion_version=champion.version,
            p95_ratio=p95.estimate,
            p95_ratio_ci=[p95.ci_low, p95.ci_high],
            rps_ratio=rps.estimate,
            rps_ratio_ci=[rps.ci_low, rps.ci_high],
        )
    return f"p95 {metrics['p95_ms']:.0f} ms at {metrics['rps']:.1f} req/s{vs}", result


def advance(report, cfg: PerfLimits, client, version: str, champion, measured) -> dict:
    """Point the output alias at the version (its reason: the figures and the ratios) and
    return the stage's result."""
    reason, result = closing(cfg, version, champion, measured)
    report.advance(cfg.model_name, cfg.output_alias, version, reason=reason, client=client)
    return result


class PerfTest(runner.Evaluator):
    """A perf-test for the runner (:func:`steps.stages.runner.evaluate`): a pipeline supplies its
    ``report``, ``data``, ``connect`` and ``slots`` (as its evaluate does), the ``url`` of the
    V2 server to load and ``bodies``: each slot's request, by :data:`CHALLENGER` and
    :data:`CHAMPION` (the champion's only when ``t.champion_slot`` is set)."""

    context = None  # the test rows are read, not recorded: evaluate recorded them
    digest_in_name = False

    def url(self, t: runner.Target) -> str:
        return t.server.url

    def bodies(self, t: runner.Target) -> dict[str, dict]:
        raise NotImplementedError

    def prepare(self, t: runner.Target) -> None:
        slots = {CHALLENGER: t.slot, CHAMPION: t.champion_slot}
        t.extra["targets"] = {
            label: (f"/v2/models/{slots[label]}/infer", body)
            for label, body in self.bodies(t).items()
        }

    def params(self, t: runner.Target) -> dict:
        found = {
            k: v for k, v in vars(t.cfg).items() if k != "model_name" and not k.endswith("_url")
        }
        found.update(champion_version=t.champion.version or "none", slots=len(t.extra["targets"]))
        return found

    def measure(self, t: runner.Target) -> runner.Measured:
        import tempfile

        against = f" and {t.champion_slot} v{t.champion.version}" if t.champion_slot else ""
        self.report(
            f"{t.cfg.users} users per slot for {t.cfg.duration:g} s against {t.slot} "
            f"v{t.version}{against}"
        )
        with tempfile.TemporaryDirectory() as tmp:
            measured = load_and_judge(
                self.report,
                t.cfg,
                url=self.url(t),
                bodies=t.extra["targets"],
                version=t.version,
                champion=t.champion,
                tmp=Path(tmp),
            )
        reason, result = closing(t.cfg, t.version, t.champion, measured)
        return runner.Measured(reason=reason, result=result)
