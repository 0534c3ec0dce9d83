"""The CV pipeline declared: its stages in chain order, its data publisher, its default model
and how its chain summary reads. ``steps/pipelines.py`` lists it; nothing in the core does."""

from __future__ import annotations

from ..declare import DataConfig, Pipeline
from . import PIPELINE, deploy, evaluate, perftest, reproduce, train


def publish(cfg: DataConfig) -> dict:
    from . import data

    return {"uri": data.publish(cfg.out, seed=cfg.seed)}


def summarize(model: str, results: dict[str, dict], aliases: dict[str, str]) -> tuple[dict, str]:
    trained, evaluated, perf = results["train"], results["evaluate"], results["perf-test"]
    summary = {
        "accuracy": evaluated.get("accuracy"),
        "p95_ms": perf.get("p95_ms"),
        "rps": perf.get("rps"),
        "data_digest": trained.get("data_digest"),
    }
    line = (
        f"accuracy {summary['accuracy']:.4f}; p95 {summary['p95_ms']:.0f} ms; "
        f"data {summary['data_digest'][:12]}"
    )
    return summary, line


CV = Pipeline(
    name=PIPELINE,
    help="computer-vision pipeline stages (ResNet-18 on Triton)",
    stages=(train.STAGE, deploy.STAGE, evaluate.STAGE, perftest.STAGE),
    publish=publish,
    data_help="scikit-learn digits as a split .npz, to S3 or a path",
    default_model="resnet18-digits",
    summarize=summarize,
    reproduce=reproduce.reproduce,
    title="CV: train -> deploy -> evaluate -> perf-test -> promote",
    description=(
        "The whole CV chain, each stage its own WorkflowTemplate (templateRef), sharing "
        "nothing but the model name and the aliases. A failed gate fails its step and stops "
        "the chain; promote to live requires every CV gate's passing decision."
    ),
)
