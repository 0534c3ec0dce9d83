"""``mlcp cv chain``: the whole CV pipeline on one machine, as Argo would run it.

Each stage runs as its own ``mlcp`` process, in order, exactly as the WorkflowTemplates run
their containers; the stages share nothing but the model name and the aliases. A stage that
fails (a gate said no, exit 3) stops the chain with its exit code. At the end a summary
names the live version, its accuracy and p95 latency, the data digest and the rollback
command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ..errors import MlcpError


def _stage(label: str, args: list[str]) -> dict:
    print(f"==> {label}: mlcp {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "steps.cli", *args], stdout=subprocess.PIPE, text=True
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        error = MlcpError(f"stage {label} failed with exit {proc.returncode}; chain stopped")
        error.exit_code = proc.returncode
        raise error
    print(f"    {label} done in {elapsed:.1f} s", file=sys.stderr, flush=True)
    lines = [
        line for line in proc.stdout.splitlines() if line.startswith("{") and line.endswith("}")
    ]
    return json.loads(lines[-1]) if lines else {}


def promote_live(model: str, gates: str) -> dict[str, str]:
    """The chain's last stage: promote ``benchmarked`` to ``live`` requiring ``gates``; the
    model's aliases afterwards."""
    _stage(
        "promote",
        [
            "promote",
            "--model-name",
            model,
            "--source-alias",
            "benchmarked",
            "--target-alias",
            "live",
            "--require-gates",
            gates,
            "--reason",
            "local chain",
        ],
    )
    from .. import aliases, tracking

    return aliases.aliases_of(tracking.client(), model)


def run(
    model: str,
    *,
    train_args: list[str] = (),
    evaluate_args: list[str] = (),
    perf_args: list[str] = (),
    require_gates: str = "",
) -> dict:
    started = time.monotonic()
    trained = _stage("train", ["cv", "train", "--model-name", model, *train_args])
    _stage("deploy", ["cv", "deploy", "--model-name", model])
    evaluated = _stage("evaluate", ["cv", "evaluate", "--model-name", model, *evaluate_args])
    perf = _stage("perf-test", ["cv", "perf-test", "--model-name", model, *perf_args])
    gates = require_gates or "min-val-accuracy,onnx-parity,accuracy,p95-latency,throughput"
    current = promote_live(model, gates)
    return {
        "model": model,
        "live": current.get("live"),
        "previous": current.get("previous"),
        "accuracy": evaluated.get("accuracy"),
        "p95_ms": perf.get("p95_ms"),
        "rps": perf.get("rps"),
        "data_digest": trained.get("data_digest"),
        "chain_seconds": round(time.monotonic() - started, 1),
        "rollback": f"mlcp rollback --model-name {model}",
    }
