"""The tabular side of ``mlcp reproduce``: the classifier trained again from a version's
recorded params on the same bytes, its test predictions set against the recorded model's."""

from __future__ import annotations

from mlcp import Reporter, lineage, recorded_params, runner, tracking

from . import PIPELINE, train
from . import data as tabdata

report = Reporter(PIPELINE, "reproduce")


def reproduce(request) -> dict:
    import mlflow
    import numpy as np

    params = request.params
    with recorded_params(request):
        cfg = train.TrainConfig(
            model_name=request.model,
            data=request.data_uri,
            c=float(params["c"]),
            max_iter=int(params["max_iter"]),
            seed=int(params["seed"]),
            min_val_accuracy=float(params.get("min_val_accuracy", 0)),
        )
    read, table = tabdata.read(request.data_uri)
    lineage.check_unchanged(read, request.data_digest, "the data set")
    client = tracking.client()
    name = tracking.run_name("logreg", {"c": cfg.c, "it": cfg.max_iter}, read.digest)
    with report.stage_run(cfg.model_name, name, params=train.params(cfg)) as run:
        mlflow.set_tags(dict(request.run_tags))
        tabdata.log(read, table, "training")
        runner.log_provenance(cfg)
        model, val_acc = train.fit(cfg, table)
        mlflow.log_metric("val_accuracy", val_acc)
        x, _ = table.part("test")
        recorded = mlflow.sklearn.load_model(f"models:/{request.model}/{request.version}")
        ours, theirs = model.predict_proba(x), recorded.predict_proba(x)
        predictions = {
            "split": "test",
            "count": len(x),
            "differing": int((ours.argmax(1) != theirs.argmax(1)).sum()),
            "max_abs_diff": float(np.abs(ours - theirs).max()) if len(x) else 0.0,
        }
        version = None
        if request.register:
            tags = dict(request.run_tags)
            info = train.log_model(model, table)
            version = runner.register(
                client, cfg.model_name, PIPELINE, info, read, run.info.run_id, tags
            )
    return {
        "run_id": run.info.run_id,
        "run_name": name,
        "params": {k: str(v) for k, v in train.params(cfg).items()},
        "metrics": {"val_accuracy": val_acc},
        "predictions": predictions,
        "version": version,
    }
