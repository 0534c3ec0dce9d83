"""What MLflow's UI shows before anyone opens a run, read back through MLflow's API from the
session's real tracking server: each experiment's kind (which view the UI opens it on) and
description, a registered model's description, and a version's description as the stages
that produced and judged it write it. The CV chain's own descriptions are checked on its
shared champion (tests/test_cv_pipeline.py); nothing here trains."""

from __future__ import annotations

import pytest

import steps.spec.pipelines
from steps.base.errors import GateFailed
from steps.decisions import gates
from steps.records import tracking
from steps.records.lineage import DataRead
from steps.registry import audit, describe, policy, serving_state
from steps.registry.promote import PROMOTE
from steps.spec import experiments
from steps.spec.contract import REQUIRED_GATES_TAG, SERVING_TAG
from steps.spec.declare import declared_pipeline
from steps.stages import reproduce, workflow_exit
from steps.stages.stage import Reporter

from .conftest import unique

steps.spec.pipelines.installed()  # declares every installed pipeline, as the CLI does
KIND, NOTE = experiments.KIND_TAG, experiments.DESCRIPTION_TAG


def test_the_control_plane_experiments_are_named_as_their_modules_record_them():
    assert set(experiments.CONTROL_PLANE) == {
        PROMOTE.name,  # steps/registry/moves.py records alias moves in <pipeline>/promote
        policy.STAGE,
        reproduce.NAME,
        workflow_exit.STAGE,
        serving_state.STAGE,  # steps/registry/serving_state.py records checks in <pipeline>/serving
        audit.STAGE,
    }


def experiment_names() -> list[tuple[str, str]]:
    """Every experiment a declared pipeline's runs go to: its stages, its drift step and the
    control plane's records."""
    names = []
    for name in ("cv", "llm"):
        pipeline = declared_pipeline(name)
        stages = [*pipeline.stages, *([pipeline.drift] if pipeline.drift else [])]
        names += [(name, stage.name) for stage in stages]
        names += [(name, stage) for stage in experiments.CONTROL_PLANE]
    return names


def test_every_experiment_opens_on_its_kind_with_a_description(client):
    for pipeline, stage in experiment_names():
        name = tracking.experiment_name(pipeline, stage)
        tracking.ensure_experiment(client, name)
        tags = client.get_experiment_by_name(name).tags
        genai = (pipeline, stage) == ("llm", "evaluate")
        kind = "genai_development" if genai else "custom_model_development"
        assert tags[KIND] == kind, name
        # what is recorded there, and (MLflow 3.17's UI follows a global switch) which view
        assert tags[NOTE].startswith("One run per "), name
        assert tags[NOTE].endswith(experiments.VIEW[kind]), name
        if stage not in experiments.CONTROL_PLANE:
            assert f"`mlcp {pipeline} {stage}`" in tags[NOTE], name
    evaluate = client.get_experiment_by_name("llm/evaluate").tags[NOTE]
    assert "correct-rate" in evaluate and "trace" in evaluate
    assert "min-val-accuracy" in client.get_experiment_by_name("cv/train").tags[NOTE]


def test_an_older_experiment_gets_what_it_lacks_and_keeps_what_was_changed(client):
    name = tracking.experiment_name("cv", "deploy")
    experiment_id = tracking.ensure_experiment(client, name)
    # an experiment created before kinds (no tags), whose description someone edited
    client.delete_experiment_tag(experiment_id, KIND)
    client.set_experiment_tag(experiment_id, NOTE, "edited in the UI")
    assert KIND not in client.get_experiment(experiment_id).tags
    assert tracking.ensure_experiment(client, name) == experiment_id
    tags = client.get_experiment(experiment_id).tags
    assert tags[KIND] == "custom_model_development"
    assert tags[NOTE] == "edited in the UI"
    client.delete_experiment_tag(experiment_id, NOTE)  # back as the stage writes it
    tracking.ensure_experiment(client, name)
    assert client.get_experiment(experiment_id).tags[NOTE].startswith("One run per `mlcp cv")


def test_an_undeclared_experiment_gets_no_claim():
    assert experiments.experiment_tags("cv", "no-such-stage") == {}
    assert experiments.experiment_tags("no-such-pipeline", "train") == {}


def test_a_registered_model_says_what_it_is_and_how_to_roll_back(client):
    model = unique("adapter")
    describe.register_model(client, model, "llm")
    registered = client.get_registered_model(model)
    text = registered.description
    assert declared_pipeline("llm").model_description in text
    assert "`llm` pipeline" in text and "`vllm` back end" in text
    assert f"`{model}-live`" in text and f"`{model}-staged`" in text
    assert f"`mlcp rollback --model-name {model}`" in text
    assert (
        f"`argo submit --from workflowtemplate/promote -p model-name={model} "
        "-p source-alias=previous -p target-alias=live`" in text
    )
    assert registered.tags[SERVING_TAG] == "vllm"
    assert set(registered.tags[REQUIRED_GATES_TAG].split(",")) == set(
        declared_pipeline("llm").gates
    )
    # registering again keeps an edited description
    client.update_registered_model(model, description="edited")
    describe.register_model(client, model, "llm")
    assert client.get_registered_model(model).description == "edited"


def test_a_model_registered_before_descriptions_gets_one(client):
    model = unique("digits")
    client.create_registered_model(model, tags={"mlcp.pipeline": "cv"})
    describe.register_model(client, model, "cv")
    registered = client.get_registered_model(model)
    assert registered.description.startswith(declared_pipeline("cv").model_description)
    assert registered.tags[SERVING_TAG] == "triton"
    assert REQUIRED_GATES_TAG not in registered.tags  # an existing model's policy is its own


def test_a_version_says_what_trained_it_and_which_gates_it_passed(client, models):
    model = models.create(pipeline="cv", prefix="described")
    read = DataRead("s3://bucket/data/cv/digits/base-seed0/digits.npz", b"", "ab12" * 16)
    Reporter("cv", "train").describe_trained(client, model, "1", read, "val_accuracy", 0.93125)
    evaluate = Reporter("cv", "evaluate")
    accuracy = gates.Gate("accuracy", "accuracy", ">=", 0.8)
    evaluate.judge([(accuracy, 0.9)], model=model, version="1")
    with pytest.raises(GateFailed):  # a refusal adds nothing
        evaluate.judge([(accuracy, 0.5)], model=model, version="1")
    assert client.get_model_version(model, "1").description.split("\n") == [
        f"Trained by `mlcp cv train` on data `{read.digest}` ({read.uri}): val_accuracy 0.9313.",
        "- `mlcp cv evaluate` passed accuracy (accuracy 0.9 >= 0.8)",
    ]
    # judged again: the stage's line is replaced, not repeated; another stage adds its own
    evaluate.judge([(accuracy, 0.95)], model=model, version="1")
    perf = gates.Gate("p95", "p95_ms", "<=", 500)
    Reporter("cv", "perf-test").judge([(perf, 42.5)], model=model, version="1")
    assert client.get_model_version(model, "1").description.split("\n")[1:] == [
        "- `mlcp cv evaluate` passed accuracy (accuracy 0.95 >= 0.8)",
        "- `mlcp cv perf-test` passed p95 (p95_ms 42.5 <= 500)",
    ]
