"""Quality gates (steps.decisions.gates): validation, judgement, and the decision records they
leave."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from steps.base.errors import BadInput, GateFailed, RecordFailed
from steps.decisions import gates, paired
from steps.records import tracking

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
    assert gates.Gate("p95_latency-2", "p95_ms", "<=", 50).against_champion is False


def test_gate_from_dict_parses_numbers():
    gate = gates.Gate.from_dict(
        {"name": "acc", "metric": "accuracy", "op": ">=", "threshold": "0.8"}
    )
    assert gate == gates.Gate("acc", "accuracy", ">=", 0.8)
    assert gates.Gate.from_dict(
        {"name": "acc", "metric": "d", "op": ">=", "threshold": -0.02, "against_champion": True}
    ).against_champion


@pytest.mark.parametrize(
    "data",
    [
        {"metric": "accuracy", "op": ">=", "threshold": 0.8},
        {"name": "acc", "op": ">=", "threshold": 0.8},
        {"name": "acc", "metric": "accuracy", "threshold": 0.8},
        {"name": "acc", "metric": "accuracy", "op": ">="},
        {"name": "acc", "metric": "accuracy", "op": ">=", "threshold": "high"},
        {"name": "acc", "metric": "accuracy", "op": ">=", "threshold": None},
    ],
)
def test_gate_from_dict_bad_definition_is_bad_input(data):
    with pytest.raises(BadInput, match="invalid gate definition"):
        gates.Gate.from_dict(data)


# ---------------------------------------------------------------- judge


def test_judge_higher_is_better():
    gate = gates.Gate("acc", "accuracy", ">=", 0.8)
    assert gate.judge(0.8)[0] is True
    assert gate.judge(0.85)[0] is True
    ok, reasons = gate.judge(0.79)
    assert ok is False
    assert "misses >= 0.8" in reasons[0]
    assert gates.Gate("acc", "accuracy", ">", 0.8).judge(0.8)[0] is False


def test_judge_lower_is_better():
    gate = gates.Gate("lat", "p95_ms", "<=", 50)
    assert gate.judge(50)[0] is True
    assert gate.judge(12.5)[0] is True
    assert gate.judge(50.1)[0] is False
    assert gates.Gate("lat", "p95_ms", "<", 50).judge(50)[0] is False


def test_judge_unmeasured_value_fails():
    gate = gates.Gate("acc", "accuracy", ">=", 0.0)
    for value in (None, math.nan):
        ok, reasons = gate.judge(value)
        assert ok is False
        assert "not measured" in reasons[0]


# ---------------------------------------------------------------- evaluate / records


def decision_runs(client, model, gate_name=None):
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    flt = f"tags.`mlcp.kind` = 'decision' AND tags.`mlcp.model` = '{model}'"
    if gate_name:
        flt += f" AND tags.`mlcp.gate` = '{gate_name}'"
    return client.search_runs(experiment_ids, filter_string=flt, max_results=100)


def test_evaluate_records_one_decision_run_with_everything(models, client, tmp_path):
    name = models.create(1)
    gate = gates.Gate("accuracy", "accuracy", ">=", 0.5)
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
    assert params["against_champion"] == "false"
    assert params["version"] == "1"
    assert params["gate"] == "accuracy"
    assert run.data.metrics["value"] == pytest.approx(0.91)
    assert set(run.data.metrics) == {"value"}  # an absolute gate compares with nothing
    tags = run.data.tags
    assert tags["mlcp.verdict"] == "pass"
    assert tags["mlcp.gate"] == "accuracy"
    assert tags["mlcp.kind"] == "decision"
    assert tags["mlcp.model"] == name and tags["mlcp.version"] == "1"
    assert "mlflow.parentRunId" not in tags  # no stage run was active
    assert "mlcp.comparison" not in tags

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
        "against_champion": False,
    }
    assert recorded["evidence"] == {"dataset": "val-v2"}
    assert recorded["comparison"] is None
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
    assert run.data.params["op"] == "<=" and run.data.params["against_champion"] == "false"


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


# ---------------------------------------------------------------- against the champion


def comparison(champion_right, challenger_right, *, margin=0.02, n=270):
    """A real comparison (scipy): the champion right on ``champion_right`` of ``n`` samples,
    the challenger on ``challenger_right`` of them (its right ones a subset, or a superset)."""
    champion = [i < champion_right for i in range(n)]
    challenger = [i < challenger_right for i in range(n)]
    return paired.binary(
        challenger,
        champion,
        name="accuracy",
        challenger_version="2",
        champion_version="1",
        champion_alias="live",
        margin=margin,
    )


NON_INFERIOR = gates.Gate(
    "accuracy-vs-champion", "accuracy_diff_ci_low", ">=", -0.02, against_champion=True
)


def test_champion_gate_records_the_comparison(models, client, tmp_path):
    name = models.create(2)
    worse = comparison(262, 240)  # 22 images the champion gets right and the challenger not
    decision = gates.evaluate(
        NON_INFERIOR,
        model=name,
        version="2",
        value=worse.ci_low,
        comparison=worse,
        pipeline="test",
        stage="evaluate",
    )
    assert decision.verdict == "fail"
    assert worse.ci_low < -0.02 and worse.p_value < 1e-5
    run = client.get_run(decision.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["against_champion"] == "true"
    assert (params["challenger_version"], params["champion_version"]) == ("2", "1")
    assert params["champion_alias"] == "live" and params["margin"] == "0.02"
    assert "McNemar" in params["test"] and params["confidence"] == "0.95"
    assert metrics["value"] == pytest.approx(worse.ci_low)
    assert metrics["p_value"] == pytest.approx(worse.p_value)
    assert metrics["ci_low"] < metrics["estimate"] < metrics["ci_high"]
    assert metrics["n"] == 270
    assert metrics["count_only_champion"] == 22 and metrics["count_only_challenger"] == 0
    assert run.data.tags["mlcp.comparison"] == worse.line()
    assert "v2 vs live v1 on 270 samples" in worse.line()
    path = client.download_artifacts(decision.run_id, "decision.json", str(tmp_path))
    assert json.loads(Path(path).read_text())["comparison"]["p_value"] == pytest.approx(
        worse.p_value
    )
    [status] = gates.recorded(client, name, "2", ["accuracy-vs-champion"])
    assert status.verdict == "fail" and status.comparison == worse.line()


def test_champion_gate_passes_an_equal_challenger(models, client):
    name = models.create(2)
    equal = comparison(262, 262)
    decision = gates.evaluate(
        NON_INFERIOR,
        model=name,
        version="2",
        value=equal.ci_low,
        comparison=equal,
        pipeline="test",
        stage="evaluate",
    )
    assert decision.passed and equal.p_value == 1.0
    assert (equal.ci_low, equal.ci_high) == (0.0, 0.0)  # no discordant pair: no doubt


def test_champion_gate_without_a_champion_passes_and_says_why(models, client):
    name = models.create(1)
    decision = gates.evaluate(
        NON_INFERIOR,
        model=name,
        version="1",
        value=None,
        comparison=f"no champion: {name}@live is unset",
        pipeline="test",
        stage="evaluate",
    )
    assert decision.passed and decision.value is None and decision.comparison is None
    assert "only the absolute gates apply" in decision.reasons[0]
    run = client.get_run(decision.run_id)
    assert "value" not in run.data.metrics and "mlcp.comparison" not in run.data.tags
    assert "p_value" not in run.data.metrics


def test_absolute_gate_refuses_a_comparison(models, client):
    name = models.create(1)
    with pytest.raises(BadInput, match="absolute"):
        gates.evaluate(
            gates.Gate("accuracy", "accuracy", ">=", 0.5),
            model=name,
            version="1",
            value=0.9,
            comparison=comparison(200, 200),
            pipeline="test",
            stage="evaluate",
        )
    assert "mlcp.gate.accuracy.verdict" not in client.get_model_version(name, "1").tags


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


@pytest.mark.parametrize("against_champion", [False, True])
def test_evaluate_missing_model_raises_record_failed(client, stack_env, against_champion):
    with pytest.raises(RecordFailed):
        gates.evaluate(
            gates.Gate("accuracy", "accuracy", ">=", 0.5, against_champion),
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
