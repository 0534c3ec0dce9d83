"""Benchmarks: ``python -m tests.bench`` (``make bench``).

Starts a fresh local stack (MLflow, S3 endpoint, tritonserver) on free ports in a temporary
folder, then measures, in one run:

- the control plane: whole ``mlcp`` processes from start to exit (``--help``, ``rollback``
  with its alias then read back, ``promote``, ``history``), as a person or an Argo step
  runs them;
- the CV chain: the wall time of ``mlcp cv chain`` (train -> deploy -> evaluate ->
  perf-test -> promote, each stage its own process);
- Triton: requests per second on the chain's ResNet-18 with dynamic batching and without
  it, same ONNX file, same concurrent clients, and the ratio;
- the LLM chain (vLLM joins the stack): the wall time of ``mlcp llm chain``, and, after a
  second chain put v2 live, the time from starting ``mlcp rollback`` until vLLM's
  ``<model>-live`` slot answers from v1's adapter folder with v1's answers.

Prints a table; asserts nothing about time (the machine is shared and noisy; read the
figures, compare ratios within one run). ``--skip-cv`` and ``--skip-llm`` leave those parts
out. The vLLM environment is the checkout's ``.mlcp/envs/vllm`` (built once, as the tests
and ``mlcp stack up`` do).
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

TARGETS = {"mlcp --help": 1.0, "mlcp rollback": 3.0, "mlcp cv chain (wall)": 180.0}
PROBES = ("the moon and the", "where is the door ?", "first: red", "song song song")
# The second chain only has to put v2 live: bounds wide enough for a noisy shared machine.
LENIENT = [
    "--evaluate-args",
    "--margin 0.5",
    "--perf-test-args",
    "--max-ttft-ratio 20 --min-tps-ratio 0.05",
]
CLIENTS = 8
SECONDS = 10.0


def triton_throughput(slot: str, image_size: int) -> float:
    """Requests per second that CLIENTS threads sending one image each get from ``slot``."""
    import threading

    import numpy as np

    from steps.serving import triton

    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    counts = [0] * CLIENTS
    stop = time.monotonic() + SECONDS

    def client(index: int) -> None:
        server = triton.Triton()
        while time.monotonic() < stop:
            server.infer(slot, x)
            counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / SECONDS


def bench_cv(rows: list, client) -> None:
    import mlflow

    from steps.serving import triton

    model = "bench-digits"
    timed("data", "cv")
    rows.append(("mlcp cv chain (wall)", [timed("cv", "chain", "--model-name", model)]))
    tags = client.get_model_version(model, "1").tags
    onnx = Path(mlflow.artifacts.download_artifacts(tags["mlcp.onnx_uri"])).read_bytes()
    image_size = int(tags["mlcp.image_size"])
    server = triton.Triton()
    rates = {}
    for label, batching in (("with", True), ("without", False)):
        slot = f"bench-batching-{label}"
        triton.write_entry(
            os.environ["MLCP_TRITON_REPOSITORY"],
            slot,
            "1",
            onnx,
            backend="python",
            image_size=image_size,
            num_classes=int(tags["mlcp.num_classes"]),
            dynamic_batching=batching,
        )
        server.load(slot, "1")
        triton_throughput(slot, image_size)  # warm-up pass, not counted
        rates[label] = triton_throughput(slot, image_size)
        rows.append((f"triton req/s {label} dyn. batching", [rates[label]]))
    rows.append(("triton batching speed-up (x)", [rates["with"] / rates["without"]]))


def bench_llm(rows: list, home: Path) -> None:
    from steps.serving import vllm

    env_home = ROOT / ".mlcp"
    vllm.ensure_env(env_home)
    link = vllm.env_dir(home)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(vllm.env_dir(env_home).resolve())
    started = time.perf_counter()
    values = stack.up(home, ports={"vllm": stack.free_port()}, services=["vllm"])
    rows.append(("mlcp stack up vllm (env built)", [time.perf_counter() - started]))
    os.environ.update(values)
    server = vllm.VLLM(values["MLCP_VLLM_URL"])
    model, slot = "bench-llm", "bench-llm-live"
    timed("data", "llm")
    rows.append(("mlcp llm chain (wall)", [timed("llm", "chain", "--model-name", model)]))
    first = [server.complete(slot, p, 8) for p in PROBES]
    timed("llm", "chain", "--model-name", model, "--seed", "1", *LENIENT)
    second = [server.complete(slot, p, 8) for p in PROBES]
    started = time.perf_counter()
    timed("rollback", "--model-name", model)
    exited = time.perf_counter() - started
    while True:
        path = server.adapters().get(slot, {}).get("path", "")
        if Path(path).name == "1" and [server.complete(slot, p, 8) for p in PROBES] == first:
            break
        if time.perf_counter() - started > 120:
            raise SystemExit(f"{slot} did not answer as v1 within 120 s of the rollback")
        time.sleep(0.05)
    answered = time.perf_counter() - started
    rows.append(("llm rollback: mlcp exit", [exited]))
    rows.append(("llm rollback: live slot answers v1", [answered]))
    if first == second:
        print("note: v1 and v2 answer the probes alike; the slot's folder told them apart")


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
    skip_cv = "--skip-cv" in sys.argv[1:]
    skip_llm = "--skip-llm" in sys.argv[1:]
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="mlcp-bench-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        ports = {name: stack.free_port() for name in ("mlflow", "s3", "triton")}
        services = ("mlflow", "s3") if skip_cv else ("mlflow", "s3", "triton")
        values = stack.up(home, ports=ports, services=services)
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
            if not skip_cv:
                bench_cv(rows, tracking.client())
            if not skip_llm:
                bench_llm(rows, home)
        finally:
            stack.down(home)
    print()
    print(f"{'measure':<36} {'runs':>4} {'median':>9} {'min':>9} {'target':>9}  verdict")
    for label, samples in rows:
        target = TARGETS.get(label)
        median = statistics.median(samples)
        verdict = "" if target is None else ("meets" if median < target else "MISSES")
        target_text = "" if target is None else f"< {target:g}"
        print(
            f"{label:<36} {len(samples):>4} {median:>9.2f} {min(samples):>9.2f} "
            f"{target_text:>9}  {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
