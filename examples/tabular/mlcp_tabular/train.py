"""``mlcp tabular train``: a scikit-learn classifier (standardised features, logistic
regression) on the versioned wine table; writes ``candidate`` on a pass.

Reads: the data set (lineage logged). Writes: a registered version (an MLflow sklearn model
with its signature and an input example), the decision of the min-val-accuracy gate, and,
only when it passes, the alias ``candidate``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlcp import (
    Config,
    Gate,
    Reporter,
    Stage,
    alias_option,
    contract,
    describe,
    option,
    provenance,
    tracking,
)

from . import PIPELINE
from . import data as tabdata

MIN_VAL_ACCURACY = "min-val-accuracy"
GATES = (MIN_VAL_ACCURACY,)


@dataclass(kw_only=True)
class TrainConfig(Config):
    output_alias: str = alias_option(contract.CANDIDATE, reads=False)
    data: str | None = option(None, help="data set URI (empty: the newest published wine table)")
    c: float = option(
        1.0, help="inverse regularisation strength of the logistic regression", above=0
    )
    max_iter: int = option(500, help="solver iterations at most", min=1, max=100000)
    seed: int = option(0, help="random seed of the solver")
    min_val_accuracy: float = option(
        0.8,
        help="gate min-val-accuracy: the lowest validation accuracy that writes candidate",
        min=0,
        max=1,
    )


report = Reporter(PIPELINE, "train")


def params(cfg: TrainConfig) -> dict:
    return {
        "c": cfg.c,
        "max_iter": cfg.max_iter,
        "seed": cfg.seed,
        "min_val_accuracy": cfg.min_val_accuracy,
    }


def fit(cfg: TrainConfig, table: tabdata.Table):
    """The fitted model and its validation accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = table.part("train")
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=cfg.c, max_iter=cfg.max_iter, random_state=cfg.seed)
    ).fit(x, y)
    x_val, y_val = table.part("val")
    return model, float((model.predict(x_val) == y_val).mean())


def register(client, cfg: TrainConfig, model, table, read, run_id: str, tags=None) -> str:
    """Log the model in the active run and register it as a new version, tagged."""
    import mlflow
    from mlflow.models import infer_signature

    x_val, _ = table.part("val")
    example = x_val[:2]
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
    )
    describe.register_model(client, cfg.model_name, PIPELINE)
    created = client.create_model_version(
        cfg.model_name, source=info.model_uri, model_id=info.model_id
    )
    version = str(created.version)
    mlflow.set_tag(contract.VERSION_TAG, version)
    for key, value in {
        contract.PIPELINE_TAG: PIPELINE,
        **read.tags,
        contract.TRAIN_RUN_TAG: run_id,
        **(tags or {}),
    }.items():
        client.set_model_version_tag(cfg.model_name, version, key, value)
    return version


def train(cfg: TrainConfig) -> dict:
    import mlflow

    read, table = tabdata.read(cfg.data or tabdata.default_uri())
    client = tracking.client()
    name = tracking.run_name("logreg", {"c": cfg.c, "it": cfg.max_iter}, read.digest)
    with report.stage_run(cfg.model_name, name, params=params(cfg)) as run:
        tabdata.log(read, table, "training")
        provenance.note_seed("seed", cfg.seed)
        provenance.log_environment()
        model, val_acc = fit(cfg, table)
        mlflow.log_metric("val_accuracy", val_acc)
        version = register(client, cfg, model, table, read, run.info.run_id)
        report.describe_trained(client, cfg.model_name, version, read, "val_accuracy", val_acc)
        gate = Gate(MIN_VAL_ACCURACY, "val_accuracy", ">=", cfg.min_val_accuracy)
        report.judge([(gate, val_acc)], model=cfg.model_name, version=version)
    report.advance(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=f"training gate passed (val_accuracy {val_acc:.4f})",
        client=client,
    )
    return {
        "version": version,
        "val_accuracy": val_acc,
        "data_digest": read.digest,
        "run_id": run.info.run_id,
    }


STAGE = Stage(
    PIPELINE,
    "train",
    "train a scikit-learn classifier; writes candidate on a pass",
    TrainConfig,
    train,
    GATES,
    title="Tabular: train a scikit-learn classifier (writes candidate)",
    description=(
        "Trains a logistic regression on the versioned wine table, registers the version "
        "(an MLflow sklearn model), records the min-val-accuracy gate and points "
        "output-alias (candidate) at it only on a pass."
    ),
)
