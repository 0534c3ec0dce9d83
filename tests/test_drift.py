"""Retraining on reason: versioned data with a ``newest``, ``mlcp <pipeline> drift`` (no new
data, new data without drift, drift) with its decision run and the ``drift-detected`` alias,
and ``mlcp cv retrain`` (drift, then the chain only when it says so), against the session's
real stack (MLflow, the S3 endpoint, tritonserver).

Training is the expensive part here: one CV version is put live through the real chain, one
retrain trains and promotes a second; the LLM side trains one adapter (its drift step needs
no serving) and proves its three verdicts and the alias without retraining."""

from __future__ import annotations

import json

import pytest

from steps.base.errors import BadInput
from steps.cv import data as cvdata
from steps.llm import data as llmdata
from steps.records import datasets
from steps.registry import moves
from steps.registry.promote import plan
from steps.spec.contract import DATA_DIGEST_TAG, DATA_SOURCE_TAG, DRIFT_DETECTED, LIVE, PREVIOUS
from steps.stages import drift

from .conftest import run_mlcp, unique

# Generous bounds: this checks the plumbing, not the speed or the accuracy of one epoch on
# a shared 2-core machine.
TRAIN = "--min-val-accuracy 0.1"
EVALUATE = "--min-accuracy 0.1 --margin 1"
PERF = (
    "--users 2 --max-p95-ms 10000 --min-rps 0.5 --max-error-rate 0.5 "
    "--max-p95-ratio 100 --min-rps-ratio 0.01"
)
CHAIN = (
    "--epochs",
    "1",
    "--duration",
    "4",  # whole seconds of load: at 2 a loaded machine left 1, too few to compare
    "--train-args",
    TRAIN,
    "--evaluate-args",
    EVALUATE,
    "--perf-test-args",
    PERF,
)


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def publish(pipeline: str, *args: str) -> dict:
    result = run_mlcp("data", pipeline, *args, timeout=300)
    assert result.code == 0, result.err[-3000:]
    return last_json(result.out)


def drift_step(pipeline: str, model: str, tmp_path, *args: str) -> tuple[dict, dict]:
    """``mlcp <pipeline> drift`` as a process, its summary and the outputs it wrote."""
    out = tmp_path / unique("outputs")
    result = run_mlcp(
        pipeline, "drift", "--model-name", model, *args, env={"MLCP_OUTPUT_DIR": str(out)}
    )
    assert result.code == 0, result.err[-3000:]
    written = {p.name: p.read_text() for p in out.iterdir()}
    return last_json(result.out), written


def aliases(client, model: str) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(model).aliases.items()}


def statistics(summary: dict) -> dict[str, dict]:
    return {s["name"]: s for s in summary["statistics"]}


def decision(client, summary: dict, verdict: str):
    """The decision run the drift step recorded, checked against its summary."""
    run = client.get_run(summary["run_id"])
    tags = run.data.tags
    assert (tags["mlcp.kind"], tags["mlcp.gate"], tags["mlcp.verdict"]) == (
        "decision",
        "drift",
        verdict,
    )
    assert tags["mlcp.stage"] == "drift" and tags["mlcp.version"] == summary["version"]
    assert tags["mlcp.drift.retrain"] == str(summary["retrain"]).lower()
    assert run.data.params["data"] == summary["data"]
    for s in summary["statistics"]:  # every statistic, its threshold and the side of drift
        assert run.data.metrics[s["name"]] == pytest.approx(s["value"])
        assert float(run.data.params[f"{s['name']}.threshold"]) == s["threshold"]
        assert run.data.params[f"{s['name']}.drift_when"] == f"value {s['op']} threshold"
    # the data it compared is an input of the run, with the digest of the bytes read
    (compared,) = run.inputs.dataset_inputs
    assert compared.dataset.digest == summary["digest"]
    # and the live version points at it: what `mlcp lineage MODEL@live` shows
    version = client.get_model_version(summary["model"], summary["version"]).tags
    assert version["mlcp.gate.drift.verdict"] == verdict
    assert version["mlcp.gate.drift.run_id"] == summary["run_id"]
    return run


# ------------------------------------------------------------------ without a stack


def test_the_statistics_say_no_drift_for_the_same_distribution_and_drift_for_a_shift():
    same = drift.chi_square({"a": 50, "b": 50}, {"a": 100, "b": 100})
    moved = drift.chi_square({"a": 50, "b": 50}, {"a": 90, "b": 10})
    assert same["p_value"] == pytest.approx(1.0) and moved["p_value"] < 1e-6
    assert moved["shares"]["new"] == {"a": 0.9, "b": 0.1}
    assert drift.chi_square({"a": 5}, {"a": 9})["p_value"] == 1.0  # one category: no test
    values = [i / 100 for i in range(100)]
    assert drift.ks(values, values)["p_value"] == pytest.approx(1.0)
    assert drift.ks(values, [v + 0.5 for v in values])["p_value"] < 1e-6
    assert drift.psi(values, values) == pytest.approx(0.0, abs=1e-9)
    assert drift.psi(values, [v + 0.5 for v in values]) > 1
    assert drift.psi([3.0] * 10, [3.0] * 10) == pytest.approx(0.0, abs=1e-9)  # a constant
    below = drift.Statistic("p", "a p-value", 0.001, 0.01, "<")
    above = drift.Statistic("psi", "an index", 0.1, 0.2, ">")
    assert below.drifted and not above.drifted
    with pytest.raises(ValueError, match="op must be"):
        drift.Statistic("x", "x", 1.0, 1.0, "=")


def test_a_version_is_never_rewritten_and_newest_is_written_last(tmp_path):
    root = str(tmp_path)
    with pytest.raises(BadInput, match="no version of set/a was published"):
        datasets.newest("set/a", root)
    first = datasets.publish(root, "set/a", "base-seed0", "x.bin", b"one", seed=0)
    assert datasets.newest("set/a", root)["uri"] == first["uri"]
    assert first["uri"].endswith("/set/a/base-seed0/x.bin") and first["seed"] == 0
    again = datasets.publish(root, "set/a", "base-seed0", "x.bin", b"one")  # the same bytes
    assert again["digest"] == first["digest"]
    second = datasets.publish(root, "set/a", "base-seed1", "x.bin", b"two")
    assert datasets.newest("set/a", root)["version"] == "base-seed1"
    # other bytes under a published version are refused, and newest stays where it was
    with pytest.raises(BadInput, match="never rewritten"):
        datasets.publish(root, "set/a", "base-seed0", "x.bin", b"changed")
    assert datasets.newest("set/a", root)["uri"] == second["uri"]
    assert (tmp_path / "set/a/base-seed0/x.bin").read_bytes() == b"one"
    (tmp_path / "set/a/newest.json").write_text("{not json")
    with pytest.raises(BadInput, match="pointer .* is unreadable"):
        datasets.newest("set/a", root)


def test_the_publishers_are_deterministic_and_their_variants_differ():
    assert cvdata.build_digits(0) == cvdata.build_digits(0)
    assert cvdata.build_digits(1) != cvdata.build_digits(0)
    assert cvdata.build_digits(0, "shifted") != cvdata.build_digits(0)
    assert llmdata.build_instructions(0) == llmdata.build_instructions(0)
    assert llmdata.build_instructions(0, "task-mix") != llmdata.build_instructions(0)
    with pytest.raises(BadInput, match="unknown CV data variant 'x'"):
        cvdata.build_digits(0, "x")


# The core of drift (steps.stages.drift, steps.records.datasets, steps.stages.retrain) never
# reaching a pipeline is the layers contract of pyproject.toml (tests/test_layout.py).


# ------------------------------------------------------------------ CV, on the real stack


@pytest.fixture(scope="module")
def cv_live(stack_env, client):
    """A CV model whose v1 went live through the real chain, trained on the base digits."""
    published = publish("cv")
    assert published["version"] == "base-seed0"
    assert published["uri"] == f"{stack_env['MLCP_DATA_ROOT']}/{cvdata.DEFAULT_KEY}"
    model = unique("digits-drift")
    result = run_mlcp("cv", "chain", "--model-name", model, *CHAIN, timeout=1200)
    assert result.code == 0, result.err[-3000:]
    assert aliases(client, model)[LIVE] == "1"
    tags = client.get_model_version(model, "1").tags
    assert tags[DATA_SOURCE_TAG] == published["uri"]
    return {"model": model, "data": published}


def test_cv_same_data_is_no_new_data_recorded_and_moves_nothing(cv_live, client, tmp_path):
    model = cv_live["model"]
    # given the base set published again (the same bytes: the newest is what trained live)
    again = publish("cv")
    assert again["digest"] == cv_live["data"]["digest"]
    before = aliases(client, model)
    # when the drift step compares the newest with live's
    summary, written = drift_step("cv", model, tmp_path)
    # then no new data, no retraining, the decision recorded, and no alias moved
    assert (summary["verdict"], summary["retrain"], summary["statistics"]) == (
        drift.NO_NEW_DATA,
        False,
        [],
    )
    assert written["retrain"] == "false" and written["reason"] == drift.NO_NEW_DATA
    assert written["data"] == cv_live["data"]["uri"] and written["version"] == "1"
    decision(client, summary, drift.NO_NEW_DATA)
    assert aliases(client, model) == before and DRIFT_DETECTED not in before


def test_cv_new_split_is_new_data_without_drift_and_the_policy_decides(cv_live, client, tmp_path):
    model = cv_live["model"]
    # given a new split of the same distribution (another seed), published as the newest
    split = publish("cv", "--seed", "1")
    assert split["version"] == "base-seed1" and split["digest"] != cv_live["data"]["digest"]
    # when the drift step runs with the default policy
    summary, written = drift_step("cv", model, tmp_path)
    # then new data, every statistic within its threshold, and no retraining
    assert (summary["verdict"], summary["retrain"]) == (drift.NEW_DATA, False)
    found = statistics(summary)
    assert set(found) == {"label-chi2-p", "intensity-ks-p", "intensity-psi"}
    assert not any(s["drifted"] for s in found.values())
    assert found["label-chi2-p"]["value"] > 0.5 and found["intensity-psi"]["value"] < 0.05
    assert (written["retrain"], written["data"]) == ("false", split["uri"])
    decision(client, summary, drift.NEW_DATA)
    # and with the policy that new data retrains, the same verdict says retrain
    summary, written = drift_step("cv", model, tmp_path, "--retrain-on-new-data")
    assert (summary["verdict"], summary["retrain"], written["retrain"]) == (
        drift.NEW_DATA,
        True,
        "true",
    )
    assert DRIFT_DETECTED not in aliases(client, model)
    print("cv new split:", {n: s["value"] for n, s in found.items()})


def test_cv_shifted_data_drifts_then_retrain_trains_promotes_and_clears_the_alias(
    cv_live, client, tmp_path
):
    model = cv_live["model"]
    # given a shifted world (fewer images of classes 0-4, noisier images) as the newest
    shifted = publish("cv", "--variant", "shifted")
    assert shifted["version"] == "shifted-seed0"
    # when the drift step compares it with live's data
    summary, written = drift_step("cv", model, tmp_path)
    # then each statistic is beyond its threshold, drift-detected names live, retrain=true
    assert (summary["verdict"], summary["retrain"]) == (drift.DRIFT, True)
    found = statistics(summary)
    assert all(s["drifted"] for s in found.values()), found
    assert found["label-chi2-p"]["value"] < 1e-10 and found["intensity-ks-p"]["value"] < 1e-10
    assert found["intensity-psi"]["value"] > 0.2
    assert (written["retrain"], written["reason"], written["data"]) == (
        "true",
        "drift",
        shifted["uri"],
    )
    decision(client, summary, drift.DRIFT)
    assert aliases(client, model)[DRIFT_DETECTED] == aliases(client, model)[LIVE] == "1"
    (move,) = moves.history(client, model, DRIFT_DETECTED)
    assert (move.action, move.from_version, move.to_version) == ("assign", None, "1")
    assert summary["run_id"] in move.reason
    print("cv shifted:", {n: s["value"] for n, s in found.items()})
    # when the local retrain runs: drift again (the same verdict), then the chain
    result = run_mlcp("cv", "retrain", "--model-name", model, *CHAIN, timeout=1500)
    assert result.code == 0, result.err[-3000:]
    assert "==> drift" in result.err and "==> promote" in result.err
    assert f"retrained on {shifted['uri']} (drift): live {model} v2" in result.out
    # then v2, trained on the shifted data, is live; drift-detected was removed, recorded
    now = aliases(client, model)
    assert (now[LIVE], now[PREVIOUS]) == ("2", "1") and DRIFT_DETECTED not in now
    assert client.get_model_version(model, "2").tags[DATA_SOURCE_TAG] == shifted["uri"]
    assert client.get_model_version(model, "2").tags[DATA_DIGEST_TAG] == shifted["digest"]
    records = moves.history(client, model, DRIFT_DETECTED)
    assert [(r.action, r.from_version, r.to_version) for r in records] == [
        ("assign", None, "1"),
        ("noop", "1", "1"),  # the retrain's own drift step found it already there
        ("remove", "1", None),
    ]
    # `mlcp history` shows the alias moves, `mlcp lineage` the drift decision
    history = run_mlcp("history", "--model-name", model)
    assert history.code == 0, history.err
    lines = [line for line in history.out.splitlines() if DRIFT_DETECTED in line]
    assert len(lines) == 3 and "assign" in lines[0] and "remove" in lines[-1]
    assert "drift: " in lines[0] and "beyond the threshold" in lines[0]
    lineage = run_mlcp("lineage", f"{model}@{PREVIOUS}")
    assert lineage.code == 0, lineage.err
    assert "drift: drift (run " in lineage.out
    # and a second retrain finds nothing new: live was trained on the newest data
    again = run_mlcp("cv", "retrain", "--model-name", model, *CHAIN, timeout=600)
    assert again.code == 0, again.err[-3000:]
    assert "not retrained: no-new-data" in again.out and "==> train" not in again.err
    assert aliases(client, model)[LIVE] == "2"


def test_promoting_a_new_live_removes_drift_detected_but_a_noop_does_not(models, client):
    # given live v1 with drift-detected on it, and v2 benchmarked
    model = models.create(2, pipeline="cv")
    for alias, version in ((LIVE, "1"), (DRIFT_DETECTED, "1"), ("benchmarked", "2")):
        models.set_alias(model, alias, version)
    # then a promotion of v2 plans to remove drift-detected after moving live
    _, planned, _ = plan(client, model, "benchmarked", LIVE)
    assert [(m.alias, m.to_version, m.action) for m in planned] == [
        (PREVIOUS, "1", "follow"),
        (LIVE, "2", "promote"),
        (DRIFT_DETECTED, None, "remove"),
    ]
    # and re-promoting what is already live changes nothing
    models.set_alias(model, "benchmarked", "1")
    _, planned, _ = plan(client, model, "benchmarked", LIVE)
    assert [m.action for m in planned] == ["noop"]


# ------------------------------------------------------------------ LLM


@pytest.fixture(scope="module")
def llm_live(stack_env, client, llm_data):
    """An LLM model whose v1, a real adapter trained on the base instructions, is live (set
    directly: the drift step reads only the registry and the data, no serving)."""
    model = unique("tinyllm-drift")
    result = run_mlcp(
        "llm",
        "train",
        "--model-name",
        model,
        "--epochs",
        "1",
        "--max-eval-perplexity",
        "1000000",
        timeout=900,
    )
    assert result.code == 0, result.err[-3000:]
    client.set_registered_model_alias(model, LIVE, "1")
    assert client.get_model_version(model, "1").tags[DATA_SOURCE_TAG] == llm_data["data"]
    return model


def test_llm_three_verdicts_with_its_own_statistics_and_the_alias(
    llm_live, llm_data, client, tmp_path
):
    model = llm_live
    # same data: the base instructions, published again (the same bytes), no base model
    again = publish("llm", "--base", "false")
    assert again["data"] == llm_data["data"] and "base_model" not in again
    summary, written = drift_step("llm", model, tmp_path)
    assert (summary["verdict"], written["retrain"]) == (drift.NO_NEW_DATA, "false")
    decision(client, summary, drift.NO_NEW_DATA)
    # a new split of the same distribution: new data, no drift; the policy decides
    split = publish("llm", "--seed", "1", "--base", "false")
    summary, written = drift_step("llm", model, tmp_path)
    found = statistics(summary)
    assert set(found) == {"task-chi2-p", "prompt-length-ks-p", "prompt-length-psi"}
    assert (summary["verdict"], written["retrain"], written["data"]) == (
        drift.NEW_DATA,
        "false",
        split["data"],
    )
    assert not any(s["drifted"] for s in found.values()), found
    decision(client, summary, drift.NEW_DATA)
    print("llm new split:", {n: s["value"] for n, s in found.items()})
    summary, written = drift_step("llm", model, tmp_path, "--retrain-on-new-data=true")
    assert (summary["verdict"], written["retrain"]) == (drift.NEW_DATA, "true")
    assert DRIFT_DETECTED not in aliases(client, model)
    # a changed task mix: drift, retrain, and drift-detected names live
    mix = publish("llm", "--variant", "task-mix", "--base", "false")
    summary, written = drift_step("llm", model, tmp_path)
    found = statistics(summary)
    assert (summary["verdict"], written["retrain"], written["data"]) == (
        drift.DRIFT,
        "true",
        mix["data"],
    )
    assert found["task-chi2-p"]["drifted"] and found["task-chi2-p"]["value"] < 1e-10
    decision(client, summary, drift.DRIFT)
    assert aliases(client, model)[DRIFT_DETECTED] == "1"
    print("llm task mix:", {n: s["value"] for n, s in found.items()})
    # longer prompts: the prompt-length statistics say drift, the task mix does not
    publish("llm", "--variant", "long-prompts", "--base", "false")
    summary, _ = drift_step("llm", model, tmp_path)
    found = statistics(summary)
    assert summary["verdict"] == drift.DRIFT
    assert found["prompt-length-ks-p"]["drifted"] and not found["task-chi2-p"]["drifted"]
    print("llm long prompts:", {n: s["value"] for n, s in found.items()})
    (first, second) = moves.history(client, model, DRIFT_DETECTED)
    assert (first.action, second.action) == ("assign", "noop")
    # an LLM model is not the CV drift step's to judge
    wrong = run_mlcp("cv", "drift", "--model-name", model)
    assert wrong.code == 2 and "belongs to the 'llm' pipeline" in wrong.err


# ------------------------------------------------------------------ bad input


def test_bad_input_exits_2_and_moves_nothing(stack_env, models, client, tmp_path):
    bucket = stack_env["MLCP_BUCKET"]
    # an unknown model
    result = run_mlcp("cv", "drift", "--model-name", unique("nope"))
    assert result.code == 2 and "does not exist" in result.err
    # a model with no live version
    model = models.create(1, pipeline="cv")
    result = run_mlcp("cv", "drift", "--model-name", model)
    assert result.code == 2 and "has no live version" in result.err
    # a live version that records no training data
    models.set_alias(model, LIVE, "1")
    result = run_mlcp("cv", "drift", "--model-name", model)
    assert result.code == 2 and "records no training data" in result.err
    # unreadable data: missing, and not an image set
    published = publish("cv")
    client.set_model_version_tag(model, "1", DATA_SOURCE_TAG, published["uri"])
    client.set_model_version_tag(model, "1", DATA_DIGEST_TAG, published["digest"])
    missing = f"s3://{bucket}/nowhere/{unique('x')}.npz"
    result = run_mlcp("cv", "drift", "--model-name", model, "--data", missing)
    assert result.code == 2 and "does not exist" in result.err
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz")
    result = run_mlcp("cv", "drift", "--model-name", model, "--data", str(garbage))
    assert result.code == 2 and "not a readable .npz" in result.err
    # the data live was trained on changed under its URI: no comparison is possible
    client.set_model_version_tag(model, "1", DATA_DIGEST_TAG, "0" * 32)
    other = publish("cv", "--seed", "2")
    result = run_mlcp("cv", "drift", "--model-name", model, "--data", other["uri"])
    assert result.code == 2 and "changed since it was recorded" in result.err
    # an unknown variant, and a bad threshold
    result = run_mlcp("data", "cv", "--variant", "sideways")
    assert result.code == 2 and "choose one of base, imbalanced" in result.err
    result = run_mlcp("cv", "drift", "--model-name", model, "--label-alpha", "2")
    assert result.code == 2 and "--label-alpha must be" in result.err
    # nothing moved, nothing was judged
    assert aliases(client, model) == {LIVE: "1"}
    assert "mlcp.gate.drift.verdict" not in client.get_model_version(model, "1").tags
    assert moves.history(client, model) == []
