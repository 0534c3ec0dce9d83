"""A bounded, headless locust run of streaming completions, in its own process:
``python -m steps.llm.loadgen``.

Like :mod:`steps.cv.loadgen` (locust patches the standard library with gevent, so it runs
apart from the step). Each of ``--users`` users sends streamed ``/v1/completions`` requests
to one model (a vLLM slot), cycling through the prompts of ``--prompts`` (a JSON list), for
``--duration`` seconds (both bounded). For every request it measures the time to the first
token and to the last, and the tokens received (the usage the server reports at the end of
the stream). It prints progress every second and writes its statistics as JSON to ``--out``.
"""

from __future__ import annotations

import json
import math
import sys
import time

from .. import loadgen


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def main(argv=None) -> int:
    parser = loadgen.parser(users=2, duration=8.0)
    parser.add_argument("--model", required=True, help="the model (slot) to ask")
    parser.add_argument("--prompts", required=True, help="file holding a JSON list of prompts")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    if problem := loadgen.problem(args):
        return loadgen.refuse(problem)
    if not 1 <= args.max_tokens <= 256:
        return loadgen.refuse("--max-tokens must be 1..256")
    prompts = json.load(open(args.prompts))
    if not isinstance(prompts, list) or not prompts:
        return loadgen.refuse("--prompts must hold a non-empty JSON list")

    from locust import HttpUser, constant, task

    samples: list[dict] = []
    counter = {"next": 0}

    class StreamUser(HttpUser):
        host = args.url
        wait_time = constant(0)

        def on_start(self):
            # no proxy: an HTTP(S)_PROXY meant for the internet must not route a server
            # next door
            self.client.trust_env = False

        @task
        def complete(self):
            prompt = prompts[counter["next"] % len(prompts)]
            counter["next"] += 1
            body = {
                "model": args.model,
                "prompt": prompt,
                "max_tokens": args.max_tokens,
                "temperature": 0.0,
                "ignore_eos": True,  # every request asks for the same number of tokens
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            started = time.perf_counter()
            first = None
            pieces, usage = 0, None
            with self.client.post(
                "/v1/completions",
                json=body,
                stream=True,
                catch_response=True,
                name="stream /v1/completions",
            ) as response:
                try:
                    if response.status_code != 200:
                        raise ValueError(f"HTTP {response.status_code}")
                    buffer = b""
                    done = False
                    for chunk in response.iter_content(chunk_size=None):
                        buffer += chunk
                        while b"\n" in buffer and not done:
                            line, buffer = buffer.split(b"\n", 1)
                            line = line.strip()
                            if not line.startswith(b"data:"):
                                continue
                            payload = line[5:].strip()
                            if payload == b"[DONE]":
                                done = True
                                break
                            event = json.loads(payload)
                            if event.get("usage"):
                                usage = event["usage"]
                            if any(c.get("text") for c in event.get("choices") or []):
                                pieces += 1
                                if first is None:
                                    first = time.perf_counter() - started
                        if done:
                            break
                    if not done or first is None:
                        raise ValueError("the stream ended without tokens or [DONE]")
                except Exception as exc:
                    response.failure(str(exc))
                    samples.append({"ok": False, "error": str(exc)[:200]})
                    return
                total = time.perf_counter() - started
                tokens = (usage or {}).get("completion_tokens") or pieces
                response.success()
                samples.append({"ok": True, "ttft": first, "e2e": total, "tokens": tokens})

    _, elapsed = loadgen.run(
        StreamUser,
        args.users,
        args.duration,
        lambda env: (
            f"{len(samples)} streamed completions, {sum(1 for s in samples if not s['ok'])} failed"
        ),
    )
    ok = [s for s in samples if s["ok"]]
    ttft = [s["ttft"] * 1000 for s in ok]
    e2e = [s["e2e"] * 1000 for s in ok]
    tokens = sum(s["tokens"] for s in ok)
    result = {
        "requests": len(samples),
        "failures": len(samples) - len(ok),
        "seconds": elapsed,
        "rps": len(samples) / elapsed if elapsed else 0.0,
        "success_rate": len(ok) / len(samples) if samples else 0.0,
        "ttft_p50_ms": percentile(ttft, 0.5),
        "ttft_p95_ms": percentile(ttft, 0.95),
        "e2e_p50_ms": percentile(e2e, 0.5),
        "e2e_p95_ms": percentile(e2e, 0.95),
        "tokens": tokens,
        "tokens_per_s": tokens / elapsed if elapsed else 0.0,
        "ttft_ms": ttft,
        "e2e_ms": e2e,
        "errors": sorted({s["error"] for s in samples if not s["ok"]})[:5],
        "users": args.users,
        "max_tokens": args.max_tokens,
    }
    return loadgen.write(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
