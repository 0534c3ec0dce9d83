"""``mlcp reproduce MODEL@ALIAS`` against the real session stack (MLflow, S3): a CV version
and an LLM adapter trained again from their recorded params and data, the verdict and its
record in ``<pipeline>/reproduce``, nothing registered or moved unless asked; refusals when
the data or the code changed; bad input; and the ``reproduce`` template's contract with the
CLI.

Training is kept tiny (one epoch, 16-pixel images) and shared: one CV version and one LLM
adapter per module, each reproduced as few times as the checks need.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import yaml

from steps.registry import moves
from steps.spec.contract import GIT_COMMIT_TAG, PACKAGE_VERSION_TAG, REPRODUCES_TAG, TRAIN_RUN_TAG
from steps.stages.reproduce import (
    DIFFERS,
    IDENTICAL,
    WITHIN_TOLERANCE,
    check_code,
    judge,
    relative_difference,
)
from workflows import build

from .conftest import run_mlcp, unique

CV_TRAIN = ("--epochs", "1", "--image-size", "16", "--batch-size", "64", "--min-val-accuracy", "0")
LLM_TRAIN = ("--epochs", "1", "--rank", "2", "--max-length", "32", "--max-eval-perplexity", "1e9")
SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def versions(client, model: str) -> list[str]:
    return sorted(v.version for v in client.search_model_versions(f"name = '{model}'"))


def aliases_of(client, model: str) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(model).aliases.items()}


def reproduce_runs(client, pipeline: str, model: str, kind: str) -> list:
    experiment = client.get_experiment_by_name(f"{pipeline}/reproduce")
    return client.search_runs(
        [experiment.experiment_id],
        f"tags.`mlcp.model` = '{model}' AND tags.`mlcp.kind` = '{kind}'",
        order_by=["attributes.start_time DESC"],
    )


# ------------------------------------------------------------------ the verdict, on its own


def test_the_verdict_follows_the_metrics_and_the_predictions():
    same = {"val_accuracy": 0.5, "train_loss": 1.25}
    assert judge(same, same, {"count": 10, "differing": 0}, 1e-6)[0] == IDENTICAL
    close = {"val_accuracy": 0.5, "train_loss": 1.25 * (1 + 1e-7)}
    assert judge(same, close, {"count": 10, "differing": 0}, 1e-6)[0] == WITHIN_TOLERANCE
    assert judge(same, close, None, 0)[0] == DIFFERS
    # a differing prediction: within tolerance only when its share is
    assert judge(same, same, {"count": 10, "differing": 1}, 1e-6)[0] == DIFFERS
    assert judge(same, same, {"count": 10, "differing": 1}, 0.1)[0] == WITHIN_TOLERANCE
    # only what both sides measured is compared; nothing in common is bad input
    verdict, compared = judge({"val_accuracy": 0.5}, same, None, 0)
    assert verdict == IDENTICAL and list(compared) == ["val_accuracy"]
    with pytest.raises(Exception, match="nothing to compare"):
        judge({"other": 1.0}, same, None, 0)
    assert relative_difference(2.0, 1.0) == 0.5 and relative_difference(0.0, 0.0) == 0
    assert relative_difference(float("nan"), 1.0) == float("inf")


def test_the_code_check_names_both_sides_and_old_versions_go_on_with_a_warning():
    now = {GIT_COMMIT_TAG: SHA, PACKAGE_VERSION_TAG: "0.2.0"}
    recorded = {GIT_COMMIT_TAG: OTHER, PACKAGE_VERSION_TAG: "0.1.0"}
    with pytest.raises(Exception) as refused:
        check_code(recorded, now, allow=False)
    message = str(refused.value)
    assert all(text in message for text in (SHA, OTHER, "0.1.0", "0.2.0", "--allow-code-change"))
    differences, warnings = check_code(recorded, now, allow=True)
    assert len(differences) == 2 and "going on" in warnings[-1]
    assert check_code(now, now, allow=False) == ([], [])
    # trained before provenance existed: a warning, no refusal
    differences, warnings = check_code({}, now, allow=False)
    assert differences == [] and "before provenance" in warnings[0]
    # an unknown commit on either side is not compared (said so)
    _, warnings = check_code({**now, GIT_COMMIT_TAG: "unknown"}, now, allow=False)
    assert "git commit not compared" in warnings[0]


# ------------------------------------------------------------------ CV


@pytest.fixture(scope="module")
def cv_data(stack_env) -> str:
    """The digits set published to a key of this module's own (its bytes are changed below)."""
    uri = f"s3://{stack_env['MLCP_BUCKET']}/reproduce/{unique('digits')}.npz"
    result = run_mlcp("data", "cv", "--out", uri)
    assert result.code == 0, result.err
    return uri


@pytest.fixture(scope="module")
def cv_model(stack_env, client, cv_data) -> str:
    """A small CV version 1, pointed at by live."""
    model = unique("repro-cv")
    trained = run_mlcp(
        "cv", "train", "--model-name", model, "--data", cv_data, *CV_TRAIN, timeout=900
    )
    assert trained.code == 0, trained.err[-3000:]
    client.set_registered_model_alias(model, "live", "1")
    return model


def test_cv_reproduction_is_identical_and_registers_nothing(client, cv_model, cv_data):
    model = cv_model
    before = (versions(client, model), aliases_of(client, model), moves.history(client, model))
    started = time.monotonic()
    result = run_mlcp("reproduce", f"{model}@live", timeout=900)
    assert result.code == 0, result.err[-3000:]
    print(f"CV reproduction: {time.monotonic() - started:.0f} s")
    summary = last_json(result.out)
    assert summary["verdict"] == IDENTICAL, result.out
    assert f"{model}@live (v1) trained again: identical" in result.out
    assert (summary["version"], summary["pipeline"], summary["alias"]) == ("1", "cv", "live")
    # the same validation accuracy and training loss, bit for bit
    training = client.get_run(client.get_model_version(model, "1").tags[TRAIN_RUN_TAG])
    accuracy = summary["metrics"]["val_accuracy"]
    assert accuracy["recorded"] == accuracy["reproduced"] == training.data.metrics["val_accuracy"]
    assert summary["metrics"]["train_loss"]["relative_difference"] == 0
    # the same predictions on every test image, from the recorded model loaded from MLflow
    predictions = summary["predictions"]
    assert predictions["split"] == "test" and predictions["count"] > 200
    assert predictions["differing"] == 0 and predictions["max_abs_diff"] == 0
    # the recorded params were the ones trained with
    params = summary["params"]
    for key in ("epochs", "lr", "batch_size", "image_size", "seed", "cpu_threads"):
        assert params["recorded"][key] == params["reproduced"][key], key
    # a run of its own in cv/reproduce, and the record with the verdict and both sides
    (record,) = reproduce_runs(client, "cv", model, "reproduce")
    assert record.info.run_id == summary["record_run"]
    assert record.data.tags["mlcp.verdict"] == IDENTICAL
    assert record.data.tags[REPRODUCES_TAG] == "1" and record.data.tags["mlcp.version"] == "1"
    assert record.data.tags["mlflow.parentRunId"] == summary["reproduced_run"]
    assert record.data.params["recorded.lr"] == record.data.params["reproduced.lr"]
    assert record.data.metrics["predictions.differing"] == 0
    assert record.data.metrics["recorded.val_accuracy"] == accuracy["recorded"]
    (trained,) = reproduce_runs(client, "cv", model, "stage")
    assert trained.info.run_id == summary["reproduced_run"]
    assert trained.data.tags[REPRODUCES_TAG] == "1" and "mlcp.version" not in trained.data.tags
    assert trained.inputs.dataset_inputs[0].dataset.digest == summary["data"]["digest"]
    # nothing registered, no alias moved
    after = (versions(client, model), aliases_of(client, model), moves.history(client, model))
    assert after == before and summary["registered_version"] is None


def test_cv_code_change_is_refused_unless_allowed_and_register_keeps_a_version(client, cv_model):
    model = cv_model
    run_id = client.get_model_version(model, "1").tags[TRAIN_RUN_TAG]
    recorded = client.get_run(run_id).data.tags[GIT_COMMIT_TAG]
    running = {"MLCP_GIT_COMMIT": SHA}  # the code running now: another commit
    records = len(reproduce_runs(client, "cv", model, "stage"))
    client.set_tag(run_id, GIT_COMMIT_TAG, OTHER)
    try:
        refused = run_mlcp("reproduce", "--model-name", model, "--alias", "live", env=running)
        assert refused.code == 2, refused.err[-2000:]
        assert SHA in refused.err and OTHER in refused.err and "--allow-code-change" in refused.err
        # nothing trained, nothing registered
        assert len(reproduce_runs(client, "cv", model, "stage")) == records
        assert versions(client, model) == ["1"]
        # allowed: it trains, and --register keeps the result as a new version
        allowed = run_mlcp(
            "reproduce",
            f"{model}@live",
            "--allow-code-change",
            "--register",
            env=running,
            timeout=900,
        )
        assert allowed.code == 0, allowed.err[-3000:]
        assert "code changed, going on" in allowed.err
    finally:
        client.set_tag(run_id, GIT_COMMIT_TAG, recorded)
    summary = last_json(allowed.out)
    # the code did not really change: still identical
    assert summary["verdict"] == IDENTICAL and summary["code_changes"]
    assert summary["registered_version"] == "2" and versions(client, model) == ["1", "2"]
    tags = client.get_model_version(model, "2").tags
    assert tags[REPRODUCES_TAG] == "1" and tags[TRAIN_RUN_TAG] == summary["reproduced_run"]
    assert tags["mlcp.data.digest"] == summary["data"]["digest"]
    assert client.get_run(summary["reproduced_run"]).data.tags["mlcp.version"] == "2"
    assert aliases_of(client, model) == {"candidate": "1", "live": "1"}


def test_cv_changed_data_is_refused_naming_both_digests(client, cv_model, cv_data, tmp_path):
    import boto3

    from steps.base import s3

    model = cv_model
    recorded = client.get_model_version(model, "1").tags["mlcp.data.digest"]
    bucket, key = s3.split(cv_data)
    store = boto3.client("s3")
    original = store.get_object(Bucket=bucket, Key=key)["Body"].read()
    changed = original[:-1] + bytes([original[-1] ^ 0xFF])  # one byte
    now = hashlib.sha256(changed).hexdigest()[:32]
    store.put_object(Bucket=bucket, Key=key, Body=changed)
    try:
        refused = run_mlcp("reproduce", f"{model}@live")
        # and the template says the same, as its pod would (exit 2: not retried)
        from .test_workflows import Workflow, run_template

        doc = yaml.safe_load(build.generate()["reproduce.yaml"])
        templated = run_template(doc, {"model-name": model}, Workflow(), tmp_path)
    finally:
        store.put_object(Bucket=bucket, Key=key, Body=original)
    assert refused.code == 2, refused.err[-2000:]
    assert recorded in refused.err and now in refused.err and cv_data in refused.err
    assert templated.code == 2 and now in templated.err
    assert templated.outputs["pipeline"] == "cv" and templated.outputs["verdict"] is None
    assert templated.metric("mlcp_stage_failures") == [
        ({"pipeline": "cv", "stage": "reproduce", "exit_code": "2"}, 1.0)
    ]


def test_unknown_model_or_alias_is_bad_input(client, cv_model):
    model = unique("no-such-model")
    unknown = run_mlcp("reproduce", f"{model}@live")
    assert unknown.code == 2 and f"registered model {model!r} does not exist" in unknown.err
    no_alias = run_mlcp("reproduce", f"{cv_model}@staged")
    assert no_alias.code == 2 and "has no alias 'staged'" in no_alias.err
    assert run_mlcp("reproduce", f"{cv_model}@v1").code == 2  # not an alias name
    assert run_mlcp("reproduce").code == 2  # neither MODEL@ALIAS nor --model-name
    both = run_mlcp("reproduce", f"{cv_model}@live", "--model-name", "other")
    assert both.code == 2 and "name different versions" in both.err
    assert run_mlcp("reproduce", f"{cv_model}@live", "--tolerance", "2").code == 2


# ------------------------------------------------------------------ LLM


def test_llm_reproduction_is_identical_or_within_tolerance(client, llm_data):
    model = unique("repro-llm")
    trained = run_mlcp("llm", "train", "--model-name", model, *LLM_TRAIN, timeout=900)
    assert trained.code == 0, trained.err[-3000:]
    client.set_registered_model_alias(model, "live", "1")
    # as if trained before provenance was recorded: no commit, no package version
    run_id = client.get_model_version(model, "1").tags[TRAIN_RUN_TAG]
    for key in (GIT_COMMIT_TAG, PACKAGE_VERSION_TAG):
        client.delete_tag(run_id, key)
    result = run_mlcp("reproduce", f"{model}@live", "--tolerance", "1e-4", timeout=900)
    assert result.code == 0, result.err[-3000:]
    assert "warning: the version was trained before provenance was recorded" in result.err
    summary = last_json(result.out)
    print(f"LLM reproduction: {summary['verdict']}")
    for name, m in summary["metrics"].items():
        print(f"  {name}: {m['recorded']!r} vs {m['reproduced']!r}")
    assert summary["verdict"] in (IDENTICAL, WITHIN_TOLERANCE)
    assert set(summary["metrics"]) == {
        "final_eval_loss",
        "final_eval_perplexity",
        "epoch_train_loss",
    }
    assert summary["predictions"] is None and summary["registered_version"] is None
    assert versions(client, model) == ["1"] and aliases_of(client, model) == {
        "candidate": "1",
        "live": "1",
    }
    (record,) = reproduce_runs(client, "llm", model, "reproduce")
    assert record.data.tags["mlcp.verdict"] == summary["verdict"]


# ------------------------------------------------------------------ the template and the CLI


def test_the_template_passes_every_flag_of_the_cli_with_its_defaults():
    from steps.cli import build_parser

    doc = yaml.safe_load(build.generate()["reproduce.yaml"])
    (template,) = doc["spec"]["templates"]
    container = template["container"]
    assert container["command"] == ["mlcp"] and container["args"][0] == "reproduce"
    assert doc["metadata"]["labels"]["mlcp.io/role"] == "training"
    inputs = {p["name"]: p for p in template["inputs"]["parameters"]}
    assert "default" not in inputs["model-name"] and inputs["alias"]["default"] == "live"
    # every declared flag (and nothing else) is a parameter of the same name
    parser = build_parser(["reproduce"])
    group = next(a for a in parser._actions if a.dest == "command")
    cli_flags = {
        flag
        for action in group.choices["reproduce"]._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }
    flags = {arg.split("=", 1)[0] for arg in container["args"][1:]}
    assert flags == cli_flags
    # the template's arguments, filled with their defaults, parse as the CLI's defaults
    values = {name: p.get("default", "m") for name, p in inputs.items()}
    argv = []
    for arg in container["args"]:
        for name, value in values.items():
            arg = arg.replace("{{inputs.parameters." + name + "}}", value)
        argv.append(arg)
    from_template = vars(parser.parse_args(argv))
    from_cli = vars(parser.parse_args(["reproduce", "--model-name", "m"]))
    assert from_template == from_cli
    assert (from_cli["alias"], from_cli["tolerance"], from_cli["device"]) == (
        "live",
        1e-6,
        "recorded",
    )
    # the reproduce command is not a core command: it needs the pipelines' declarations
    from steps import cli

    assert "reproduce" not in cli.CORE_COMMANDS
