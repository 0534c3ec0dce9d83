"""The CV side of ``mlcp reproduce``: ResNet-18 trained again from a version's recorded params
on the same bytes, and its predictions on the test split set against those of the recorded
version's model, loaded from MLflow.

Given a ``steps.stages.reproduce.Request`` (the core resolves the version and checks the code);
returns what the core compares and records: the final ``val_accuracy`` and ``train_loss``,
the test predictions that differ, and the version registered when asked.
"""

from __future__ import annotations

from ..records import lineage, tracking
from ..spec import determinism
from ..stages import runner
from ..stages.reproduce import recorded_params
from ..stages.stage import Reporter
from . import PIPELINE, train
from . import data as cvdata

report = Reporter(PIPELINE, "reproduce")
SPLIT = "test"  # never trained on, never used to pick the version
COMPARED = ("val_accuracy", "train_loss")  # the last epoch's


def recorded_config(request) -> train.TrainConfig:
    """The training's config as its run recorded it, on the version's data."""
    params = request.params
    with recorded_params(request):
        weights = params.get("weights", "none")
        return train.TrainConfig(
            model_name=request.model,
            data=request.data_uri,
            epochs=int(params["epochs"]),
            lr=float(params["lr"]),
            batch_size=int(params["batch_size"]),
            image_size=int(params["image_size"]),
            seed=int(params["seed"]),
            weights=None if weights == "none" else weights,
            min_val_accuracy=float(params.get("min_val_accuracy", 0)),
            device=request.train_device,
        )


def outputs(model, x, batch_size: int = 256):
    """The model's logits for ``x``, on the CPU."""
    import numpy as np
    import torch

    model.eval()
    found = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            found.append(model(torch.from_numpy(x[start : start + batch_size])).numpy())
    return np.concatenate(found)


def compare(recorded, reproduced) -> dict:
    """The predictions (argmax) of two sets of logits: how many, how many differ, and the
    largest difference of any output."""
    import numpy as np

    differing = int((recorded.argmax(1) != reproduced.argmax(1)).sum())
    largest = float(np.abs(recorded - reproduced).max()) if len(recorded) else 0.0
    return {"split": SPLIT, "count": len(recorded), "differing": differing, "max_abs_diff": largest}


def reproduce(request) -> dict:
    import mlflow

    cfg = recorded_config(request)
    device = determinism.resolve_device(cfg.device)
    threads = determinism.recorded_threads(request.params)
    determinism.enable(device, threads)
    read, images = cvdata.read(request.data_uri)
    lineage.check_unchanged(read, request.data_digest, "the data set")
    if cfg.weights:
        report(f"warning: the starting weights {cfg.weights} are read as they are now (no digest)")
    data = train.prepare(cfg, read, images, device, threads)
    client = tracking.client()
    run_args = {"params": data.params, "system_metrics": True}
    with report.stage_run(cfg.model_name, data.name, **run_args) as run:
        mlflow.set_tags(dict(request.run_tags))
        cvdata.log(read, images, "training")
        runner.log_provenance(cfg)
        model, measured = train.fit(cfg, data, device, report)
        x_test = cvdata.preprocess(images.images[SPLIT], cfg.image_size)
        recorded_uri = f"models:/{request.model}/{request.version}"
        report(f"predicting the {SPLIT} split with {recorded_uri} and with the new model")
        recorded = mlflow.pytorch.load_model(recorded_uri, map_location="cpu")
        predictions = compare(outputs(recorded, x_test), outputs(model, x_test))
        version = None
        if request.register:
            tags = dict(request.run_tags)
            version = train.register(client, cfg, model, data, run.info.run_id, tags)
            report(f"registered {request.model} v{version} tagged {tags}")
    return {
        "run_id": run.info.run_id,
        "run_name": data.name,
        "params": {k: str(v) for k, v in data.params.items()},
        "metrics": {name: measured[name] for name in COMPARED},
        "predictions": predictions,
        "version": version,
    }
