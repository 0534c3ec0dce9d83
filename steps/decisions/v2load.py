"""A bounded, headless locust run in its own process: ``python -m steps.decisions.v2load``.

Locust patches the standard library with gevent when imported, so it runs in a process of its
own rather than inside a step that already holds MLflow and HTTP clients. Each ``--target``
(a slot of a V2-protocol server, Triton or MLServer: its label, request path and prepared
JSON body; one, or two for an A/B run: the challenger and the champion) gets ``--users``
users of its own, all in the same locust run: the slots' requests interleave on the same
server for the same ``--duration`` seconds (both bounded), each user POSTing its slot's
body with no pause. Before the clock starts, each slot gets ``--warmup`` requests that are
not counted (a server's first answers for a freshly loaded model pay for lazy set-up: MLServer
builds its runtime's first batch, Triton warms its backend), so that one cold request does
not decide a p95 drawn from a short run. Every answered request's latency is kept, and
counted in the second (since the start) it completed, per slot. It prints progress every
second and writes its statistics as JSON to ``--out``: per slot, the summary figures, the raw
per-request latencies and the per-second request counts (what steps/decisions/paired.py
resamples), and the warm-up's counts.
"""

from __future__ import annotations

import sys
import time

from . import loadgen

MAX_TARGETS = 2
MAX_WARMUP = 50


def summarize(latencies: list[float], failures: int, per_second: list[int], seconds: float):
    """One slot's statistics."""
    import numpy as np

    requests = len(latencies) + failures
    points = np.percentile(latencies, [50, 95, 99]) if latencies else [0.0, 0.0, 0.0]
    return {
        "requests": requests,
        "failures": failures,
        "rps": len(latencies) / seconds if seconds else 0.0,
        "error_rate": failures / requests if requests else 1.0,
        "p50_ms": float(points[0]),
        "p95_ms": float(points[1]),
        "p99_ms": float(points[2]),
        "latencies_ms": [round(v, 3) for v in latencies],
        "per_second": per_second,
    }


def warm_up(url: str, targets, count: int) -> dict[str, dict]:
    """POST each target's body (``targets``: label, path, body bytes) ``count`` times before
    the measured run, one after another; per label, how many were sent and how many failed
    (a failing slot fails the measured run too, where it is counted: here it is only said)."""
    import urllib.error
    import urllib.request

    warmed: dict[str, dict] = {}
    for label, path, body in targets:
        failed = 0
        for _ in range(count):
            request = urllib.request.Request(
                url.rstrip("/") + path,
                data=body,
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    answer.read()
            except (urllib.error.URLError, OSError) as exc:
                failed += 1
                print(f"[loadgen] warm-up of {label} failed: {exc}", file=sys.stderr)
        warmed[label] = {"requests": count, "failed": failed}
    return warmed


def main(argv=None) -> int:
    parser = loadgen.parser(users=4, duration=10.0)
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="uncounted requests per slot before the measured run (default 2; 0 for none)",
    )
    parser.add_argument(
        "--target",
        action="append",
        nargs=3,
        required=True,
        metavar=("LABEL", "PATH", "BODY"),
        help="a slot to load: a label, its request path and the file holding its JSON "
        f"request body (up to {MAX_TARGETS}; each gets --users users)",
    )
    args = parser.parse_args(argv)
    if problem := loadgen.problem(args):
        return loadgen.refuse(problem)
    labels = [label for label, _, _ in args.target]
    if len(labels) > MAX_TARGETS or len(set(labels)) != len(labels):
        return loadgen.refuse(f"give 1..{MAX_TARGETS} --target, each with its own label")
    if not 0 <= args.warmup <= MAX_WARMUP:
        return loadgen.refuse(f"--warmup must be 0..{MAX_WARMUP}")

    import itertools
    from collections import Counter

    from locust import FastHttpUser, constant, task

    targets = [(label, path, open(body, "rb").read()) for label, path, body in args.target]
    warmed = warm_up(args.url, targets, args.warmup)
    assigned = itertools.count()
    latencies: dict[str, list[float]] = {label: [] for label in labels}
    failures: Counter = Counter()
    errors: dict[str, list[str]] = {label: [] for label in labels}
    completed: dict[str, Counter] = {label: Counter() for label in labels}
    clock: dict[str, float] = {}

    def record(request_type, name, response_time, response_length, exception=None, **_):
        if name not in latencies:
            return
        now = time.monotonic()
        clock["last"] = now
        if exception is None:
            latencies[name].append(float(response_time))
            completed[name][int(now - clock["start"])] += 1
        else:
            failures[name] += 1
            if len(errors[name]) < 5:
                errors[name].append(str(exception))

    class InferUser(FastHttpUser):
        host = args.url
        wait_time = constant(0)

        def on_start(self):
            # users are spawned one after the other: every other one loads the other slot
            self.label, self.path, self.body = targets[next(assigned) % len(targets)]
            if "start" not in clock:
                clock["start"] = time.monotonic()
                self.environment.events.request.add_listener(record)

        @task
        def infer(self):
            self.client.post(
                self.path,
                data=self.body,
                headers={"Content-Type": "application/json"},
                name=self.label,
            )

    env, elapsed = loadgen.run(
        InferUser,
        args.users * len(targets),
        args.duration,
        lambda env: ", ".join(
            f"{label}: {len(latencies[label])} requests, {failures[label]} failed"
            for label in labels
        ),
    )
    # the whole seconds every slot was loaded throughout (the last one may be cut short)
    whole = int(clock.get("last", 0.0) - clock.get("start", 0.0))
    result = {
        "seconds": elapsed,
        "users": args.users,
        "warmup": warmed,
        "targets": {
            label: {
                **summarize(
                    latencies[label],
                    failures[label],
                    [completed[label][second] for second in range(whole)],
                    elapsed,
                ),
                "errors": errors[label],
            }
            for label in labels
        },
    }
    return loadgen.write(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
