"""Quality gates (steps.gates): validation, judgement, and the decision records they leave."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from steps import gates, tracking
from steps.errors import BadInput, GateFailed, RecordFailed

from .conftest import unique

# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "Accuracy"},  # upper case
        {"name": "has space"},
        {"name": ""},
        {"name": "-lead"},
        {"op": "=="},
        {"op": "=>"},
        {"threshold": math.nan},
        {"threshold": "0.5"},
        {"max_regression": -0.01},
        {"max_regression": math.nan},
    ],
)
def test_gate_rejects_invalid_definitions(kwargs):
    fields = {"name": "accuracy", "metric": "accuracy", "op": ">=", "threshold": 0.5, **kwargs}
    with pytest.raises(BadInput) as info:
        gates.Gate(**fields)
    assert info.value.exit_code == 2


def test_gate_accepts_every_comparison():
    for op in (">=", ">", "<=", "<"):
        assert gates.Gate("g", "m", op, 1).op == op
    assert gates.Gate("p95_latency-2", "p95_ms", "<=", 50, max_regression=0).max_regression == 0


def test_gate_from_dict_parses_numbers():
    gate = gates.Gate.from_dict(
        {"name": "acc", "metric": "accuracy", "op": ">=", "threshold": "0.8", "max_regression": "1"}
    )
    assert gate == gates.Gate("acc", "accuracy", ">=", 0.8, 1.0)
    assert (
        gates.Gate.from_dict(
            {
                "name": "acc",
                "metric": "accuracy",
                "op": ">=",
                "threshold": 1,
                "max_regression": None,
            }
        ).max_regression
        is None
    )


@pytest.mark.parametrize(
    "data",
    [
        {"metric": "accuracy", "op": ">=", "threshold": 0.8},
        {"name": "acc", "op": ">=", "threshold": 0.8},
        {"name": "acc", "metric": "accuracy", "threshold": 0.8},
        {"name": "acc", "metric": "accuracy", "op": ">="},
        {"name": "acc", "metric": "accuracy", "op": ">=", "threshold": "high"},
        {"name": "acc", "metric": "accuracy", "op": ">=", "threshold": None},
        {"name": "acc", "metric": "accuracy", "op": ">=", "threshold": 1, "max_regression": "x"},
    ],
)
def test_gate_from_dict_bad_definition_is_bad_input(data):
    with pytest.raises(BadInput, match="invalid gate definition"):
        gates.Gate.from_dict(data)


# ---------------------------------------------------------------- judge


def test_judge_higher_is_better():
    gate = gates.Gate("acc", "accuracy", ">=", 0.8)
    assert gate.judge(0.8, None)[0] is True
    assert gate.judge(0.85, None)[0] is True
    ok, reasons = gate.judge(0.79, None)
    assert ok is False
    assert "misses >= 0.8" in reasons[0]
    assert gates.Gate("acc", "accuracy", ">", 0.8).judge(0.8, None)[0] is False


def test_judge_lower_is_better():
    gate = gates.Gate("lat", "p95_ms", "<=", 50)
    assert gate.judge(50, None)[0] is True
    assert gate.judge(12.5, None)[0] is True
    assert gate.judge(50.1, None)[0] is False
    assert gates.Gate("lat", "p95_ms", "<", 50).judge(50, None)[0] is False


def test_judge_unmeasured_value_fails():
    gate = gates.Gate("acc", "accuracy", ">=", 0.0)
    for value in (None, math.nan):
        ok, reasons = gate.judge(value, 0.9)
        assert ok is False
        assert "not measured" in reasons[0]


def test_judge_max_regression_higher_is_better():
    gate = gates.Gate("acc", "accuracy", ">=", 0.5, max_regression=0.02)
    assert gate.judge(0.89, 0.90)[0] is True
    assert gate.judge(0.88, 0.90)[0] is True  # exactly at the limit (float noise tolerated)
    ok, reasons = gate.judge(0.87, 0.90)
    assert ok is False
    assert any("beyond 0.02 of live" in r for r in reasons)
    assert gate.judge(0.99, 0.90)[0] is True  # better than live
    assert gate.judge(0.87, None)[0] is True  # no baseline: threshold only
    assert gate.judge(0.40, 0.41)[0] is False  # within regression but under the threshold


def test_judge_max_regression_lower_is_better():
    gate = gates.Gate("lat", "p95_ms", "<=", 100, max_regression=5)
    assert gate.judge(84, 80)[0] is True
    assert gate.judge(85, 80)[0] is True
    assert gate.judge(86, 80)[0] is False  # 6 ms slower than live
    assert gate.judge(60, 80)[0] is True  # faster than live
    assert gate.judge(120, 118)[0] is False  # within regression but over the threshold


# ---------------------------------------------------------------- evaluate / records


def decision_runs(client, model, gate_name=None):
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    flt = f"tags.`mlcp.kind` = 'decision' AND tags.`mlcp.model` = '{model}'"
    if gate_name:
        flt += f" AND tags.`mlcp.gate` = '{gate_name}'"
    return client.search_runs(experiment_ids, filter_string=flt, max_results=100)


def test_evaluate_records_one_decision_run_with_everything(models, client, tmp_path):
    name = models.create(1)
    gate = gates.Gate("accuracy", "accuracy", ">=", 0.5, max_regression=0.02)
    decision = gates.evaluate(
        gate,
        model=name,
        version="1",
        value=0.91,
        pipeline="test",
        stage="evaluate",
        evidence={"dataset": "val-v2"},
    )
    assert decision.passed and decision.verdict == "pass"
    runs = decision_runs(client, name)
    assert [r.info.run_id for r in runs] == [decision.run_id]
    run = client.get_run(decision.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "test/evaluate"
    params = run.data.params
    assert params["metric"] == "accuracy"
    assert params["op"] == ">="
    assert params["threshold"] == "0.5"
    assert params["max_regression"] == "0.02"
    assert params["version"] == "1"
    assert params["gate"] == "accuracy"
    assert run.data.metrics["value"] == pytest.approx(0.91)
    assert "live_value" not in run.data.metrics  # nothing live yet
    tags = run.data.tags
    assert tags["mlcp.verdict"] == "pass"
    assert tags["mlcp.gate"] == "accuracy"
    assert tags["mlcp.kind"] == "decision"
    assert tags["mlcp.model"] == name and tags["mlcp.version"] == "1"
    assert "mlflow.parentRunId" not in tags  # no stage run was active

    path = client.download_artifacts(decision.run_id, "decision.json", str(tmp_path))
    recorded = json.loads(Path(path).read_text())
    assert recorded["verdict"] == "pass"
    assert recorded["model"] == name and recorded["version"] == "1"
    assert recorded["value"] == pytest.approx(0.91)
    assert recorded["gate"] == {
        "name": "accuracy",
        "metric": "accuracy",
        "op": ">=",
        "threshold": 0.5,
        "max_regression": 0.02,
    }
    assert recorded["evidence"] == {"dataset": "val-v2"}
    assert recorded["run_id"] == decision.run_id
    assert recorded["reasons"]

    version_tags = client.get_model_version(name, "1").tags
    assert version_tags["mlcp.gate.accuracy.verdict"] == "pass"
    assert version_tags["mlcp.gate.accuracy.run_id"] == decision.run_id


def test_evaluate_nests_the_decision_under_the_active_stage_run(models, client):
    name = models.create(1)
    with tracking.stage_run("test", "evaluate", name, "eval", system_metrics=False) as stage:
        decision = gates.evaluate(
            gates.Gate("latency", "p95_ms", "<=", 50),
            model=name,
            version="1",
            value=20.0,
            pipeline="test",
            stage="evaluate",
        )
    run = client.get_run(decision.run_id)
    assert run.data.tags["mlflow.parentRunId"] == stage.info.run_id
    assert run.info.run_id != stage.info.run_id
    assert run.info.experiment_id == stage.info.experiment_id
    assert run.data.params["op"] == "<=" and run.data.params["max_regression"] == "none"


def test_evaluate_failing_gate_tags_the_version_fail(models, client):
    name = models.create(1)
    decision = gates.evaluate(
        gates.Gate("latency", "p95_ms", "<=", 50),
        model=name,
        version="1",
        value=80.0,
        pipeline="test",
        stage="perf-test",
    )
    assert not decision.passed
    assert client.get_run(decision.run_id).data.tags["mlcp.verdict"] == "fail"
    tags = client.get_model_version(name, "1").tags
    assert tags["mlcp.gate.latency.verdict"] == "fail"
    assert tags["mlcp.gate.latency.run_id"] == decision.run_id
    [status] = gates.recorded(client, name, "1", ["latency"])
    assert (status.verdict, status.run_id) == ("fail", decision.run_id)


def test_live_baseline_is_the_live_versions_own_decision(models, client):
    # given v1 live with a recorded 0.90, and v2 (not live) evaluated later at 0.95
    name = models.create(3)
    gate = gates.Gate("accuracy", "accuracy", ">=", 0.5, max_regression=0.02)

    def judge(version, value):
        return gates.evaluate(
            gate, model=name, version=version, value=value, pipeline="test", stage="evaluate"
        )

    judge("1", 0.90)
    models.set_alias(name, "live", "1")
    second = judge("2", 0.95)
    assert second.passed and (second.live_version, second.live_value) == ("1", 0.90)
    # when v3 scores 0.87: 0.03 below live (not 0.08 below the newest run)
    worse = judge("3", 0.87)
    assert worse.verdict == "fail"
    assert (worse.live_version, worse.live_value) == ("1", pytest.approx(0.90))
    run = client.get_run(worse.run_id)
    assert run.data.metrics["live_value"] == pytest.approx(0.90)
    assert run.data.params["live_version"] == "1"
    # when v3 scores 0.89: within 0.02 of live v1, though 0.06 below v2's newer run
    close = judge("3", 0.89)
    assert close.verdict == "pass", close.reasons
    assert close.live_value == pytest.approx(0.90)
    assert client.get_model_version(name, "3").tags["mlcp.gate.accuracy.verdict"] == "pass"


def test_evaluating_the_live_version_itself_has_no_baseline(models, client):
    name = models.create(1)
    gate = gates.Gate("accuracy", "accuracy", ">=", 0.5, max_regression=0.01)
    gates.evaluate(gate, model=name, version="1", value=0.9, pipeline="test", stage="evaluate")
    models.set_alias(name, "live", "1")
    again = gates.evaluate(
        gate, model=name, version="1", value=0.8, pipeline="test", stage="evaluate"
    )
    assert again.passed
    assert again.live_version is None and again.live_value is None


def test_explicit_live_value_overrides_the_recorded_one(models, client):
    name = models.create(2)
    gate = gates.Gate("accuracy", "accuracy", ">=", 0.5, max_regression=0.02)
    gates.evaluate(gate, model=name, version="1", value=0.7, pipeline="test", stage="evaluate")
    models.set_alias(name, "live", "1")
    decision = gates.evaluate(
        gate,
        model=name,
        version="2",
        value=0.8,
        live_value=0.9,
        pipeline="test",
        stage="evaluate",
    )
    assert decision.verdict == "fail"
    assert client.get_run(decision.run_id).data.metrics["live_value"] == pytest.approx(0.9)


def test_evaluate_missing_version_raises_record_failed(models, client):
    name = models.create(1)
    with pytest.raises(RecordFailed) as info:
        gates.evaluate(
            gates.Gate("accuracy", "accuracy", ">=", 0.5),
            model=name,
            version="9",
            value=0.9,
            pipeline="test",
            stage="evaluate",
        )
    assert info.value.exit_code == 1
    assert f"{name} v9" in str(info.value)
    assert "mlcp.gate.accuracy.verdict" not in client.get_model_version(name, "1").tags
    # and no decision run was left behind for a version that does not exist
    experiment = client.get_experiment_by_name("test/evaluate")
    leftovers = client.search_runs(
        [experiment.experiment_id],
        f"tags.`mlcp.model` = '{name}' AND tags.`mlcp.version` = '9'",
    )
    assert leftovers == []


@pytest.mark.parametrize("max_regression", [None, 0.01])
def test_evaluate_missing_model_raises_record_failed(client, stack_env, max_regression):
    with pytest.raises(RecordFailed):
        gates.evaluate(
            gates.Gate("accuracy", "accuracy", ">=", 0.5, max_regression),
            model=unique("no-model"),
            version="1",
            value=0.9,
            pipeline="test",
            stage="evaluate",
        )


def test_enforce_names_every_failed_gate(models, client):
    name = models.create(1)
    common = {"model": name, "version": "1", "pipeline": "test", "stage": "evaluate"}
    passing = gates.evaluate(gates.Gate("accuracy", "accuracy", ">=", 0.5), value=0.9, **common)
    slow = gates.evaluate(gates.Gate("latency", "p95_ms", "<=", 50), value=70.0, **common)
    big = gates.evaluate(gates.Gate("size", "size_mb", "<=", 100), value=300.0, **common)
    with pytest.raises(GateFailed) as info:
        gates.enforce([passing, slow, big])
    message = str(info.value)
    assert info.value.exit_code == 3 and info.value.version == "1"  # the refused version
    assert f"{name} v1 failed" in message
    assert "latency:" in message and "size:" in message
    assert "accuracy:" not in message
    gates.enforce([passing])  # all passing: no error
    gates.enforce([])
