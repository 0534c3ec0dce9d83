"""The tabular pipeline declared: registered as the entry point ``tabular`` of the group
``mlcp.pipelines`` (pyproject.toml); mlcp finds it there and never imports it by name."""

from __future__ import annotations

from dataclasses import dataclass

from mlcp import DataConfig, Pipeline, datasets, option

from . import PIPELINE, SERVING, data, deploy, drift, evaluate, perftest, reproduce, train


@dataclass(kw_only=True)
class TabularDataConfig(DataConfig):
    variant: str = option(
        datasets.BASE_VARIANT,
        help="what to publish: "
        + "; ".join(f"{name}: {what}" for name, what in data.VARIANTS.items()),
        choices=tuple(data.VARIANTS),
        noun="tabular data variant",
    )


def publish(cfg: TabularDataConfig) -> dict:
    return data.publish(cfg.out, seed=cfg.seed, variant=cfg.variant)


def summarize(model: str, results: dict[str, dict], aliases: dict[str, str]) -> tuple[dict, str]:
    summary = {
        "accuracy": results["evaluate"].get("accuracy"),
        "p95_ms": results["perf-test"].get("p95_ms"),
        "data_digest": results["train"].get("data_digest"),
    }
    line = (
        f"accuracy {summary['accuracy']:.4f}; p95 {summary['p95_ms']:.0f} ms; "
        f"data {summary['data_digest'][:12]}"
    )
    return summary, line


TABULAR = Pipeline(
    name=PIPELINE,
    help="tabular pipeline stages (a scikit-learn classifier on MLServer)",
    stages=(train.STAGE, deploy.STAGE, evaluate.STAGE, perftest.STAGE),
    publish=publish,
    data_help="scikit-learn's wine table as a split CSV, to S3 or a path",
    default_model="wine-classifier",
    summarize=summarize,
    reproduce=reproduce.reproduce,
    data_config=TabularDataConfig,
    drift=drift.STAGE,
    serving=SERVING,
    model_description=(
        "A tabular classifier: a scikit-learn logistic regression on a versioned table (by "
        "default scikit-learn's wine recognition data, 3 cultivars), each version an MLflow "
        "sklearn model served by MLServer's MLflow runtime."
    ),
    title="Tabular: train -> deploy -> evaluate -> perf-test -> promote",
    description=(
        "The whole tabular chain, each stage its own WorkflowTemplate (templateRef); a failed "
        "gate fails its step and stops the chain; promote to live requires every tabular gate."
    ),
)
