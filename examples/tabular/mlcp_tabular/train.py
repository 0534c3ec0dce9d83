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
    option,
    runner,
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


def log_model(model, table):
    """Log the model in the active run: an MLflow sklearn model, its signature and example."""
    import mlflow
    from mlflow.models import infer_signature

    example = table.part("val")[0][:2]
    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
    )


class Train(runner.Trainer):
    report = Reporter(PIPELINE, "train")
    data = tabdata
    dataset = tabdata.DATASET

    def named_after(self, t):
        return "logreg"

    def run_name(self, t):
        return {"c": t.cfg.c, "it": t.cfg.max_iter}

    def params(self, t):
        return params(t.cfg)

    def fit(self, t):
        model, val_acc = fit(t.cfg, t.data)
        gate = Gate(MIN_VAL_ACCURACY, "val_accuracy", ">=", t.cfg.min_val_accuracy)
        return runner.Trained(
            model_info=log_model(model, t.data),
            metric="val_accuracy",
            value=val_acc,
            metrics={"val_accuracy": val_acc},
            checks=[(gate, val_acc)],
            result={"val_accuracy": val_acc},
        )


STAGE = Stage(
    PIPELINE,
    "train",
    "train a scikit-learn classifier; writes candidate on a pass",
    TrainConfig,
    Train(),
    GATES,
    title="Tabular: train a scikit-learn classifier (writes candidate)",
    description=(
        "Trains a logistic regression on the versioned wine table, registers the version "
        "(an MLflow sklearn model), records the min-val-accuracy gate and points "
        "output-alias (candidate) at it only on a pass."
    ),
)
