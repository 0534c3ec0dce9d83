"""What the load generators (:mod:`steps.decisions.v2load`, :mod:`steps.llm.loadgen`) share: their
common, bounded flags, a headless locust run that prints its progress every second, and the
statistics file.

A load generator runs in a process of its own (locust patches the standard library with
gevent when imported), so locust and gevent are imported inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

MAX_USERS = 64
MAX_DURATION_S = 600


def parser(*, users: int, duration: float) -> argparse.ArgumentParser:
    """A parser with ``--url``, ``--users``, ``--duration`` and ``--out``; a load generator
    adds what it sends."""
    found = argparse.ArgumentParser(prog="loadgen")
    found.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    found.add_argument("--users", type=int, default=users)
    found.add_argument("--duration", type=float, default=duration)
    found.add_argument("--out", required=True)
    return found


def refuse(message: str) -> int:
    """Say why the flags are refused; the exit status of bad flags (2)."""
    print(f"loadgen: {message}", file=sys.stderr)
    return 2


def problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the common flags, or None."""
    if not 1 <= args.users <= MAX_USERS or not 1 <= args.duration <= MAX_DURATION_S:
        return f"--users must be 1..{MAX_USERS} and --duration 1..{MAX_DURATION_S} s"
    return None


def run(user_class, users: int, duration: float, progress: Callable[[Any], str]):
    """Run ``users`` users of ``user_class`` for ``duration`` seconds, printing
    ``[perf-test] <elapsed>/<duration> s: <progress(env)>`` every second. Returns the locust
    environment (its statistics) and the seconds it ran."""
    import gevent
    from locust.env import Environment

    env = Environment(user_classes=[user_class])
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < duration:
        gevent.sleep(min(1.0, duration - elapsed))
        print(
            f"[perf-test] {time.monotonic() - started:4.0f}/{duration:.0f} s: {progress(env)}",
            file=sys.stderr,
            flush=True,
        )
    runner.quit()
    return env, time.monotonic() - started


def write(path: str, result: dict) -> int:
    """Write the statistics as JSON; the exit status of a finished run (0)."""
    with open(path, "w") as handle:
        json.dump(result, handle)
    return 0
