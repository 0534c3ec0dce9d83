"""The README's main job (`make demo` runs `python -m steps.demo` twice) on the real stack."""

from __future__ import annotations

import json
import subprocess
import sys

from steps import lineage, promote

from .conftest import ROOT


def run_demo() -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "steps.demo"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "[train]" in proc.stdout and "[promote]" in proc.stdout  # progress per stage
    assert "mlcp rollback --model-name demo-logreg" in proc.stdout
    return json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])


def test_demo_twice_leaves_v2_live_and_v1_previous(stack_env, client):
    first = run_demo()
    assert (first["live"], first["previous"]) == ("1", None)
    second = run_demo()
    assert (second["live"], second["previous"]) == ("2", "1")
    # the data set was read from the S3 endpoint and its digest is that of the bytes there
    assert second["data"].startswith(f"s3://{stack_env['MLCP_BUCKET']}/")
    assert lineage.read(second["data"]).digest == second["data_digest"]
    # every alias the demo wrote is in the history, ending with the promotion to live
    moves = promote.history(client, "demo-logreg")
    assert [m.alias for m in moves if m.to_version == "2"] == [
        "candidate",
        "staged",
        "evaluated",
        "benchmarked",
        "live",
    ]
    assert moves[-1].alias == "live" and moves[-1].gate_runs  # it cites the training gate
