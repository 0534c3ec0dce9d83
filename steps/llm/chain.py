"""``mlcp llm chain``: the whole LLM pipeline on one machine, as Argo would run it.

Each stage runs as its own ``mlcp`` process, in order, exactly as the WorkflowTemplates run
their containers; the stages share nothing but the model name and the aliases. A stage that
fails (a gate said no, exit 3) stops the chain with its exit code. At the end a summary
names the live version, the adapter's and the bare base's scores on the eval set, the
streaming latency and throughput, the data digest and the rollback command.
"""

from __future__ import annotations

import time

from ..cv.chain import _stage, promote_live

GATES = (
    "max-eval-perplexity,correct-rate,refusal-rate,gain-over-base,"
    "ttft-p95,e2e-p95,tokens-per-second,success-rate"
)


def run(
    model: str,
    *,
    train_args: list[str] = (),
    deploy_args: list[str] = (),
    evaluate_args: list[str] = (),
    perf_args: list[str] = (),
    require_gates: str = "",
) -> dict:
    started = time.monotonic()
    trained = _stage("train", ["llm", "train", "--model-name", model, *train_args])
    _stage("deploy", ["llm", "deploy", "--model-name", model, *deploy_args])
    evaluated = _stage("evaluate", ["llm", "evaluate", "--model-name", model, *evaluate_args])
    perf = _stage("perf-test", ["llm", "perf-test", "--model-name", model, *perf_args])
    current = promote_live(model, require_gates or GATES)
    return {
        "model": model,
        "live": current.get("live"),
        "previous": current.get("previous"),
        "base_model": trained.get("base_model"),
        "eval_perplexity": trained.get("eval_perplexity"),
        "correct_rate": evaluated.get("correct_rate"),
        "score": evaluated.get("score"),
        "base_correct_rate": evaluated.get("base_correct_rate"),
        "base_score": evaluated.get("base_score"),
        "judge_prompt_sha256": evaluated.get("judge_prompt_sha256"),
        "ttft_p95_ms": perf.get("ttft_p95_ms"),
        "e2e_p95_ms": perf.get("e2e_p95_ms"),
        "tokens_per_s": perf.get("tokens_per_s"),
        "data_digest": trained.get("data_digest"),
        "chain_seconds": round(time.monotonic() - started, 1),
        "rollback": f"mlcp rollback --model-name {model}",
    }
