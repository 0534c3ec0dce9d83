"""The CV chain end to end through the CLI, against the real MLflow server, S3 endpoint and
tritonserver of the session stack: aliases after each stage, one decision run per gate,
data lineage, and Triton's live slot following promote and rollback."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from steps import moves
from steps.contract import PROVENANCE_TAGS, REQUIRED_GATES_TAG
from steps.cv import data as cvdata
from steps.cv.pipeline import CV

from .conftest import unique

TRAIN = ("--epochs", "2", "--lr", "0.05", "--image-size", "32", "--min-val-accuracy", "0.5")
# Generous bounds: this test checks the plumbing, not the speed of a shared 2-core machine.
PERF = (
    "--users",
    "2",
    "--duration",
    "3",
    "--max-p95-ms",
    "5000",
    "--min-rps",
    "1",
    "--max-p95-regression-ms",
    "5000",
    "--max-rps-regression",
    "1000",
)
GATES = "min-val-accuracy,onnx-parity,accuracy,p95-latency,throughput,error-rate"


@pytest.fixture(scope="module")
def data_uri(stack_env):
    from .conftest import run_mlcp

    result = run_mlcp("data", "cv")
    assert result.code == 0, result.err
    uri = json.loads(result.out.strip().splitlines()[-1])["uri"]
    assert uri == f"s3://{stack_env['MLCP_BUCKET']}/data/{cvdata.DEFAULT_KEY}"
    return uri


def triton_live_answer(model: str) -> str:
    from steps.serving import triton

    _, images = cvdata.read(cvdata.default_uri())
    x = cvdata.preprocess(images.images["test"][:2], 32)
    logits, version = triton.Triton().infer(f"{model}-live", x)
    assert logits.shape == (2, 10)
    return version


def decisions(client, model: str, version: str) -> dict[str, object]:
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`mlcp.kind` = 'decision' AND tags.`mlcp.model` = '{model}' "
        f"AND tags.`mlcp.version` = '{version}'",
    )
    found: dict[str, object] = {}
    for run in runs:
        gate = run.data.tags["mlcp.gate"]
        assert gate not in found, f"two decision runs for gate {gate}"
        found[gate] = run
    return found


def run_chain(mlcp, model: str, seed: str) -> dict:
    """The local runner: every stage as its own process, then promote."""
    result = mlcp(
        "cv",
        "chain",
        "--model-name",
        model,
        "--epochs",
        "2",
        "--seed",
        seed,
        "--duration",
        "3",
        "--train-args",
        "--min-val-accuracy 0.5",
        "--evaluate-args",
        "--min-accuracy 0.5 --max-regression 1",
        "--perf-test-args",
        " ".join(PERF),
        timeout=900,
    )
    assert result.code == 0, result.err[-3000:]
    for stage in ("train", "deploy", "evaluate", "perf-test", "promote"):
        assert f"==> {stage}" in result.err  # progress per stage
    assert f"roll back with: mlcp rollback --model-name {model}" in result.out
    return json.loads(result.out[result.out.index("{") : result.out.index("}") + 1])


def test_cv_chain_promote_and_rollback_follow_triton(mlcp, models, client, data_uri):
    model = unique("digits")
    # train -> candidate
    train = mlcp("cv", "train", "--model-name", model, *TRAIN, timeout=600)
    assert train.code == 0, train.err[-3000:]
    assert "epoch 2/2" in train.err  # progress per epoch
    assert models.aliases(model) == {"candidate": "1"}
    # deploy -> staged, evaluate -> evaluated, perf-test -> benchmarked
    assert mlcp("cv", "deploy", "--model-name", model, timeout=600).code == 0
    assert models.aliases(model) == {"candidate": "1", "staged": "1"}
    evaluate = mlcp("cv", "evaluate", "--model-name", model, "--min-accuracy", "0.5")
    assert evaluate.code == 0, evaluate.err[-3000:]
    assert models.aliases(model)["evaluated"] == "1"
    perf = mlcp("cv", "perf-test", "--model-name", model, *PERF, timeout=600)
    assert perf.code == 0, perf.err[-3000:]
    assert models.aliases(model)["benchmarked"] == "1"
    # one decision run per gate, with its thresholds and verdict
    found = decisions(client, model, "1")
    assert sorted(found) == sorted(GATES.split(","))
    assert found["accuracy"].data.params["threshold"] == "0.5"
    assert found["accuracy"].data.params["op"] == ">="
    assert found["p95-latency"].data.params["threshold"] == "5000"
    assert all(run.data.tags["mlcp.verdict"] == "pass" for run in found.values())
    # data digest and source on the train and evaluate runs
    digest = cvdata.read(data_uri)[0].digest
    for stage in ("train", "evaluate"):
        runs = client.search_runs(
            [client.get_experiment_by_name(f"cv/{stage}").experiment_id],
            f"tags.`mlcp.model` = '{model}' AND tags.`mlcp.kind` = 'stage'",
        )
        assert len(runs) == 1
        dataset = runs[0].inputs.dataset_inputs[0].dataset
        assert dataset.digest == digest and data_uri in dataset.source
    # promote -> live: Triton's live slot answers with v1
    assert (
        mlcp(
            "promote",
            "--model-name",
            model,
            "--source-alias",
            "benchmarked",
            "--target-alias",
            "live",
            "--require-gates",
            GATES,
        ).code
        == 0
    )
    assert triton_live_answer(model) == "1"
    # a second training and promotion: v2 live, v1 previous, Triton follows
    summary = run_chain(mlcp, model, seed="1")
    assert (summary["live"], summary["previous"]) == ("2", "1")
    assert summary["data_digest"] == digest and summary["accuracy"] > 0.5
    assert models.aliases(model) == {
        "candidate": "2",
        "staged": "2",
        "evaluated": "2",
        "benchmarked": "2",
        "live": "2",
        "previous": "1",
    }
    assert triton_live_answer(model) == "2"
    # rollback: the registry and the traffic go back to v1
    rollback = mlcp("rollback", "--model-name", model)
    assert rollback.code == 0, rollback.err
    assert models.aliases(model)["live"] == "1" and "previous" not in models.aliases(model)
    assert triton_live_answer(model) == "1"
    assert client.get_model_version(model, "2").tags["mlcp.rolled_back"] == "true"
    # every run the chains created carries its provenance: stages, decisions, alias moves
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.`mlcp.model` = '{model}'"
    )
    kinds = {run.data.tags["mlcp.kind"] for run in runs}
    assert {"stage", "decision", "alias-move"} <= kinds
    for run in runs:
        missing = [key for key in PROVENANCE_TAGS if not run.data.tags.get(key)]
        assert not missing, (run.data.tags["mlcp.kind"], run.info.run_name, missing)
    trainings = [r for r in runs if r.data.tags.get("mlcp.stage") == "train"]
    assert {r.data.tags["mlcp.seeds"] for r in trainings} == {"seed=0", "seed=1"}
    assert {r.data.tags["mlflow.source.name"] for r in trainings} == {
        "python -m steps.cli cv train"
    }


def test_failing_gate_stops_the_chain_and_moves_nothing(mlcp, models, client, data_uri):
    model = unique("digits-gate")
    ok = mlcp("cv", "train", "--model-name", model, *TRAIN, timeout=600)
    assert ok.code == 0, ok.err[-2000:]
    # registering the model recorded its policy: every gate of the CV pipeline
    policy = client.get_registered_model(model).tags[REQUIRED_GATES_TAG]
    assert policy.split(",") == list(CV.gates)
    strict = mlcp(
        "cv",
        "train",
        "--model-name",
        model,
        "--epochs",
        "1",
        "--min-val-accuracy",
        "0.9999",
        timeout=600,
    )
    assert strict.code == 3
    assert "min-val-accuracy" in strict.err
    assert models.aliases(model) == {"candidate": "1"}
    assert client.get_model_version(model, "2").tags["mlcp.gate.min-val-accuracy.verdict"] == (
        "fail"
    )
    before = moves.history(client, model)
    impossible = mlcp("cv", "deploy", "--model-name", model, "--tolerance", "1e-30", timeout=600)
    assert impossible.code == 3
    assert models.aliases(model) == {"candidate": "1"}
    assert moves.history(client, model) == before


def test_bad_inputs_are_answered_clearly_and_move_nothing(
    mlcp, models, client, data_uri, stack_env
):
    import boto3

    from steps import stack

    bucket = stack_env["MLCP_BUCKET"]
    s3 = boto3.client("s3")
    model = unique("digits-bad")
    # missing data file
    missing = mlcp("cv", "train", "--model-name", model, "--data", f"s3://{bucket}/nope.npz")
    assert missing.code == 2 and "does not exist" in missing.err
    # corrupt data file
    s3.put_object(Bucket=bucket, Key="bad/corrupt.npz", Body=b"not an npz at all")
    corrupt = mlcp("cv", "train", "--model-name", model, "--data", f"s3://{bucket}/bad/corrupt.npz")
    assert corrupt.code == 2 and "not a readable .npz" in corrupt.err
    # wrong image shape
    buf = io.BytesIO()
    arrays = {"classes": np.array(["a", "b"])}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.zeros((4, 64), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.zeros(4, dtype=np.int64)
    np.savez(buf, **arrays)
    s3.put_object(Bucket=bucket, Key="bad/shape.npz", Body=buf.getvalue())
    shape = mlcp("cv", "train", "--model-name", model, "--data", f"s3://{bucket}/bad/shape.npz")
    assert shape.code == 2 and "[N, H, W]" in shape.err and "(4, 64)" in shape.err
    # nothing was registered by those
    assert client.search_registered_models(f"name = '{model}'") == []
    # a trained candidate, then deploys that must refuse
    assert mlcp("cv", "train", "--model-name", model, *TRAIN, timeout=600).code == 0
    backend = mlcp("cv", "deploy", "--model-name", model, "--backend", "tensorrt")
    assert backend.code == 2 and "unknown Triton backend 'tensorrt'" in backend.err
    port = stack.free_port()
    down = mlcp("cv", "deploy", "--model-name", model, "--triton-url", f"http://127.0.0.1:{port}")
    assert down.code == 1 and "not reachable" in down.err and str(port) in down.err
    assert models.aliases(model) == {"candidate": "1"}
