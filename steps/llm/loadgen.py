"""A bounded, headless locust run of streaming completions, in its own process:
``python -m steps.llm.loadgen``.

Like :mod:`steps.decisions.v2load` (locust patches the standard library with gevent, so it runs
apart from the step). Each ``--model`` (a vLLM slot; one, or two for an A/B run: the
challenger and the champion) gets ``--users`` users of its own, all in the same locust run:
the slots' requests interleave on the same server for the same ``--duration`` seconds, and
every user cycles through the prompts of ``--prompts`` (a JSON list) in the same order,
streaming through the standard ``openai`` client. For every request it measures the time
to the first token and to the last, and the tokens received (the usage the server reports
at the end of the stream); every streamed piece is counted in the second (since the start)
it arrived, per slot. No request is traced (tracing would add to the latency it measures).
It prints progress every second and writes its statistics as JSON to ``--out``: per slot,
the summary figures, the raw per-request times and the per-second token counts (what
steps/decisions/paired.py resamples).
"""

from __future__ import annotations

import json
import math
import sys
import time

from ..decisions import loadgen


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def summarize(samples: list[dict], seconds: float, pieces: list[float]) -> dict:
    """One slot's statistics: the summary figures, the raw per-request times, and the tokens
    (streamed pieces) that arrived in each whole second of the run."""
    ok = [s for s in samples if s["ok"]]
    ttft = [s["ttft"] * 1000 for s in ok]
    e2e = [s["e2e"] * 1000 for s in ok]
    tokens = sum(s["tokens"] for s in ok)
    per_second = [0] * max(int(seconds), 1)
    for arrived in pieces:
        if int(arrived) < len(per_second):
            per_second[int(arrived)] += 1
    return {
        "requests": len(samples),
        "failures": len(samples) - len(ok),
        "rps": len(samples) / seconds if seconds else 0.0,
        "success_rate": len(ok) / len(samples) if samples else 0.0,
        "ttft_p50_ms": percentile(ttft, 0.5),
        "ttft_p95_ms": percentile(ttft, 0.95),
        "e2e_p50_ms": percentile(e2e, 0.5),
        "e2e_p95_ms": percentile(e2e, 0.95),
        "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "ttft_ms": ttft,
        "e2e_ms": e2e,
        "tokens_per_second": per_second,
        "errors": sorted({s["error"] for s in samples if not s["ok"]})[:5],
    }


def main(argv=None) -> int:
    parser = loadgen.parser(users=2, duration=8.0)
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="a model (slot) to ask; twice for an A/B run (each gets --users users)",
    )
    parser.add_argument("--prompts", required=True, help="file holding a JSON list of prompts")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    if problem := loadgen.problem(args):
        return loadgen.refuse(problem)
    if not 1 <= args.max_tokens <= 256:
        return loadgen.refuse("--max-tokens must be 1..256")
    slots = list(dict.fromkeys(args.model))
    if len(slots) != len(args.model) or len(slots) > 2:
        return loadgen.refuse("--model names one slot, or two different ones for an A/B run")
    prompts = json.load(open(args.prompts))
    if not isinstance(prompts, list) or not prompts:
        return loadgen.refuse("--prompts must hold a non-empty JSON list")

    # locust first: it patches the standard library with gevent, and the openai client's
    # sockets, made afterwards, yield to the other users while they wait
    from locust import User, constant, task

    from ..serving import openai_client, vllm

    # one client per user, made before the clock starts: making one (its TLS context) takes
    # a good part of a second on a busy machine, and would hold up every user meanwhile; each
    # sends vLLM's API key (its /v1 routes need it when the server has one)
    key = vllm.api_key()
    clients = [openai_client.make(args.url, key, 120.0) for _ in range(args.users * len(slots))]

    samples: dict[str, list[dict]] = {slot: [] for slot in slots}
    pieces: dict[str, list[float]] = {slot: [] for slot in slots}  # arrival, s since start
    spawned = {"count": 0}
    clock = {"start": time.perf_counter()}

    class StreamUser(User):
        """Streams completions through the standard openai client (locust's HttpUser speaks
        plain HTTP only), reporting each request to locust's statistics itself. Nothing is
        traced: MLflow is not even imported in this process."""

        wait_time = constant(0)

        def on_start(self):
            self.openai = clients.pop()
            # the users alternate between the slots as they are spawned: each slot gets
            # --users of them, and each user walks the prompts from the first
            self.slot = slots[spawned["count"] % len(slots)]
            spawned["count"] += 1
            self.next = 0

        def on_stop(self):
            self.openai.close()

        @task
        def complete(self):
            prompt = prompts[self.next % len(prompts)]
            self.next += 1
            slot = self.slot
            started = time.perf_counter()
            first = None
            count, usage, error = 0, None, None
            try:
                events = openai_client.call(
                    self.openai.completions.create,
                    "vLLM",
                    args.url,
                    model=slot,
                    prompt=prompt,
                    max_tokens=args.max_tokens,
                    temperature=0.0,
                    stream=True,
                    stream_options={"include_usage": True},
                    # every request asks for the same number of tokens
                    extra_body={"ignore_eos": True},
                )
                with events:
                    for event in events:
                        if event.usage:
                            usage = event.usage
                        if any(c.text for c in event.choices or []):
                            now = time.perf_counter()
                            count += 1
                            pieces[slot].append(now - clock["start"])
                            if first is None:
                                first = now - started
                if first is None:
                    raise ValueError("the stream ended without tokens")
            except Exception as exc:
                error = exc
            total = time.perf_counter() - started
            self.environment.events.request.fire(
                request_type="STREAM",
                name=slot,
                response_time=total * 1000,
                response_length=count,
                exception=error,
                context={},
            )
            if error is not None:
                samples[slot].append({"ok": False, "error": str(error)[:200]})
                return
            tokens = (usage.completion_tokens if usage else 0) or count
            samples[slot].append({"ok": True, "ttft": first, "e2e": total, "tokens": tokens})

    def progress(env) -> str:
        return ", ".join(
            f"{slot}: {len(done)} streamed completions, "
            f"{sum(1 for s in done if not s['ok'])} failed"
            for slot, done in samples.items()
        )

    clock["start"] = time.perf_counter()
    _, elapsed = loadgen.run(StreamUser, args.users * len(slots), args.duration, progress)
    result = {
        "slots": {slot: summarize(samples[slot], elapsed, pieces[slot]) for slot in slots},
        "seconds": elapsed,
        "users_per_slot": args.users,
        "max_tokens": args.max_tokens,
    }
    return loadgen.write(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
