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

from .. import aliases, gates, promote, tracking
from ..errors import BadInput, MlcpError
from . import PIPELINE
from . import data as llmdata
from .deploy import staged_slot


@dataclass
class PerfConfig:
    model_name: str
    source_alias: str = "evaluated"
    target_alias: str = "benchmarked"
    users: int = 2
    duration: float = 8.0
    max_tokens: int = 16
    max_ttft_p95_ms: float = 1000.0
    max_e2e_p95_ms: float = 3000.0
    min_tokens_per_s: float = 20.0
    min_success_rate: float = 0.99
    max_ttft_regression_ms: float = 500.0
    max_e2e_regression_ms: float = 1000.0
    max_tps_regression: float = 100.0
    vllm_url: str | None = None

    def check(self) -> None:
        if not 1 <= self.users <= 64 or not 1 <= self.duration <= 600:
            raise BadInput("--users must be 1..64 and --duration 1..600 s")
        if not 1 <= self.max_tokens <= 256:
            raise BadInput("--max-tokens must be 1..256")
        if not 0 <= self.min_success_rate <= 1:
            raise BadInput("--min-success-rate must be between 0 and 1")
        for name in (
            "max_ttft_p95_ms",
            "max_e2e_p95_ms",
            "min_tokens_per_s",
            "max_ttft_regression_ms",
            "max_e2e_regression_ms",
            "max_tps_regression",
        ):
            if not getattr(self, name) >= 0:
                raise BadInput(f"--{name.replace('_', '-')} must be a number >= 0")


def _say(message: str) -> None:
    print(f"[llm perf-test] {message}", file=sys.stderr, flush=True)


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

    from ..serving import vllm

    cfg.check()
    server = vllm.VLLM(cfg.vllm_url)
    server.require_live()
    client = tracking.client()
    version = aliases.resolve(client, cfg.model_name, cfg.source_alias)
    tags = aliases.get_version(client, cfg.model_name, version).tags
    slot = staged_slot(cfg.model_name)
    served = server.adapters().get(slot, {}).get("path")
    if not served or served != tags.get("mlcp.adapter_path"):
        raise MlcpError(f"vLLM slot {slot} does not serve v{version}: deploy it first")
    data_uri = tags.get("mlcp.data.source")
    if not data_uri:
        raise BadInput(f"{cfg.model_name} v{version} names no data set (mlcp.data.source)")
    _, instructions = llmdata.read(data_uri)
    template = tags.get("mlcp.prompt_template", llmdata.PROMPT_TEMPLATE)
    prompts = [llmdata.format_prompt(s.prompt, template) for s in instructions.samples["eval"]]
    name = tracking.run_name(cfg.model_name, {"v": version, "u": cfg.users, "t": cfg.max_tokens})
    params = {k: v for k, v in vars(cfg).items() if k not in ("model_name", "vllm_url")}
    with (
        tracking.stage_run(
            PIPELINE,
            "perf-test",
            cfg.model_name,
            name,
            version=version,
            params=params,
            system_metrics=False,
        ),
        tempfile.TemporaryDirectory() as tmp,
    ):
        prompts_path, out_path = Path(tmp) / "prompts.json", Path(tmp) / "stats.json"
        prompts_path.write_text(json.dumps(prompts))
        _say(
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
                    "ttft-p95", "ttft_p95_ms", "<=", cfg.max_ttft_p95_ms, cfg.max_ttft_regression_ms
                ),
                metrics["ttft_p95_ms"],
            ),
            (
                gates.Gate(
                    "e2e-p95", "e2e_p95_ms", "<=", cfg.max_e2e_p95_ms, cfg.max_e2e_regression_ms
                ),
                metrics["e2e_p95_ms"],
            ),
            (
                gates.Gate(
                    "tokens-per-second",
                    "tokens_per_s",
                    ">=",
                    cfg.min_tokens_per_s,
                    cfg.max_tps_regression,
                ),
                metrics["tokens_per_s"],
            ),
            (
                gates.Gate("success-rate", "success_rate", ">=", cfg.min_success_rate),
                metrics["success_rate"],
            ),
        ]
        decisions = gates.evaluate_all(
            checks,
            model=cfg.model_name,
            version=version,
            pipeline=PIPELINE,
            stage="perf-test",
            evidence=evidence,
        )
        for d in decisions:
            _say(f"gate {d.gate.name}: {d.verdict} ({'; '.join(d.reasons)})")
        gates.enforce(decisions)
    promote.assign(
        cfg.model_name,
        cfg.target_alias,
        version,
        reason=(
            f"TTFT p95 {metrics['ttft_p95_ms']:.0f} ms, {metrics['tokens_per_s']:.0f} tokens/s"
        ),
        client=client,
    )
    _say(f"{cfg.model_name}@{cfg.target_alias} -> v{version}")
    return {"version": version, **metrics}
