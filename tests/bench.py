"""Benchmark of the control plane's own latency: ``python -m tests.bench`` (``make bench``).

Starts a fresh local stack on free ports in a temporary folder, registers a model with
three live generations, then times whole ``mlcp`` processes from start to exit, as a
person or an Argo step would run them. Prints a table; asserts nothing about time (the
machine is shared and noisy; read the figures, compare ratios within one run).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steps import promote, stack

from .conftest import ROOT, ModelFactory

TARGETS = {"mlcp --help": 1.0, "mlcp rollback": 3.0}


def timed(*args: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "steps.cli", *args], cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"mlcp {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return elapsed


def main() -> int:
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="mlcp-bench-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        values = stack.up(home, ports={"mlflow": stack.free_port(), "s3": stack.free_port()})
        rows.append(("mlcp stack up (cold)", [time.perf_counter() - started]))
        os.environ.update(values)
        os.environ["MLCP_HOME"] = str(home)
        try:
            from steps import tracking

            models = ModelFactory(tracking.client())
            name = models.create(0, pipeline="bench", prefix="bench")
            for _ in range(4):
                version = models.add_version(name, pipeline="bench")
                models.set_alias(name, "benchmarked", version)
                promote.promote(name, "benchmarked", "live", reason="bench setup")
            rows.append(("mlcp --help", [timed("--help") for _ in range(5)]))
            rollbacks = []
            for expected in ("3", "2"):
                rollbacks.append(timed("rollback", "--model-name", name))
                live = models.aliases(name)["live"]
                if live != expected:
                    raise SystemExit(f"rollback left live at v{live}, expected v{expected}")
            rows.append(("mlcp rollback", rollbacks))
            models.set_alias(name, "benchmarked", "4")
            rows.append(
                (
                    "mlcp promote (to live)",
                    [
                        timed(
                            "promote",
                            "--model-name",
                            name,
                            "--source-alias",
                            "benchmarked",
                            "--target-alias",
                            "live",
                        )
                    ],
                )
            )
            rows.append(
                ("mlcp history", [timed("history", "--model-name", name) for _ in range(3)])
            )
        finally:
            stack.down(home)
    print()
    print(f"{'command':<26} {'runs':>4} {'median s':>9} {'min s':>7} {'target s':>9}  verdict")
    for label, samples in rows:
        target = TARGETS.get(label)
        median = statistics.median(samples)
        verdict = "" if target is None else ("meets" if median < target else "MISSES")
        target_text = "" if target is None else f"< {target:g}"
        print(
            f"{label:<26} {len(samples):>4} {median:>9.2f} {min(samples):>7.2f} "
            f"{target_text:>9}  {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
