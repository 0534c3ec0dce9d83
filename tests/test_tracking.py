"""Tracking conventions (steps.records.tracking) against the real MLflow server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest

from steps.base.errors import MlcpError
from steps.records import tracking

from .conftest import unique


def test_run_name_says_what_ran():
    assert (
        tracking.run_name("resnet18", {"lr": 0.05, "bs": 64, "e": 3}, "1a2b3c4d9999")
        == "resnet18-lr0.05-bs64-e3-data-1a2b3c4d"
    )
    assert tracking.run_name("resnet18") == "resnet18"
    assert tracking.run_name("resnet18", {"lr": 0.0001, "wd": 1e-5}) == "resnet18-lr0.0001-wd1e-05"
    assert tracking.run_name("m", {"lr": 0.1}, "") == "m-lr0.1"
    assert tracking.run_name("m", {"lr": 1.0, "opt": "sgd"}, "abc") == "m-lr1-optsgd-data-abc"


def test_experiment_name():
    assert tracking.experiment_name("cv", "train") == "cv/train"
    assert tracking.experiment_name("llm", "perf-test") == "llm/perf-test"


def test_stage_run_uses_the_stage_experiment_and_tags(client, monkeypatch):
    monkeypatch.setenv("MLCP_ACTOR", "alice")
    monkeypatch.delenv("ARGO_WORKFLOW_NAME", raising=False)
    monkeypatch.delenv("ARGO_WORKFLOW_UID", raising=False)
    pipeline, model = unique("pipe"), unique("model")
    with tracking.stage_run(
        pipeline,
        "train",
        model,
        "resnet18-lr0.05",
        version=4,
        params={"lr": 0.05, "epochs": 3},
        tags={"team": "vision"},
        system_metrics=False,
    ) as run:
        assert mlflow.active_run().info.run_id == run.info.run_id
    assert mlflow.active_run() is None

    finished = client.get_run(run.info.run_id)
    experiment = client.get_experiment(finished.info.experiment_id)
    assert experiment.name == f"{pipeline}/train"
    assert finished.info.status == "FINISHED"
    assert finished.info.run_name == "resnet18-lr0.05"
    tags = finished.data.tags
    assert tags["mlcp.pipeline"] == pipeline
    assert tags["mlcp.stage"] == "train"
    assert tags["mlcp.model"] == model
    assert tags["mlcp.actor"] == "alice"
    assert tags["mlcp.kind"] == "stage"
    assert tags["mlcp.version"] == "4"
    assert tags["team"] == "vision"
    assert not any(key.startswith("mlcp.argo.") for key in tags)
    assert finished.data.params == {"lr": "0.05", "epochs": "3"}

    # a second stage run of the same pipeline and stage lands in the same experiment
    with tracking.stage_run(pipeline, "train", model, "again", system_metrics=False) as second:
        pass
    assert second.info.experiment_id == finished.info.experiment_id
    assert "mlcp.version" not in client.get_run(second.info.run_id).data.tags


def test_stage_run_records_the_argo_workflow(client, monkeypatch):
    monkeypatch.setenv("ARGO_WORKFLOW_NAME", "cv-pipeline-x7k2p")
    monkeypatch.setenv("ARGO_WORKFLOW_UID", "4f1c-uid")
    with tracking.stage_run(
        unique("pipe"), "evaluate", unique("model"), "eval", system_metrics=False
    ) as run:
        pass
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mlcp.argo.workflow_name"] == "cv-pipeline-x7k2p"
    assert tags["mlcp.argo.workflow_uid"] == "4f1c-uid"


def test_stage_run_logs_system_metrics(client):
    def sampled() -> list[str]:
        metrics = client.get_run(run.info.run_id).data.metrics
        return [key for key in metrics if key.startswith("system/")]

    with tracking.stage_run(
        unique("pipe"), "train", unique("model"), "sysmetrics", system_metrics=True
    ) as run:
        deadline = time.monotonic() + 30  # the sampler logs every 2 s: poll until it has
        while not sampled() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert sampled(), client.get_run(run.info.run_id).data.metrics


def test_stage_run_without_system_metrics_logs_none(client):
    with tracking.stage_run(
        unique("pipe"), "train", unique("model"), "quiet", system_metrics=False
    ) as run:
        time.sleep(2.5)  # longer than the sampling interval: a sampler would have logged
    metrics = client.get_run(run.info.run_id).data.metrics
    assert not any(key.startswith("system/") for key in metrics), metrics


def test_exception_inside_stage_run_ends_it_failed(client):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.stage_run(
            unique("pipe"), "train", unique("model"), "boom", system_metrics=False
        ) as run:
            raise RuntimeError("boom")
    assert mlflow.active_run() is None
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_stage_run_on_unreachable_server_is_an_mlcp_error(client, monkeypatch):
    from steps.base import settings
    from steps.local import stack

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{stack.free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    try:
        with pytest.raises(MlcpError, match="cannot start an MLflow run"):
            with tracking.stage_run("p", "s", "m", "n", system_metrics=False):
                pass
        assert mlflow.active_run() is None
    finally:
        monkeypatch.undo()
        mlflow.set_tracking_uri(settings.tracking_uri())


def test_ensure_experiment_is_safe_under_concurrency(client):
    name = unique("race") + "/train"
    barrier = threading.Barrier(8)

    def ensure(_):
        barrier.wait()
        return tracking.ensure_experiment(client, name)

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(ensure, range(8)))
    assert len(set(ids)) == 1
    assert client.get_experiment_by_name(name).experiment_id == ids[0]


def test_ensure_experiment_restores_a_deleted_experiment(client):
    name = unique("deleted") + "/train"
    experiment_id = tracking.ensure_experiment(client, name)
    assert tracking.ensure_experiment(client, name) == experiment_id
    client.delete_experiment(experiment_id)
    assert tracking.ensure_experiment(client, name) == experiment_id
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
