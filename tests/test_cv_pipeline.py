"""The CV chain end to end through the CLI, against the real MLflow server, S3 endpoint and
tritonserver of the session stack: aliases after each stage, one decision run per gate,
data lineage, and Triton's live slot following promote and rollback."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from steps.cv import data as cvdata
from steps.cv.pipeline import CV
from steps.registry import moves
from steps.spec.contract import PROVENANCE_TAGS, REQUIRED_GATES_TAG

from .commands import assert_pasteable_rollback
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
    "--max-p95-ratio",
    "100",
    "--min-rps-ratio",
    "0",
)
GATES = ",".join(CV.gates)


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
        "--min-accuracy 0.5 --margin 1",
        "--perf-test-args",
        " ".join(PERF),
        timeout=900,
    )
    assert result.code == 0, result.err[-3000:]
    for stage in ("train", "deploy", "evaluate", "perf-test", "promote"):
        assert f"==> {stage}" in result.err  # progress per stage
    assert_pasteable_rollback(result.out, model)
    return json.loads(result.out[result.out.index("{") : result.out.index("}") + 1])


def test_cv_chain_promote_and_rollback_follow_triton(mlcp, models, client, data_uri):
    model = unique("digits")
    # train -> candidate
    train = mlcp("cv", "train", "--model-name", model, *TRAIN, timeout=600)
    assert train.code == 0, train.err[-3000:]
    assert "epoch 2/2" in train.err  # progress per epoch, its time labelled as cumulative
    assert " s so far)" in train.err
    assert "already exists" not in train.err  # no MLflow chatter on a first registration
    assert models.aliases(model) == {"candidate": "1"}
    # deploy -> staged, evaluate -> evaluated, perf-test -> benchmarked
    deploy = mlcp("cv", "deploy", "--model-name", model, timeout=600)
    assert deploy.code == 0, deploy.err[-3000:]
    assert "Downloading artifacts" not in deploy.err  # no progress bar per artifact
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
    # the command a person types, also for the stages a chain ran as `python -m steps.cli`
    assert {r.data.tags["mlflow.source.name"] for r in trainings} == {"mlcp cv train"}


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

    from steps.local import stack

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


# ------------------------------------------------------------------ champion and challenger
# Side by side against the live version (steps/decisions/paired.py). CPU training is deterministic
# on one machine (steps/spec/determinism.py), but another CPU rounds otherwise and, at the default
# learning rate (0.05), the training runs its own way: 8 epochs at seed 0 gave 0.96 test
# accuracy on one machine and 0.86 on another. At 0.02 the recipes land close on any
# machine tried: 8 epochs 0.963 (seed 0), 0.971 (seed 1), 0.985 (seed 2); 2 epochs 0.908.
CHAMPION_RECIPE = ("--epochs", "8", "--lr", "0.02", "--image-size", "32")
WEAKER_RECIPE = ("--epochs", "2", "--lr", "0.02", "--seed", "0")
# Wide absolute bounds: these tests judge the side-by-side gates, not the shared machine.
ABSOLUTE_PERF = ("--max-p95-ms", "20000", "--min-rps", "0.5", "--max-error-rate", "0.5")


def chain(mlcp, model: str, seed: str) -> dict:
    """`mlcp cv chain` (as `make demo` runs it) with the champion's recipe and ``seed``; the
    stages' defaults except the absolute perf bounds; its summary."""
    result = mlcp(
        "cv",
        "chain",
        "--model-name",
        model,
        "--epochs",
        CHAMPION_RECIPE[1],
        "--seed",
        seed,
        "--duration",
        "4",
        "--train-args",
        " ".join(CHAMPION_RECIPE[2:]),
        "--perf-test-args",
        " ".join(ABSOLUTE_PERF),
        timeout=1500,
    )
    assert result.code == 0, result.err[-4000:]
    summary = json.loads(result.out[result.out.index("{") : result.out.index("}") + 1])
    return {**summary, "err": result.err}


def trained(mlcp, model: str, *args: str) -> str:
    """A new version trained and deployed to the staged slot; its number."""
    train = mlcp("cv", "train", "--model-name", model, *args, timeout=900)
    assert train.code == 0, train.err[-3000:]
    version = json.loads(train.out.strip().splitlines()[-1])["version"]
    deploy = mlcp("cv", "deploy", "--model-name", model, timeout=600)
    assert deploy.code == 0, deploy.err[-3000:]
    return version


def stage_run(client, model: str, stage: str, version: str):
    (run,) = client.search_runs(
        [client.get_experiment_by_name(f"cv/{stage}").experiment_id],
        f"tags.`mlcp.model` = '{model}' AND tags.`mlcp.kind` = 'stage' "
        f"AND tags.`mlcp.version` = '{version}'",
    )
    return run


@pytest.fixture(scope="module")
def champion(stack_env, data_uri, client):
    """A model whose v1, trained longer, went live through `mlcp cv chain` with nothing to be
    compared with."""
    from .conftest import run_mlcp

    model = unique("digits-ab")
    summary = chain(run_mlcp, model, seed="0")
    assert (summary["live"], summary["accuracy"] > 0.93) == ("1", True)
    return {"model": model, "live": "1", "accuracy": summary["accuracy"], "err": summary["err"]}


def test_the_first_version_is_judged_by_the_absolute_gates_only(client, champion):
    # given the champion's own chain, when there was no champion yet
    model = champion["model"]
    found = decisions(client, model, "1")
    # then every champion gate passed as not applicable, and says so, with nothing compared
    for gate in ("accuracy-vs-champion", "p95-vs-champion", "throughput-vs-champion"):
        run = found[gate]
        assert run.data.tags["mlcp.verdict"] == "pass"
        assert "mlcp.comparison" not in run.data.tags and "value" not in run.data.metrics
        assert (
            f"gate {gate}: pass (no champion: {model}@live is unset: not applicable"
            in (champion["err"])
        )
    # and the load went to the staged slot alone
    perf = stage_run(client, model, "perf-test", "1")
    assert perf.data.params["slots"] == "1" and "champion_p95_ms" not in perf.data.metrics
    assert "champion_accuracy" not in stage_run(client, model, "evaluate", "1").data.metrics


def test_the_registry_page_explains_the_champion(client, champion):
    # given the champion's chain: its model and version read well in MLflow's registry page
    model = champion["model"]
    text = client.get_registered_model(model).description
    assert text.startswith(CV.model_description) and "`triton` back end" in text
    assert f"`mlcp rollback --model-name {model}`" in text
    version = client.get_model_version(model, "1")
    train = stage_run(client, model, "train", "1")
    lines = version.description.split("\n")
    # written by the stage that produced it: the data digest and the headline metric
    accuracy = train.data.metrics["val_accuracy"]
    assert lines[0] == (
        f"Trained by `mlcp cv train` on data `{version.tags['mlcp.data.digest']}` "
        f"({version.tags['mlcp.data.source']}): val_accuracy {round(accuracy, 4):g}."
    )
    # then the gates passed, by each stage that judged them
    passed = {line.split("`")[1]: line for line in lines[1:]}
    assert set(passed) == {f"mlcp cv {stage.name}" for stage in CV.stages if stage.gates}
    for stage in CV.stages:
        for gate in stage.gates:
            assert f" {gate} (" in passed[f"mlcp cv {stage.name}"], (gate, passed)
    # and the experiments open on MLflow's model-training view
    for stage in ("train", "deploy", "evaluate", "perf-test", "promote"):
        tags = client.get_experiment_by_name(f"cv/{stage}").tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_weaker_challenger_is_refused_side_by_side_and_a_retrain_passes(
    mlcp, models, client, champion, data_uri
):
    import mlflow

    model = champion["model"]
    live = models.aliases(model)["live"]
    # given a challenger trained for fewer epochs, deployed beside the live champion
    weak = trained(mlcp, model, *WEAKER_RECIPE, "--min-val-accuracy", "0.5")
    aliases, history = models.aliases(model), moves.history(client, model)
    # when it is evaluated: both slots answer the same test images in the same run
    refused = mlcp("cv", "evaluate", "--model-name", model, timeout=600)
    # then it passes the absolute minimum but the paired gate refuses it, and nothing moves
    assert refused.code == 3, refused.err[-3000:]
    assert "accuracy-vs-champion" in refused.err and "McNemar" in refused.err
    assert models.aliases(model) == aliases and moves.history(client, model) == history
    found = decisions(client, model, weak)
    assert found["accuracy"].data.tags["mlcp.verdict"] == "pass"
    assert found["accuracy"].data.metrics["value"] >= 0.8
    vs = found["accuracy-vs-champion"]
    assert vs.data.tags["mlcp.verdict"] == "fail"
    params, metrics = vs.data.params, vs.data.metrics
    assert (params["champion_alias"], params["champion_version"]) == ("live", live)
    assert (params["challenger_version"], params["margin"]) == (weak, "0.02")
    n = len(cvdata.read(data_uri)[1].labels["test"])
    assert "McNemar" in params["test"] and metrics["n"] == n
    # significantly worse: McNemar's p-value, and an interval wholly below zero
    assert metrics["p_value"] < 0.05
    assert metrics["ci_low"] <= metrics["estimate"] <= metrics["ci_high"] < 0
    assert metrics["value"] == metrics["ci_low"] < -0.02
    assert metrics["count_only_champion"] > metrics["count_only_challenger"]
    assert sum(metrics[f"count_{k}"] for k in ("both_right", "only_challenger")) == (
        pytest.approx(n * found["accuracy"].data.metrics["value"])
    )
    # the decision's one line is what `mlcp lineage` prints under the gate
    line = vs.data.tags["mlcp.comparison"]
    assert line.startswith(f"v{weak} vs live v{live} on {n} samples: accuracy difference")
    print(line)  # the figures of a run, for a person (pytest -rP)
    lineage = mlcp("lineage", f"{model}@staged")
    assert lineage.code == 0 and f"accuracy-vs-champion: fail (run {vs.info.run_id})" in (
        lineage.out
    )
    assert f"      {line}" in lineage.out.splitlines()
    # the evaluate run: both accuracies, the paired counts, the disagreements as a picture
    run = stage_run(client, model, "evaluate", weak)
    assert run.data.metrics["champion_accuracy"] == pytest.approx(champion["accuracy"])
    assert run.data.metrics["mcnemar_p_value"] == pytest.approx(metrics["p_value"])
    listed = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/disagreements.json")
    discordant = metrics["count_only_champion"] + metrics["count_only_challenger"]
    assert len(listed["disagreements"]) >= discordant > 0
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "disagreements.png",
        "confusion_matrix.png",
    }
    # when the champion's recipe is trained again with another seed, through the whole chain
    summary = chain(mlcp, model, seed="1")
    retrain = summary["live"]
    # then it passes side by side (accuracy, and an equal model's latency and throughput),
    # and goes live
    assert (summary["previous"], models.aliases(model)["live"]) == (live, retrain)
    found = decisions(client, model, retrain)
    assert all(run.data.tags["mlcp.verdict"] == "pass" for run in found.values())
    assert found["accuracy-vs-champion"].data.metrics["ci_low"] >= -0.02
    print("\n".join(found[g].data.tags["mlcp.comparison"] for g in CV.gates if "vs" in g))
    for gate in ("p95-vs-champion", "throughput-vs-champion"):
        assert found[gate].data.params["champion_version"] == live
        assert "mlcp.comparison" in found[gate].data.tags
    assert found["p95-vs-champion"].data.metrics["ci_low"] <= 1.5
    assert found["throughput-vs-champion"].data.metrics["ci_high"] >= 0.67


def test_a_challenger_with_sixteen_times_the_compute_is_refused_on_latency(
    mlcp, models, client, champion
):
    import mlflow

    model = champion["model"]
    live = models.aliases(model)["live"]
    # given the same ResNet-18 at 128 px (the champion: 32 px), deployed beside it. At 64 px
    # (four times the compute) the p95 ratio was 1.95 [1.85, 2.04] alone, but its interval
    # reached the 1.5 margin beside the other worker's load: the fixed cost of a request
    # dilutes the compute's ratio, and a shared CPU dilutes it more. At 128 px: 3.31 alone
    heavy = trained(mlcp, model, "--epochs", "1", "--image-size", "128", "--min-val-accuracy", "0")
    aliases, history = models.aliases(model), moves.history(client, model)
    # when one locust run loads both slots with the same users, seconds and images
    perf = mlcp(
        "cv",
        "perf-test",
        "--model-name",
        model,
        "--input-alias",
        "staged",
        "--duration",
        "4",
        *ABSOLUTE_PERF,
        timeout=600,
    )
    # then the latency ratio's interval lies above the tolerance: refused, nothing moves
    assert perf.code == 3, perf.err[-3000:]
    assert models.aliases(model) == aliases and moves.history(client, model) == history
    found = decisions(client, model, heavy)
    for gate in ("p95-latency", "throughput", "error-rate"):
        assert found[gate].data.tags["mlcp.verdict"] == "pass"  # the absolute gates
    p95 = found["p95-vs-champion"]
    assert p95.data.tags["mlcp.verdict"] == "fail"
    assert p95.data.metrics["value"] == p95.data.metrics["ci_low"] > 1.5
    assert p95.data.params["champion_version"] == live
    assert p95.data.tags["mlcp.comparison"].startswith(f"v{heavy} vs live v{live}")
    print(p95.data.tags["mlcp.comparison"])
    print(found["throughput-vs-champion"].data.tags["mlcp.comparison"])
    # both slots were loaded in the same run: raw latencies and per-second counts of each
    run = stage_run(client, model, "perf-test", heavy)
    stats = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/perf/stats.json")
    ours, theirs = stats["targets"]["challenger"], stats["targets"]["champion"]
    assert len(ours["per_second"]) == len(theirs["per_second"]) >= 3
    assert len(ours["latencies_ms"]) == ours["requests"] - ours["failures"] > 0
    # each slot was warmed before the clock started, and those requests are not counted
    assert stats["warmup"] == {label: {"requests": 2, "failed": 0} for label in stats["targets"]}
    assert run.data.metrics["p95_ratio"] == pytest.approx(p95.data.metrics["estimate"])
    assert run.data.metrics["p95_ms"] > run.data.metrics["champion_p95_ms"]


def test_champion_alias_errors_are_clear_and_move_nothing(mlcp, models, client, champion):
    model = champion["model"]
    aliases, history = models.aliases(model), moves.history(client, model)
    # a malformed champion alias: bad input, before anything is read
    for stage in ("evaluate", "perf-test"):
        bad = mlcp("cv", stage, "--model-name", model, "--champion-alias", "v2")
        assert bad.code == 2 and "invalid alias name 'v2'" in bad.err, bad.err[-2000:]
    # a champion alias naming a version the live slot does not serve
    live = aliases["live"]
    source = client.get_model_version(model, live)
    # the live version's logged model registered again: a version no slot serves
    logged = source.source.removeprefix("models:/")
    other = str(
        client.create_model_version(
            model, source.source, run_id=source.run_id, model_id=logged
        ).version
    )
    client.set_registered_model_alias(model, "champion", other)
    try:
        named = mlcp("cv", "evaluate", "--model-name", model, "--champion-alias", "champion")
        assert named.code == 1, named.err[-2000:]
        assert f"Triton slot {model}-live serves v{live}, not v{other}" in named.err
        assert f"{model}@champion names v{other}" in named.err
        # the same when live itself was moved by hand, behind the server's back
        client.set_registered_model_alias(model, "live", other)
        moved = mlcp("cv", "perf-test", "--model-name", model, "--input-alias", "staged")
        assert moved.code == 1, moved.err[-2000:]
        assert f"serves v{live}, not v{other}" in moved.err and "no-op promotion" in moved.err
    finally:
        client.set_registered_model_alias(model, "live", live)
        client.delete_registered_model_alias(model, "champion")
    assert models.aliases(model) == aliases and moves.history(client, model) == history


def test_a_training_refuses_another_pipelines_model_before_it_reads_anything(
    mlcp, models, client, champion
):
    model = champion["model"]
    aliases, history = models.aliases(model), moves.history(client, model)
    versions = len(client.search_model_versions(f"name='{model}'"))
    tags = dict(client.get_registered_model(model).tags)
    # when another pipeline's training (the runner's, which every pipeline's train is on)
    # is pointed at the CV model
    for pipeline in ("llm", "tabular"):
        # (a --data that does not exist: the refusal comes before anything is read)
        wrong = mlcp(pipeline, "train", "--model-name", model, "--data", "s3://nowhere/none")
        # then it is bad input, said plainly
        assert wrong.code == 2, wrong.err[-2000:]
        assert f"model {model!r} belongs to the 'cv' pipeline, not {pipeline!r}" in wrong.err
    # and nothing was written: no version, no alias, no tag changed (its serving tag too)
    assert len(client.search_model_versions(f"name='{model}'")) == versions
    assert models.aliases(model) == aliases and moves.history(client, model) == history
    assert dict(client.get_registered_model(model).tags) == tags
