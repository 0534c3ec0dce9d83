"""``mlcp cv evaluate``: reads ``staged``, scores the test split through Triton, writes
``evaluated``.

The test images go through the ``<model>-staged`` slot in batches (the same path traffic
takes), never through a local copy of the model. Logged: accuracy, per-class accuracy and a
confusion-matrix picture. Gate ``accuracy``: a minimum, and no worse than the version now
live by more than ``max_regression`` (the live version's own recorded decision).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import gates, tracking
from ..contract import EVALUATED, STAGED
from ..declare import Config, Stage, alias_option, option
from ..errors import MlcpError
from ..serving import triton
from ..stage import Reporter, data_source, resolve_input
from . import IMAGE_SIZE_TAG, PIPELINE
from . import data as cvdata
from .deploy import require_staged

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


report = Reporter(PIPELINE, "evaluate")


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

    server = triton.Triton(cfg.triton_url)
    server.require_live()
    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    slot = require_staged(server, cfg.model_name, version)
    data_uri = data_source(cfg.model_name, version, tags, cfg.data)
    image_size = int(tags.get(IMAGE_SIZE_TAG, "32"))
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
    with report.stage_run(cfg.model_name, name, version=version, params=params):
        cvdata.log(read, images, "evaluation")
        predictions = []
        for start in range(0, len(y), cfg.batch_size):
            logits, answered = server.infer(slot, x[start : start + cfg.batch_size])
            if answered != version:
                raise MlcpError(
                    f"{slot} answered with v{answered} during the evaluation of "
                    f"v{version}: the slot changed under us"
                )
            predictions.append(logits.argmax(1))
            report(f"{min(start + cfg.batch_size, len(y))}/{len(y)} test images scored")
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
        gate = gates.Gate(ACCURACY, "accuracy", ">=", cfg.min_accuracy, cfg.max_regression)
        report.judge(
            [(gate, accuracy)],
            model=cfg.model_name,
            version=version,
            evidence={"test_images": int(len(y)), **per_class},
        )
    report.advance(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=f"accuracy {accuracy:.4f} on {len(y)} test images",
        client=client,
    )
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
