"""``mlcp <pipeline> chain``: a whole pipeline on one machine, as Argo would run it.

Each stage runs as its own ``mlcp`` process, in the pipeline's declared order, exactly as the
WorkflowTemplates run their containers; the stages share nothing but the model name and the
aliases. A stage that fails (a gate said no, exit 3) stops the chain with its exit code. The
last step promotes the last stage's alias to ``live``, requiring every gate the pipeline's
stages record (the same list the pipeline template passes). At the end a summary names the
live version, the pipeline's own figures and the rollback command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ..base import settings
from ..base.errors import MlcpError
from ..spec.contract import LIVE, PREVIOUS
from ..spec.declare import Pipeline


def run_stage(label: str, args: list[str]) -> dict:
    """Run ``mlcp ARGS`` as its own process; the JSON summary it printed last, or {}."""
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


def promote_args(pipeline: Pipeline, model: str) -> list[str]:
    """The chain's last step: the last stage's alias to ``live``, requiring every gate."""
    return [
        "promote",
        "--model-name",
        model,
        "--source-alias",
        pipeline.stages[-1].writes,
        "--target-alias",
        LIVE,
        "--require-gates",
        ",".join(pipeline.gates),
        "--reason",
        "local chain",
    ]


def run(pipeline: Pipeline, model: str, stage_args: dict[str, list[str]]) -> tuple[dict, str]:
    """Run every stage, then promote; (the summary, its one-line reading)."""
    started = time.monotonic()
    results = {
        stage.name: run_stage(
            stage.name, [*stage.command, "--model-name", model, *stage_args.get(stage.name, ())]
        )
        for stage in pipeline.stages
    }
    run_stage("promote", promote_args(pipeline, model))
    from ..records import tracking
    from ..registry import aliases

    current = aliases.aliases_of(tracking.client(), model)
    figures, line = pipeline.summarize(model, results, current)
    summary = {
        "model": model,
        LIVE: current.get(LIVE),
        PREVIOUS: current.get(PREVIOUS),
        **figures,
        "chain_seconds": round(time.monotonic() - started, 1),
        "rollback": settings.mlcp_command("rollback", "--model-name", model),
    }
    return summary, line
