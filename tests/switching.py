"""Switching a live slot under a bounded client load: what the bench reports and the tests
assert (``tests/bench.py``, ``tests/test_switching.py``).

A fixed number of client threads send requests to ``<model>-live`` without pause, each
noting when it sent, when the answer came, whether it failed and which version answered,
while real ``mlcp promote`` / ``mlcp rollback`` processes switch the slot back and forth.
:func:`summary` turns that into: requests, failed requests, p50 and p99 in steady state
(requests that overlap no switch), the worst latency during a switch, and for each switch
the time from the command's start until every client sees the new version.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .conftest import ROOT

# Runs the real CLI, then prints which mlflow modules the process imported (last line).
WATCHED = (
    "import json, sys\n"
    "from steps.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "loaded = sorted(m for m in sys.modules if m == 'mlflow' or m.startswith('mlflow.'))\n"
    "print(json.dumps({'code': code, 'mlflow_modules': loaded}))\n"
    "sys.exit(code)\n"
)


AMBIGUOUS = "|"  # in a version that ``ask`` could not tell apart ("1|2")


@dataclass
class Sample:
    client: int
    sent: float
    done: float
    version: str | None  # None: failed
    error: str = ""

    @property
    def latency(self) -> float:
        return self.done - self.sent


@dataclass
class Switch:
    command: tuple[str, ...]
    to_version: str
    started: float = 0.0
    exited: float = 0.0
    code: int = 0
    mlflow_modules: list[str] = field(default_factory=list)
    output: str = ""


def watched(*args: str, timeout: float = 300) -> tuple[int, list[str], str]:
    """``mlcp ARGS`` in its own process: exit code, the mlflow modules it imported, output."""
    proc = subprocess.run(
        [sys.executable, "-c", WATCHED, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    loaded = json.loads(lines[-1])["mlflow_modules"] if lines else ["(no report)"]
    return proc.returncode, loaded, proc.stdout + proc.stderr


def under_load(
    ask: Callable[[int], str],
    switches: Sequence[Switch],
    *,
    clients: int,
    settle_s: float,
) -> list[Sample]:
    """Run ``clients`` threads calling ``ask(client)`` (it returns the version that
    answered, or raises) while the switches run one after the other, ``settle_s`` of steady
    load before the first, between two and after the last. Fills in each switch's times."""
    samples: list[Sample] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                version, error = ask(index), ""
            except Exception as exc:  # any failure counts
                version, error = None, f"{type(exc).__name__}: {exc}"[:300]
            with lock:
                samples.append(Sample(index, sent, time.monotonic(), version, error))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(settle_s)
        for switch in switches:
            switch.started = time.monotonic()
            switch.code, switch.mlflow_modules, switch.output = watched(*switch.command)
            switch.exited = time.monotonic()
            time.sleep(settle_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    return sorted(samples, key=lambda s: s.sent)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def visible_after(samples: list[Sample], switch: Switch, until: float, clients: int) -> float:
    """Seconds from the command's start until every client answers from the new version
    (each client's first answer from it after which it sees no other); inf when one never
    does before ``until``. Clients whose answers name no one version are left out."""
    latest = switch.started
    for index in range(clients):
        mine = [
            s
            for s in samples
            if s.client == index and s.done > switch.started and s.sent < until and s.version
        ]
        if all(AMBIGUOUS in s.version for s in mine):
            continue  # this client's answers do not tell the versions apart
        seen = None
        for sample in mine:
            if sample.version == switch.to_version:
                seen = sample.done if seen is None else seen
            else:
                seen = None
        if seen is None:
            return float("inf")
        latest = max(latest, seen)
    return latest - switch.started


def summary(samples: list[Sample], switches: Sequence[Switch], clients: int) -> dict:
    windows = [(s.started, s.exited) for s in switches]

    def overlaps(sample: Sample) -> bool:
        return any(sample.sent < end and sample.done > start for start, end in windows)

    steady = [s.latency for s in samples if s.version and not overlaps(s)]
    during = [s.latency for s in samples if overlaps(s)]
    ends = [s.started for s in switches[1:]] + [float("inf")]
    return {
        "requests": len(samples),
        "failed": sum(1 for s in samples if s.version is None),
        "errors": sorted({s.error for s in samples if s.error})[:5],
        "p50_ms": 1000 * _percentile(steady, 50),
        "p99_ms": 1000 * _percentile(steady, 99),
        "worst_during_switch_ms": 1000 * max(during, default=float("nan")),
        "switch_s": [s.exited - s.started for s in switches],
        "visible_s": [
            visible_after(samples, s, end, clients) for s, end in zip(switches, ends, strict=True)
        ],
    }


def register_onnx_versions(client, folder, name: str, seeds=(1, 2), pipeline: str = "test"):
    """Register ``name`` (served by Triton) with one version per seed, each a tiny ONNX net
    with the tags its deploy would have recorded (nothing is trained); no alias is set."""
    from steps.spec.contract import PIPELINE_TAG, SERVING_TAG

    from .test_triton import CLASSES, SIZE, export, tiny_net

    client.create_registered_model(name, tags={PIPELINE_TAG: pipeline, SERVING_TAG: "triton"})
    experiment = client.get_experiment_by_name(f"{pipeline}/deploy")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(f"{pipeline}/deploy")
    )
    for number, seed in enumerate(seeds, start=1):
        version = str(number)
        path = folder / "model.onnx"
        export(tiny_net(seed), path)
        run = client.create_run(experiment_id, run_name=f"{name}-v{version}")
        client.log_artifact(run.info.run_id, str(path), "onnx")
        client.set_terminated(run.info.run_id)
        made = client.create_model_version(
            name, f"{run.info.artifact_uri}/onnx", run_id=run.info.run_id
        )
        assert str(made.version) == version
        for key, value in {
            "mlcp.onnx_uri": f"runs:/{run.info.run_id}/onnx/model.onnx",
            "mlcp.image_size": str(SIZE),
            "mlcp.num_classes": str(CLASSES),
            "mlcp.triton_backend": "python",
        }.items():
            client.set_model_version_tag(name, version, key, value)
    return name


class RouterLoad:
    """Client threads calling ``path`` at the router (``$MLCP_ROUTER_URL``) without pause, the
    same JSON ``body`` each time; each answer's version (``read`` of the answer's JSON) or the
    failure, with when it was sent (monotonic and wall clock) and answered."""

    def __init__(
        self,
        path: str,
        body: dict,
        read: Callable[[dict], str],
        threads: int = 3,
        headers: dict[str, str] | None = None,
    ):
        from steps.registry import router

        self.url = os.environ[router.URL_ENV] + path
        self.body = json.dumps(body).encode()
        self.read = read
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.answers: list[str] = []
        self.timed: list[tuple[float, float, str]] = []  # (sent, answered, version)
        self.walled: list[tuple[float, str]] = []  # (sent by the wall clock, version)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            request = urllib.request.Request(
                self.url, data=self.body, headers=self.headers, method="POST"
            )
            wall, sent = time.time(), time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer = self.read(json.loads(response.read()))
            except urllib.error.HTTPError as exc:
                answer = f"failed {exc.code}"
            except OSError as exc:
                answer = f"failed {exc}"
            self.timed.append((sent, time.monotonic(), answer))
            self.walled.append((wall, answer))
            self.answers.append(answer)

    def __enter__(self) -> RouterLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def wait(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < count:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers in {timeout} s"
            time.sleep(0.05)

    def failed(self) -> list[str]:
        return [a for a in self.answers if a.startswith("failed")]

    def rate(self, seconds: float = 2.0) -> float:
        """Answers per second over the next ``seconds``, as this machine serves them now."""
        before, started = len(self.answers), time.monotonic()
        time.sleep(seconds)
        return max(len(self.answers) - before, 1) / (time.monotonic() - started)


def step_seconds(per_second: float, share: float, min_requests: int, least: float) -> int:
    """A rollout step long enough that its smaller side expects 2.5 times ``min_requests`` at
    the measured ``per_second`` (all requests): a fixed step on a loaded machine sees too few
    requests to be judged, and the rollout then rightly fails its traffic gate. At least
    ``least`` seconds, at most STEP_CAP_S."""
    needed = 2.5 * min_requests / min(share, 1 - share) / per_second
    return math.ceil(min(STEP_CAP_S, max(least, needed)))


STEP_CAP_S = 60.0


# ------------------------------------------------------- the split a rollout's clients saw
# The router draws each request's side at random, so the challenger's fraction of a step is
# binomial: at weight p over n requests its standard deviation is sqrt(p(1-p)/n). A check
# of +-POINTS is sound when POINTS is at least SPREAD standard deviations: a correct router
# then fails it with probability under 0.001 (3.3 sd, two-sided). A step that saw fewer
# requests than that is checked at SPREAD standard deviations instead (:func:`tolerance`).
POINTS = 0.03
SPREAD = 3.3


# --max-p95-ratio for the rollouts whose tests judge the split, the promotion or the flip, not
# latency (the refusal tests do, at the default 1.5). On a 2-core machine shared with vLLM, a
# slot that gets 5% of the requests wakes for each one, the slot that gets 100% queues them,
# and the champion's sample is from the step before: p95 ratios of 1.7 and 6.5 were seen,
# a few milliseconds apart.
UNJUDGED_P95_RATIO = "50"
MIN_REQUESTS = 200  # fewer, and the bound below is too wide to tell a weight from another


def requests_needed(weight: int) -> int:
    """How many requests a step at ``weight`` percent needs for the +-POINTS check."""
    p = weight / 100
    return math.ceil(p * (1 - p) * (SPREAD / POINTS) ** 2)


def tolerance(weight: int, count: int) -> float:
    """How far a step's observed share may lie from ``weight`` percent over ``count``
    requests: POINTS, or SPREAD standard deviations when the step saw fewer requests than
    :func:`requests_needed` (a loaded machine answers fewer in the same seconds). Either way
    a correct router fails it with probability under 0.001; with MIN_REQUESTS or more it is
    at most 11.7 points at 50% and 5.1 points at 5%, so a router that ignores the weight
    still fails it."""
    p = weight / 100
    return max(POINTS, SPREAD * math.sqrt(p * (1 - p) / max(count, 1)))


def check_split(weight: int, count: int, fraction: float) -> None:
    """Assert that a step at ``weight`` percent sent ``fraction`` of its ``count`` requests to
    the challenger, within :func:`tolerance`."""
    bound = tolerance(weight, count)
    print(
        f"weight {weight}%: {fraction:.1%} of {count} requests to the challenger "
        f"(allowed +-{bound:.1%}; +-{POINTS:.0%} takes {requests_needed(weight)})"
    )
    assert count >= MIN_REQUESTS, (weight, count)
    assert abs(fraction - weight / 100) <= bound, (weight, count, fraction, bound)


def step_splits(client, model: str, walled, challenger: str) -> list[tuple[int, int, float]]:
    """(weight, requests, challenger fraction) of each weight a rollout held, from its
    recorded shifts: the requests sent between the router reporting a step's weight (the
    shift's record closing) and the next change, less the last half second (in flight)."""
    from steps.registry import moves

    shifts = [r for r in moves.history(client, model, "traffic") if r.action == "shift"]
    start = max(i for i, r in enumerate(shifts) if r.from_weight == "0")
    shifts = shifts[start:]
    runs = [client.get_run(r.run_id).info for r in shifts]
    found = []
    for shift, applied, following in zip(shifts, runs, runs[1:], strict=False):
        begin, end = applied.end_time / 1000, following.start_time / 1000
        seen = [v for sent, v in walled if begin <= sent < end - 0.5]
        found.append((int(shift.to_weight), len(seen), seen.count(challenger) / max(len(seen), 1)))
    return found
