"""``mlcp cv evaluate``: reads ``staged``, scores the test split through Triton, writes
``evaluated``.

The test images go through the ``<model>-staged`` slot in batches (the same path traffic
takes), never through a local copy of the model. Logged: accuracy, per-class accuracy and a
confusion-matrix picture. Gate ``accuracy``: a minimum, and no worse than the version now
live by more than ``max_regression`` (the live version's own recorded decision).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .. import aliases, gates, moves, tracking
from ..contract import EVALUATED, STAGED, staged_slot
from ..declare import Config, Stage, alias_option, option
from ..errors import BadInput, MlcpError
from ..serving import triton
from . import PIPELINE
from . import data as cvdata

ACCURACY = "accuracy"
GATES = (ACCURACY,)


@dataclass(kw_only=True)
class EvaluateConfig(Config):
    input_alias: str = alias_option(STAGED, reads=True)
    output_alias: str = alias_option(EVALUATED, reads=False)
    data: str | None = option(None, help="data set URI (empty: the one the version was trained on)")
    min_accuracy: float = option(0.8, help="gate accuracy: the lowest test accuracy", min=0, max=1)
    max_regression: float = option(
        0.02, help="gate accuracy: the largest drop allowed against the live version", min=0
    )
    batch_size: int = option(64, help="images per inference request", min=1, max=4096)
    triton_url: str | None = triton.url_option()


def _say(message: str) -> None:
    print(f"[cv evaluate] {message}", file=sys.stderr, flush=True)


def confusion_png(matrix, classes, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(cfg: EvaluateConfig) -> dict:
    import tempfile
    from pathlib import Path

    import mlflow
    import numpy as np

    from .. import lineage

    server = triton.Triton(cfg.triton_url)
    server.require_live()
    client = tracking.client()
    version = aliases.resolve(client, cfg.model_name, cfg.input_alias)
    tags = aliases.get_version(client, cfg.model_name, version).tags
    slot = staged_slot(cfg.model_name)
    served = server.served_versions(slot)
    if served != [version]:
        raise MlcpError(
            f"Triton slot {slot} serves {served or 'nothing'}, not v{version}: "
            f"run `mlcp cv deploy --model-name {cfg.model_name}` first"
        )
    data_uri = cfg.data or tags.get("mlcp.data.source")
    if not data_uri:
        raise BadInput(f"no --data given and {cfg.model_name} v{version} names no data set")
    image_size = int(tags.get("mlcp.image_size", "32"))
    read, images = cvdata.read(data_uri)
    x = cvdata.preprocess(images.images["test"], image_size)
    y = images.labels["test"]
    name = tracking.run_name(cfg.model_name, {"v": version}, read.digest)
    params = {
        "input_alias": cfg.input_alias,
        "slot": slot,
        "min_accuracy": cfg.min_accuracy,
        "max_regression": cfg.max_regression,
        "batch_size": cfg.batch_size,
    }
    with tracking.stage_run(
        PIPELINE,
        "evaluate",
        cfg.model_name,
        name,
        version=version,
        params=params,
        system_metrics=False,
    ):
        lineage.log(
            read,
            name="images",
            num_rows=images.rows(),
            columns={"image": "binary", "label": "long"},
            context="evaluation",
        )
        predictions = []
        for start in range(0, len(y), cfg.batch_size):
            logits, answered = server.infer(slot, x[start : start + cfg.batch_size])
            if answered != version:
                raise MlcpError(
                    f"{slot} answered with v{answered} during the evaluation of "
                    f"v{version}: the slot changed under us"
                )
            predictions.append(logits.argmax(1))
            _say(f"{min(start + cfg.batch_size, len(y))}/{len(y)} test images scored")
        predicted = np.concatenate(predictions)
        accuracy = float((predicted == y).mean())
        k = len(images.classes)
        matrix = np.zeros((k, k), dtype=np.int64)
        np.add.at(matrix, (y, predicted), 1)
        per_class = {
            f"class_{c}_accuracy": float(matrix[i, i] / max(matrix[i].sum(), 1))
            for i, c in enumerate(images.classes)
        }
        mlflow.log_metrics({"accuracy": accuracy, **per_class})
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "confusion_matrix.png"
            confusion_png(matrix, images.classes, png)
            mlflow.log_artifact(str(png))
        mlflow.log_dict(
            {"classes": images.classes, "matrix": matrix.tolist()}, "confusion_matrix.json"
        )
        decision = gates.evaluate(
            gates.Gate(ACCURACY, "accuracy", ">=", cfg.min_accuracy, cfg.max_regression),
            model=cfg.model_name,
            version=version,
            value=accuracy,
            pipeline=PIPELINE,
            stage="evaluate",
            evidence={"test_images": int(len(y)), **per_class},
        )
        _say(
            f"v{version} accuracy {accuracy:.4f}: {decision.verdict} "
            f"({'; '.join(decision.reasons)})"
        )
        gates.enforce([decision])
    moves.assign(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=f"accuracy {accuracy:.4f} on {len(y)} test images",
        client=client,
    )
    _say(f"{cfg.model_name}@{cfg.output_alias} -> v{version}")
    return {"version": version, "accuracy": accuracy, "data_digest": read.digest}


STAGE = Stage(
    PIPELINE,
    "evaluate",
    "score the test split through Triton",
    EvaluateConfig,
    evaluate,
    GATES,
    title="CV: evaluate through Triton (staged -> evaluated)",
    description=(
        "Sends the test split through Triton's <model>-staged slot; records accuracy, "
        "per-class accuracy and the confusion matrix; the accuracy gate (a minimum, and no "
        "worse than live by more than max-regression) decides output-alias (evaluated)."
    ),
)
