"""``mlcp llm perf-test``: reads ``evaluated``, load-tests vLLM's staged slot and the champion's
slot side by side with streaming completions in one headless locust run, writes
``benchmarked``.

One locust run covers the challenger's ``<model>-staged`` slot and the champion's
``<model>-live`` slot (the version ``--champion-alias`` names; the slot is checked to serve
it): each slot gets ``--users`` users of its own, the same prompts in the same order, for
the same seconds, their requests interleaved on the same server. Logged per slot: time to
first token (p50/p95), end-to-end latency (p50/p95), tokens per second, success rate, the
raw statistics and a latency-distribution picture; and the challenger/champion ratios with
bootstrap 95% intervals (steps/decisions/paired.py): of the TTFT p95 (over the raw per-request
times) and of the throughput (over the tokens each slot received in the same seconds).

Gates: ``ttft-p95`` and ``e2e-p95`` (maxima), ``tokens-per-second`` and ``success-rate``
(minima) on the challenger's own figures; ``ttft-p95-vs-champion`` refuses a challenger
whose TTFT p95 ratio is above the tolerance even at the interval's lower end, and
``tokens-per-second-vs-champion`` one whose throughput ratio is below the tolerance even at
the interval's upper end (slower than allowed beyond the noise). With no champion (the first
version) the load runs on the staged slot alone and only the absolute gates apply.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import MlcpError
from ..decisions import gates, paired
from ..serving import vllm
from ..spec.contract import BENCHMARKED, EVALUATED
from ..spec.declare import Config, Stage, alias_option, option
from ..stages import runner
from ..stages.stage import Reporter
from . import PIPELINE, PROMPT_TEMPLATE_TAG
from . import data as llmdata
from .deploy import served_paths, unchanged
from .evaluate import slots

TTFT_P95 = "ttft-p95"
E2E_P95 = "e2e-p95"
TOKENS_PER_SECOND = "tokens-per-second"
SUCCESS_RATE = "success-rate"
TTFT_VS_CHAMPION = "ttft-p95-vs-champion"
TPS_VS_CHAMPION = "tokens-per-second-vs-champion"
GATES = (TTFT_P95, E2E_P95, TOKENS_PER_SECOND, SUCCESS_RATE, TTFT_VS_CHAMPION, TPS_VS_CHAMPION)
SUMMARY = ("ttft_p50_ms", "ttft_p95_ms", "e2e_p50_ms", "e2e_p95_ms", "tokens_per_s")


@dataclass(kw_only=True)
class PerfConfig(Config):
    input_alias: str = alias_option(EVALUATED, reads=True)
    output_alias: str = alias_option(BENCHMARKED, reads=False)
    champion_alias: str = paired.champion_option()
    users: int = option(
        2, help="concurrent simulated users per slot (the champion's gets as many)", min=1, max=32
    )
    duration: float = option(8.0, help="seconds of load", min=2, max=600)
    max_tokens: int = option(16, help="tokens per completion", min=1, max=256)
    max_ttft_p95_ms: float = option(
        1000.0, help="gate ttft-p95: the highest p95 time to first token in ms", min=0
    )
    max_e2e_p95_ms: float = option(
        3000.0, help="gate e2e-p95: the highest p95 end-to-end latency in ms", min=0
    )
    min_tokens_per_s: float = option(
        20.0, help="gate tokens-per-second: the lowest generated tokens per second", min=0
    )
    min_success_rate: float = option(
        0.99, help="gate success-rate: the lowest share of completed requests", min=0, max=1
    )
    # 1.5 and 0.67: a challenger may be half as slow again as the champion, measured side by
    # side, before it is refused; it is refused only when the whole interval says so, so an
    # equal adapter on a noisy shared machine is not.
    max_ttft_ratio: float = option(
        1.5,
        help="gate ttft-p95-vs-champion: the highest challenger/champion ratio of the TTFT "
        "p95 (refused when the 95% interval's lower end is above it)",
        above=0,
    )
    min_tps_ratio: float = option(
        0.67,
        help="gate tokens-per-second-vs-champion: the lowest challenger/champion ratio of "
        "the tokens per second (refused when the 95% interval's upper end is below it)",
        above=0,
    )
    vllm_url: str | None = vllm.url_option()


report = Reporter(PIPELINE, "perf-test")


def latency_png(stats: dict[str, dict], path: Path) -> None:
    """The TTFT and end-to-end distributions of each slot in one picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for slot, found in stats.items():
        ax.hist(found["ttft_ms"], bins=40, alpha=0.5, label=f"{slot}: time to first token")
        ax.hist(found["e2e_ms"], bins=40, alpha=0.5, label=f"{slot}: end to end")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ratios(
    challenger: dict, champion: dict, *, version: str, champion_at, cfg: PerfConfig
) -> dict[str, paired.Comparison | str]:
    """The challenger/champion ratios of the TTFT p95 (the raw per-request times, two
    independent samples) and of the throughput (the tokens each slot received in the same
    seconds, paired), each with its bootstrap interval. MlcpError when a side has too few
    samples to resample (nothing is judged on a load too short to compare)."""
    found: dict[str, paired.Comparison | str] = {}
    for gate, key, statistic, margin, is_paired in (
        (TTFT_VS_CHAMPION, "ttft_ms", "p95", cfg.max_ttft_ratio, False),
        (TPS_VS_CHAMPION, "tokens_per_second", "mean", cfg.min_tps_ratio, True),
    ):
        try:
            found[gate] = paired.ratio(
                challenger[key],
                champion[key],
                statistic=statistic,
                paired=is_paired,
                challenger_version=version,
                champion_version=champion_at.version,
                champion_alias=champion_at.alias,
                margin=margin,
            )
        except ValueError as exc:
            raise MlcpError(
                f"no {gate} comparison from this load ({exc}): load longer (--duration) or "
                "with more --users"
            ) from None
    return found


class PerfTest(runner.Evaluator):
    report = report
    data = llmdata
    context = None  # the prompts are read, not recorded: evaluate recorded them
    digest_in_name = False
    slots = staticmethod(slots)

    def connect(self, t):
        server = vllm.VLLM(t.cfg.vllm_url)
        server.require_live()
        return server

    def run_name(self, t):
        return {"v": t.version, "u": t.cfg.users, "t": t.cfg.max_tokens}

    def params(self, t):
        found = {k: v for k, v in vars(t.cfg).items() if k not in ("model_name", "vllm_url")}
        found.update(
            slot=t.slot,
            champion_version=t.champion.version or "none",
            champion_slot=t.champion_slot or "none",
        )
        return found

    def measure(self, t):
        import mlflow

        cfg, server, version, champion = t.cfg, t.server, t.version, t.champion
        slot, champion_slot = t.slot, t.champion_slot
        slots = [slot, champion_slot] if champion_slot else [slot]
        template = t.tags.get(PROMPT_TEMPLATE_TAG, llmdata.PROMPT_TEMPLATE)
        prompts = [llmdata.format_prompt(s.prompt, template) for s in t.data.samples["eval"]]
        measured = served_paths(server, slots)
        with tempfile.TemporaryDirectory() as tmp:
            prompts_path, out_path = Path(tmp) / "prompts.json", Path(tmp) / "stats.json"
            prompts_path.write_text(json.dumps(prompts))
            against = (
                f" and the champion {champion_slot} v{champion.version} (interleaved, "
                f"{cfg.users} users each)"
                if champion_slot
                else f" ({champion.missing})"
            )
            report(
                f"{cfg.users} users streaming {cfg.max_tokens}-token completions for "
                f"{cfg.duration:g} s against {slot} v{version}{against}"
            )
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "steps.llm.loadgen",
                    "--url",
                    server.url,
                    *(arg for served in slots for arg in ("--model", served)),
                    "--prompts",
                    str(prompts_path),
                    "--max-tokens",
                    str(cfg.max_tokens),
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
            unchanged(server, measured)
            stats = json.loads(out_path.read_text())
            mine = stats["slots"][slot]
            metrics = {k: float(mine[k]) for k in (*SUMMARY, "success_rate", "rps")}
            metrics["requests"] = float(mine["requests"])
            compared: dict[str, paired.Comparison | str] = {
                TTFT_VS_CHAMPION: champion.missing or "",
                TPS_VS_CHAMPION: champion.missing or "",
            }
            if champion_slot:
                theirs = stats["slots"][champion_slot]
                metrics.update({f"champion_{k}": float(theirs[k]) for k in SUMMARY})
                metrics["champion_success_rate"] = float(theirs["success_rate"])
                compared = ratios(mine, theirs, version=version, champion_at=champion, cfg=cfg)
                metrics["ttft_p95_ratio"] = compared[TTFT_VS_CHAMPION].estimate
                metrics["tokens_per_s_ratio"] = compared[TPS_VS_CHAMPION].estimate
            mlflow.log_metrics(metrics)
            mlflow.log_dict(stats, "perf/stats.json")
            if any(found["ttft_ms"] for found in stats["slots"].values()):
                png = Path(tmp) / "latency_distribution.png"
                latency_png(stats["slots"], png)
                mlflow.log_artifact(str(png), "perf")
            evidence = {
                "requests": {s: found["requests"] for s, found in stats["slots"].items()},
                "errors": {s: found["errors"] for s, found in stats["slots"].items()},
            }
            ttft_ratio, tps_ratio = compared[TTFT_VS_CHAMPION], compared[TPS_VS_CHAMPION]
            checks = [
                (
                    gates.Gate(TTFT_P95, "ttft_p95_ms", "<=", cfg.max_ttft_p95_ms),
                    metrics["ttft_p95_ms"],
                ),
                (
                    gates.Gate(E2E_P95, "e2e_p95_ms", "<=", cfg.max_e2e_p95_ms),
                    metrics["e2e_p95_ms"],
                ),
                (
                    gates.Gate(TOKENS_PER_SECOND, "tokens_per_s", ">=", cfg.min_tokens_per_s),
                    metrics["tokens_per_s"],
                ),
                (
                    gates.Gate(SUCCESS_RATE, "success_rate", ">=", cfg.min_success_rate),
                    metrics["success_rate"],
                ),
                gates.champion_check(  # slower than allowed beyond the noise: even the lower end
                    gates.Gate(
                        TTFT_VS_CHAMPION,
                        "ttft_p95_ratio_ci_low",
                        "<=",
                        cfg.max_ttft_ratio,
                        against_champion=True,
                    ),
                    ttft_ratio,
                    "ci_low",
                ),
                gates.champion_check(  # fewer tokens than allowed beyond the noise: the upper end
                    gates.Gate(
                        TPS_VS_CHAMPION,
                        "tokens_per_s_ratio_ci_high",
                        ">=",
                        cfg.min_tps_ratio,
                        against_champion=True,
                    ),
                    tps_ratio,
                    "ci_high",
                ),
            ]
        versus = (
            f"; TTFT p95 ratio {ttft_ratio.estimate:.2f}, tokens/s ratio "
            f"{tps_ratio.estimate:.2f} vs {champion.alias} v{champion.version}"
            if champion_slot
            else ""
        )
        found = {"version": version, "champion_version": champion.version, **metrics}
        if champion_slot:
            for gate, ratio in ((TTFT_VS_CHAMPION, ttft_ratio), (TPS_VS_CHAMPION, tps_ratio)):
                found[f"{gate}_ci"] = [ratio.ci_low, ratio.ci_high]
        return runner.Measured(
            checks=checks,
            evidence=evidence,
            reason=(
                f"TTFT p95 {metrics['ttft_p95_ms']:.0f} ms, {metrics['tokens_per_s']:.0f} "
                f"tokens/s{versus}"
            ),
            result=found,
        )


STAGE = Stage(
    PIPELINE,
    "perf-test",
    "load-test the staged slot beside the champion's with streaming completions",
    PerfConfig,
    PerfTest(),
    GATES,
    title="LLM: load-test the staged slot (evaluated -> benchmarked)",
    description=(
        "One bounded locust load of streaming completions against vLLM's <model>-staged slot "
        "and the champion's <model>-live slot, interleaved; records time to first token, "
        "end-to-end latency, tokens per second and the success rate of each, and the "
        "challenger/champion ratios with bootstrap 95% intervals; the ttft-p95, e2e-p95, "
        "tokens-per-second, success-rate, ttft-p95-vs-champion and "
        "tokens-per-second-vs-champion gates decide output-alias (benchmarked)."
    ),
)
