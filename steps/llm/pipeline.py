"""The LLM pipeline declared: its stages in chain order, its data publisher, its default model
and how its chain summary reads. Registered as an entry point of ``mlcp.pipelines``
(pyproject.toml), found through ``steps/spec/pipelines.py``; nothing in the core imports it."""

from __future__ import annotations

from dataclasses import dataclass

from ..records.datasets import BASE_VARIANT
from ..spec.declare import DataConfig, Pipeline, option
from ..stages import rollout
from . import PIPELINE, data, deploy, drift, evaluate, perftest, reproduce, train


@dataclass(kw_only=True)
class LlmDataConfig(DataConfig):
    seed: int = option(0, help="seed of the instruction set's split")
    variant: str = option(
        BASE_VARIANT,
        help="what to publish: "
        + "; ".join(f"{name}: {what}" for name, what in data.VARIANTS.items()),
        choices=tuple(data.VARIANTS),
        noun="LLM data variant",
    )
    base: bool = option(True, help="publish the base model too (false: the instructions only)")
    base_seed: int = option(
        0, help="seed of the base model's weights (the local vLLM serves the base of seed 0)"
    )


def publish(cfg: LlmDataConfig) -> dict:
    return data.publish(
        cfg.out, seed=cfg.seed, variant=cfg.variant, base_seed=cfg.base_seed, base=cfg.base
    )


def summarize(model: str, results: dict[str, dict], aliases: dict[str, str]) -> tuple[dict, str]:
    trained, evaluated, perf = results["train"], results["evaluate"], results["perf-test"]
    summary = {
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
    }
    line = (
        f"on the eval set the adapter is correct {summary['correct_rate']:.0%} (score "
        f"{summary['score']:.3f}), the bare base {summary['base_model']} "
        f"{summary['base_correct_rate']:.0%} (score {summary['base_score']:.3f}); TTFT p95 "
        f"{summary['ttft_p95_ms']:.0f} ms, {summary['tokens_per_s']:.0f} tokens/s; data "
        f"{summary['data_digest'][:12]}"
    )
    return summary, line


LLM = Pipeline(
    name=PIPELINE,
    help="LLM pipeline stages (LoRA adapters served by vLLM)",
    stages=(train.STAGE, deploy.STAGE, evaluate.STAGE, perftest.STAGE),
    publish=publish,
    data_help="an instruction set (JSONL) and a small base model, to S3 or a path",
    default_model="tiny-llama-instruct",
    summarize=summarize,
    reproduce=reproduce.reproduce,
    data_config=LlmDataConfig,
    drift=drift.STAGE,
    rollout=rollout.stage(PIPELINE),
    genai=(evaluate.STAGE.name,),  # its runs are the judged answers, each a trace
    serving="vllm",
    model_description=(
        "An instruction-following LoRA adapter (transformers + peft) on a causal LM base: "
        "each version is the adapter alone, tagged with the base it needs (mlcp.base_model), "
        "and vLLM loads it at run time beside that base."
    ),
    title="LLM: train -> deploy -> evaluate -> perf-test -> promote",
    description=(
        "The whole LLM chain, each stage its own WorkflowTemplate (templateRef), sharing "
        "nothing but the model name and the aliases. A failed gate fails its step and stops "
        "the chain; promote to live (which reloads vLLM's <model>-live slot) requires every "
        "LLM gate's passing decision."
    ),
)
