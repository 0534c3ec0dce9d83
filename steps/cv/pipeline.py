"""The CV pipeline declared: its stages in chain order, its data publisher, its default model
and how its chain summary reads. Registered as an entry point of ``mlcp.pipelines``
(pyproject.toml), found through ``steps/spec/pipelines.py``; nothing in the core imports it."""

from __future__ import annotations

from dataclasses import dataclass

from ..records.datasets import BASE_VARIANT
from ..spec.declare import DataConfig, Pipeline, option
from ..stages import rollout
from . import PIPELINE, data, deploy, drift, evaluate, perftest, reproduce, train


@dataclass(kw_only=True)
class CvDataConfig(DataConfig):
    variant: str = option(
        BASE_VARIANT,
        help="what to publish: "
        + "; ".join(f"{name}: {what}" for name, what in data.VARIANTS.items()),
        choices=tuple(data.VARIANTS),
        noun="CV data variant",
    )


def publish(cfg: CvDataConfig) -> dict:
    return data.publish(cfg.out, seed=cfg.seed, variant=cfg.variant)


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
    data_config=CvDataConfig,
    drift=drift.STAGE,
    rollout=rollout.stage(PIPELINE),
    serving="triton",
    model_description=(
        "An image classifier: ResNet-18 (torchvision) trained on a versioned image set (by "
        "default scikit-learn's handwritten digits, 10 classes), each version a PyTorch model "
        "that deploy exports to ONNX or TorchScript for Triton Inference Server."
    ),
    title="CV: train -> deploy -> evaluate -> perf-test -> promote",
    description=(
        "The whole CV chain, each stage its own WorkflowTemplate (templateRef), sharing "
        "nothing but the model name and the aliases. A failed gate fails its step and stops "
        "the chain; promote to live requires every CV gate's passing decision."
    ),
)
