"""A bounded, headless locust run in its own process: ``python -m steps.cv.loadgen``.

Locust patches the standard library with gevent when imported, so it runs in a process of its
own rather than inside a step that already holds MLflow and HTTP clients. It POSTs one
prepared request body to one URL with ``--users`` users for ``--duration`` seconds (both
bounded), prints progress every second, and writes its statistics as JSON to ``--out``.
"""

from __future__ import annotations

import sys

from .. import loadgen


def main(argv=None) -> int:
    parser = loadgen.parser(users=4, duration=10.0)
    parser.add_argument("--path", required=True, help="request path")
    parser.add_argument("--body", required=True, help="file holding the JSON request body")
    args = parser.parse_args(argv)
    if problem := loadgen.problem(args):
        return loadgen.refuse(problem)

    from locust import FastHttpUser, constant, task

    body = open(args.body, "rb").read()
    path = args.path

    class InferUser(FastHttpUser):
        host = args.url
        wait_time = constant(0)

        @task
        def infer(self):
            self.client.post(path, data=body, headers={"Content-Type": "application/json"})

    env, elapsed = loadgen.run(
        InferUser,
        args.users,
        args.duration,
        lambda env: (
            f"{env.stats.total.num_requests} requests, {env.stats.total.num_failures} failed"
        ),
    )
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
    return loadgen.write(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
