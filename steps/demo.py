"""The core demo: a tiny real model carried through the alias chain on the local stack.

Until the CV and LLM pipelines land, ``make demo`` runs this: it publishes a generated,
seeded data set to the S3 endpoint, trains a small logistic-regression model with numpy
(the data digest goes into the run name and lineage), records a training gate, registers
the version, walks it ``candidate -> staged -> evaluated -> benchmarked`` with a gate per
stage, and promotes it to ``live``. Run twice, it leaves v2 live and v1 previous.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time

from . import gates, lineage, promote, settings, tracking
from .errors import MlcpError

MODEL = "demo-logreg"
PIPELINE = "demo"


def _say(stage: str, message: str) -> None:
    print(f"[{stage}] {message}", flush=True)


def make_data(seed: int = 7, rows: int = 600) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    x = rng.normal(0, 1, (rows, 2)) + np.where(y[:, None] == 1, 1.2, -1.2)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def train(x, y, lr: float, epochs: int):
    import numpy as np

    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(epochs):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        w -= lr * x.T @ (p - y) / len(y)
        b -= lr * float(np.mean(p - y))
    return w, b


def accuracy(w, b, x, y) -> float:
    return float((((x @ w + b) > 0).astype(int) == y).mean())


def run(lr: float = 0.5, epochs: int = 50) -> dict:
    import mlflow
    import numpy as np

    settings.load_env()
    client = tracking.client()
    uri = f"{os.environ.get('MLCP_DATA_ROOT', 's3://mlcp/data')}/demo/blobs/v1/data.npz"
    try:
        lineage.read(uri)
    except MlcpError:
        lineage.write(uri, make_data())
        _say("data", f"published {uri}")
    data = lineage.read(uri)
    arrays = np.load(io.BytesIO(data.data))
    x, y = arrays["x"], arrays["y"]
    split = int(len(y) * 0.8)
    name = tracking.run_name("logreg", {"lr": lr, "e": epochs}, data.digest)
    with tracking.stage_run(
        PIPELINE, "train", MODEL, name, params={"lr": lr, "epochs": epochs}, system_metrics=False
    ) as run:
        lineage.log(
            data,
            name="blobs",
            num_rows=len(y),
            columns={"x0": "double", "x1": "double", "y": "long"},
        )
        _say("train", f"training {name}")
        w, b = train(x[:split], y[:split], lr, epochs)
        val = accuracy(w, b, x[split:], y[split:])
        mlflow.log_metric("val_accuracy", val)
        mlflow.log_text(json.dumps({"w": w.tolist(), "b": b}), "model/weights.json")
        try:
            client.create_registered_model(MODEL, tags={"mlcp.pipeline": PIPELINE})
        except Exception:
            pass
        version = str(
            client.create_model_version(
                MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            ).version
        )
        mlflow.set_tag("mlcp.version", version)
        decision = gates.evaluate(
            gates.Gate("min-val-accuracy", "val_accuracy", ">=", 0.8),
            model=MODEL,
            version=version,
            value=val,
            pipeline=PIPELINE,
            stage="train",
        )
        gates.enforce([decision])
        _say("train", f"v{version} val_accuracy={val:.3f} gate {decision.verdict}")
    # train writes candidate; each later stage of this demo writes the next alias
    promote.assign(MODEL, "candidate", version, reason="training gate passed", client=client)
    for source, target in (
        ("candidate", "staged"),
        ("staged", "evaluated"),
        ("evaluated", "benchmarked"),
    ):
        promote.promote(MODEL, source, target, reason=f"demo {target}", client=client)
        _say(target, f"v{version} is {target}")
    started = time.monotonic()
    outcome = promote.promote(
        MODEL,
        "benchmarked",
        settings.LIVE,
        require_gates=["min-val-accuracy"],
        reason="demo release",
        client=client,
    )
    _say(
        "promote",
        "; ".join(m.describe() for m in outcome.moves) + f" in {time.monotonic() - started:.2f} s",
    )
    current = {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}
    summary = {
        "model": MODEL,
        "live": current.get("live"),
        "previous": current.get("previous"),
        "val_accuracy": round(val, 4),
        "data_digest": data.digest,
        "data": data.uri,
    }
    print(json.dumps(summary, indent=2))
    print(f"roll back with: mlcp rollback --model-name {MODEL}")
    return summary


if __name__ == "__main__":
    try:
        run()
    except MlcpError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
