"""A bounded, headless locust run in its own process: ``python -m steps.cv.loadgen``.

Locust patches the standard library with gevent when imported, so it runs in a process of its
own rather than inside a step that already holds MLflow and HTTP clients. It POSTs one
prepared request body to one URL with ``--users`` users for ``--duration`` seconds (both
bounded), prints progress every second, and writes its statistics as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen")
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--path", required=True, help="request path")
    parser.add_argument("--body", required=True, help="file holding the JSON request body")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 64 or not 1 <= args.duration <= 600:
        print("loadgen: --users must be 1..64 and --duration 1..600 s", file=sys.stderr)
        return 2

    import gevent
    from locust import FastHttpUser, constant, task
    from locust.env import Environment

    body = open(args.body, "rb").read()
    path = args.path

    class InferUser(FastHttpUser):
        host = args.url
        wait_time = constant(0)

        @task
        def infer(self):
            self.client.post(path, data=body, headers={"Content-Type": "application/json"})

    env = Environment(user_classes=[InferUser])
    runner = env.create_local_runner()
    runner.start(args.users, spawn_rate=args.users)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < args.duration:
        gevent.sleep(min(1.0, args.duration - elapsed))
        total = env.stats.total
        print(
            f"[perf-test] {time.monotonic() - started:4.0f}/{args.duration:.0f} s: "
            f"{total.num_requests} requests, {total.num_failures} failed",
            file=sys.stderr,
            flush=True,
        )
    runner.quit()
    elapsed = time.monotonic() - started
    total = env.stats.total
    result = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "seconds": elapsed,
        "rps": total.num_requests / elapsed if elapsed else 0.0,
        "error_rate": total.num_failures / total.num_requests if total.num_requests else 1.0,
        "p50_ms": total.get_response_time_percentile(0.5) or 0.0,
        "p95_ms": total.get_response_time_percentile(0.95) or 0.0,
        "p99_ms": total.get_response_time_percentile(0.99) or 0.0,
        "response_times_ms": {str(k): v for k, v in sorted(total.response_times.items())},
        "errors": [str(e.error) for e in env.stats.errors.values()][:5],
        "users": args.users,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
