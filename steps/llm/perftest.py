"""``mlcp llm perf-test``: reads ``evaluated``, load-tests vLLM's staged slot with streaming
completions in a headless locust run, writes ``benchmarked``.

Logged: time to first token (p50/p95), end-to-end latency (p50/p95), tokens per second,
success rate, the raw statistics and a latency-distribution picture. Gates: ``ttft-p95`` and
``e2e-p95`` (maxima, and no worse than the live version's recorded decision by more than a
margin), ``tokens-per-second`` (a minimum, same) and ``success-rate`` (a minimum).
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
from ..serving import vllm
from ..stage import Reporter, data_source, resolve_input
from . import PIPELINE, PROMPT_TEMPLATE_TAG
from . import data as llmdata
from .deploy import require_staged

TTFT_P95 = "ttft-p95"
E2E_P95 = "e2e-p95"
TOKENS_PER_SECOND = "tokens-per-second"
SUCCESS_RATE = "success-rate"
GATES = (TTFT_P95, E2E_P95, TOKENS_PER_SECOND, SUCCESS_RATE)


@dataclass(kw_only=True)
class PerfConfig(Config):
    input_alias: str = alias_option(EVALUATED, reads=True)
    output_alias: str = alias_option(BENCHMARKED, reads=False)
    users: int = option(2, help="concurrent simulated users", min=1, max=64)
    duration: float = option(8.0, help="seconds of load", min=1, max=600)
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
    max_ttft_regression_ms: float = option(
        500.0,
        help="gate ttft-p95: the largest rise in ms allowed against the live version",
        min=0,
    )
    max_e2e_regression_ms: float = option(
        1000.0,
        help="gate e2e-p95: the largest rise in ms allowed against the live version",
        min=0,
    )
    max_tps_regression: float = option(
        100.0,
        help="gate tokens-per-second: the largest drop allowed against the live version",
        min=0,
    )
    vllm_url: str | None = vllm.url_option()


report = Reporter(PIPELINE, "perf-test")


def latency_png(stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(stats["ttft_ms"], bins=40, alpha=0.6, label="time to first token")
    ax.hist(stats["e2e_ms"], bins=40, alpha=0.6, label="end to end")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def perf_test(cfg: PerfConfig) -> dict:
    import mlflow

    server = vllm.VLLM(cfg.vllm_url)
    server.require_live()
    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    slot = require_staged(server, cfg.model_name, version, tags)
    _, instructions = llmdata.read(data_source(cfg.model_name, version, tags))
    template = tags.get(PROMPT_TEMPLATE_TAG, llmdata.PROMPT_TEMPLATE)
    prompts = [llmdata.format_prompt(s.prompt, template) for s in instructions.samples["eval"]]
    name = tracking.run_name(cfg.model_name, {"v": version, "u": cfg.users, "t": cfg.max_tokens})
    params = {k: v for k, v in vars(cfg).items() if k not in ("model_name", "vllm_url")}
    with (
        report.stage_run(cfg.model_name, name, version=version, params=params),
        tempfile.TemporaryDirectory() as tmp,
    ):
        prompts_path, out_path = Path(tmp) / "prompts.json", Path(tmp) / "stats.json"
        prompts_path.write_text(json.dumps(prompts))
        report(
            f"{cfg.users} users streaming {cfg.max_tokens}-token completions for "
            f"{cfg.duration:g} s against {slot} v{version}"
        )
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "steps.llm.loadgen",
                "--url",
                server.url,
                "--model",
                slot,
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
        stats = json.loads(out_path.read_text())
        keys = ("ttft_p50_ms", "ttft_p95_ms", "e2e_p50_ms", "e2e_p95_ms", "tokens_per_s")
        metrics = {k: float(stats[k]) for k in (*keys, "success_rate", "rps")}
        metrics["requests"] = float(stats["requests"])
        mlflow.log_metrics(metrics)
        mlflow.log_dict(stats, "perf/stats.json")
        if stats["ttft_ms"]:
            png = Path(tmp) / "latency_distribution.png"
            latency_png(stats, png)
            mlflow.log_artifact(str(png), "perf")
        evidence = {"requests": stats["requests"], "errors": stats["errors"]}
        checks = [
            (
                gates.Gate(
                    TTFT_P95, "ttft_p95_ms", "<=", cfg.max_ttft_p95_ms, cfg.max_ttft_regression_ms
                ),
                metrics["ttft_p95_ms"],
            ),
            (
                gates.Gate(
                    E2E_P95, "e2e_p95_ms", "<=", cfg.max_e2e_p95_ms, cfg.max_e2e_regression_ms
                ),
                metrics["e2e_p95_ms"],
            ),
            (
                gates.Gate(
                    TOKENS_PER_SECOND,
                    "tokens_per_s",
                    ">=",
                    cfg.min_tokens_per_s,
                    cfg.max_tps_regression,
                ),
                metrics["tokens_per_s"],
            ),
            (
                gates.Gate(SUCCESS_RATE, "success_rate", ">=", cfg.min_success_rate),
                metrics["success_rate"],
            ),
        ]
        report.judge(checks, model=cfg.model_name, version=version, evidence=evidence)
    report.advance(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=(
            f"TTFT p95 {metrics['ttft_p95_ms']:.0f} ms, {metrics['tokens_per_s']:.0f} tokens/s"
        ),
        client=client,
    )
    return {"version": version, **metrics}


STAGE = Stage(
    PIPELINE,
    "perf-test",
    "load-test the staged slot with streaming completions",
    PerfConfig,
    perf_test,
    GATES,
    title="LLM: load-test the staged slot (evaluated -> benchmarked)",
    description=(
        "A bounded locust load of streaming completions against vLLM's <model>-staged slot; "
        "records time to first token, end-to-end latency, tokens per second and the success "
        "rate; the ttft-p95, e2e-p95, tokens-per-second (also against live) and success-rate "
        "gates decide output-alias (benchmarked)."
    ),
)
