"""``mlcp record-exit``: the Argo exit handler's step, against the session's real MLflow.

The failures are what Argo's ``{{workflow.failures}}`` holds when a step fails: every failed
node (the workflow, the steps group, the retry parent and the pod), in no particular order.
"""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from steps.base.errors import BadInput
from steps.local import stack
from steps.spec.contract import (
    ARGO_TAG_PREFIX,
    EXIT_CODE_TAG,
    EXIT_REASON_TAG,
    FAILED_STEP_TAG,
    FAILED_TEMPLATE_TAG,
    KIND_TAG,
    MODEL_TAG,
    NOTIFICATION_TAG,
    PIPELINE_TAG,
    REFUSED_BY_TAG,
    WORKFLOW_STATUS_TAG,
)
from steps.stages.workflow_exit import (
    EXIT,
    ExitConfig,
    exit_meaning,
    failed_step,
    failures_of,
    parse_failures,
)

from .conftest import unique

WORKFLOW_NAME_TAG = ARGO_TAG_PREFIX + "workflow_name"


def argo_failures(
    workflow: str,
    *,
    step: str = "evaluate",
    template: str = "cv-evaluate",
    message: str = "Error (exit code 3)",
    tries: int = 1,
    root_message: str = "child failed",
) -> list[dict]:
    """The failed nodes Argo lists for a workflow whose ``step`` failed ``tries`` times."""

    def node(name, msg, tmpl, second, pod=""):
        return {
            "displayName": name,
            "message": msg,
            "templateName": tmpl,
            "phase": "Failed",
            "podName": pod or f"{workflow}-{abs(hash(name)) % 10**9}",
            "finishedAt": f"2025-05-01T10:00:{second:02d}Z",
        }

    nodes = [
        node(workflow, root_message, "cv-pipeline", 50),
        node("[2]", "child failed", "cv-pipeline", 49),
        node(step, message, template, 48),
    ]
    for attempt in range(tries):
        nodes.append(
            node(f"{step}({attempt})", message, template, 10 + 10 * attempt, f"{workflow}-pod")
        )
    return nodes


def workflow_runs(client, pipeline: str) -> list:
    found = client.get_experiment_by_name(f"{pipeline}/workflow")
    if found is None:
        return []
    return client.search_runs([found.experiment_id])


def exit_args(model: str, pipeline: str, workflow: str, status: str, failures) -> list[str]:
    text = failures if isinstance(failures, str) else json.dumps(failures)
    return [
        "record-exit",
        "--model-name",
        model,
        "--pipeline",
        pipeline,
        "--workflow-name",
        workflow,
        "--status",
        status,
        "--failures",
        text,
    ]


def refuse(monkeypatch, model: str, version: str, pipeline: str, workflow: str, **gate):
    """A decision of an evaluate stage that ran in ``workflow`` (its env names the workflow)."""
    from steps.decisions import gates

    monkeypatch.setenv("ARGO_WORKFLOW_NAME", workflow)
    try:
        return gates.evaluate(
            gates.Gate(gate.get("name", "accuracy"), "accuracy", ">=", gate.get("threshold", 1.0)),
            model=model,
            version=version,
            value=gate.get("value", 0.41),
            pipeline=pipeline,
            stage="evaluate",
        )
    finally:
        monkeypatch.delenv("ARGO_WORKFLOW_NAME")


def registry_state(client, model: str) -> tuple[dict, dict]:
    registered = client.get_registered_model(model)
    versions = client.search_model_versions(f"name = '{model}'")
    return (
        {a: str(v) for a, v in registered.aliases.items()},
        {v.version: dict(v.tags) for v in versions},
    )


# ---------------------------------------------------------------------------- no stack


def test_the_declaration_is_a_core_command():
    # given the stage declaration / then it is `mlcp record-exit`, template record-exit
    assert EXIT.command == ("record-exit",)
    assert EXIT.template_name == "record-exit"
    assert EXIT.title and EXIT.description


def test_the_failed_step_is_the_pod_with_an_exit_code_that_finished_last():
    # given a step tried twice (exit 1, then exit 3), the nodes shuffled as Argo lists them
    nodes = argo_failures("wf-1", tries=2)
    nodes[-2]["message"] = "Error (exit code 1)"
    random.Random(7).shuffle(nodes)
    # when the failed step is worked out
    found = failed_step(failures_of(nodes), "wf-1")
    # then it is the last try, without its retry suffix
    assert (found.step, found.template, found.exit_code) == ("evaluate", "cv-evaluate", "3")


def test_a_step_without_exit_code_is_unknown_and_none_is_none():
    # given a deadline exceeded: no node carries an exit code
    nodes = argo_failures(
        "wf-2",
        message="Pod was active on the node longer than the specified deadline",
        root_message="Max duration limit exceeded",
    )
    # then the step (not the workflow's node nor the group) is named, exit code unknown
    found = failed_step(failures_of(nodes), "wf-2")
    assert (found.step, found.exit_code) == ("evaluate", "unknown")
    assert "deadline" in found.message
    # and no failures at all name no step
    assert failed_step([], "wf-2").step == "none"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "not valid JSON"),
        ('{"displayName": "x"}', "must be a JSON list"),
        ('["evaluate"]', "item 0 is not an object"),
    ],
)
def test_malformed_failures_are_bad_input(text, words):
    with pytest.raises(BadInput, match=words):
        parse_failures(text)


def test_empty_and_null_failures_mean_none():
    assert parse_failures("") == parse_failures("null") == parse_failures(" null ") == []


def test_a_config_built_in_python_is_checked_too():
    good = {"model_name": "m", "pipeline": "cv", "workflow_name": "wf-1", "status": "Failed"}
    ExitConfig(**good)
    for bad in (
        {"pipeline": "CV"},
        {"pipeline": "1cv"},
        {"workflow_name": "wf 1"},
        {"status": "Running"},
        {"failures": "[1"},
    ):
        with pytest.raises(BadInput):
            ExitConfig(**{**good, **bad})


def test_exit_codes_read_as_the_errors_module_says():
    assert "bad input" in exit_meaning("2")
    assert "gate" in exit_meaning("3")
    assert "error" in exit_meaning("1")
    assert "did not finish" in exit_meaning("unknown")


# ---------------------------------------------------------------------------- the stack


def test_a_gate_refused_workflow_is_recorded_with_the_gate_and_its_reason(
    mlcp, models, client, monkeypatch
):
    # given a model with an alias, and a workflow whose evaluate stage was refused by a gate
    pipeline, workflow = unique("exit"), unique("wf")
    model = models.create(1, pipeline=pipeline)
    models.set_alias(model, "staged", "1")
    refuse(monkeypatch, model, "1", pipeline, workflow)
    # and decisions that are not its refusals: a pass in it, a fail in another workflow
    refuse(monkeypatch, model, "1", pipeline, workflow, name="latency", threshold=0.1, value=0.5)
    refuse(monkeypatch, model, "1", pipeline, unique("wf"), name="recall")
    before = registry_state(client, model)
    failures = argo_failures(workflow)
    # when the exit handler runs (the handler's own env names no workflow)
    result = mlcp(*exit_args(model, pipeline, workflow, "Failed", failures))
    # then it succeeds and prints its summary
    assert result.code == 0, result.err
    summary = json.loads(result.out.strip().splitlines()[-1])
    assert summary["failed_step"] == "evaluate" and summary["exit_code"] == "3"
    assert summary["refused_by"] == ["accuracy"]
    assert summary["notified"] == "not configured"
    assert "[record-exit]" in result.err
    # and one run in <pipeline>/workflow says what failed and why
    runs = workflow_runs(client, pipeline)
    assert [r.info.run_id for r in runs] == [summary["run_id"]]
    run = runs[0]
    tags = run.data.tags
    assert run.info.run_name == workflow and run.info.status == "FAILED"
    assert tags[KIND_TAG] == "workflow"
    assert tags[PIPELINE_TAG] == pipeline and tags[MODEL_TAG] == model
    assert tags[WORKFLOW_NAME_TAG] == workflow
    assert tags[WORKFLOW_STATUS_TAG] == "Failed"
    assert tags[FAILED_STEP_TAG] == "evaluate"
    assert tags[FAILED_TEMPLATE_TAG] == "cv-evaluate"
    assert tags[EXIT_CODE_TAG] == "3"
    assert tags[REFUSED_BY_TAG] == "accuracy"
    assert tags[EXIT_REASON_TAG] == f"gate accuracy refused {model} v1: accuracy=0.41 misses >= 1"
    assert tags[NOTIFICATION_TAG] == "not configured"
    # and the failures are its artifact
    logged = client.download_artifacts(run.info.run_id, "failures.json")
    with open(logged) as fh:
        assert json.load(fh) == failures
    # and the registry is exactly as the failure left it
    assert registry_state(client, model) == before


def test_a_step_that_exits_1_without_a_decision_says_what_exit_1_means(
    mlcp, models, client, tmp_path
):
    # given a workflow whose train step errored twice (exit 1), no decision recorded
    pipeline, workflow = unique("exit"), unique("wf")
    model = models.create(1, pipeline=pipeline)
    failures = argo_failures(
        workflow, step="train", template="cv-train", message="Error (exit code 1)", tries=2
    )
    out = tmp_path / "outputs"
    # when the exit handler runs in a template (its outputs folder set)
    result = mlcp(
        *exit_args(model, pipeline, workflow, "Failed", failures),
        env={"MLCP_OUTPUT_DIR": str(out)},
    )
    # then the run names the step, exit 1 and its meaning, and no gate
    assert result.code == 0, result.err
    (run,) = workflow_runs(client, pipeline)
    tags = run.data.tags
    assert (tags[FAILED_STEP_TAG], tags[FAILED_TEMPLATE_TAG]) == ("train", "cv-train")
    assert tags[EXIT_CODE_TAG] == "1" and tags[REFUSED_BY_TAG] == ""
    reason = tags[EXIT_REASON_TAG]
    assert reason.startswith("step train failed: exit code 1, an error")
    assert "Error (exit code 1)" in reason
    # and the template's output names the run
    assert (out / "run-id").read_text() == run.info.run_id


def test_an_errored_workflow_without_exit_code_is_unknown(mlcp, models, client):
    pipeline, workflow = unique("exit"), unique("wf")
    model = models.create(1, pipeline=pipeline)
    failures = argo_failures(
        workflow,
        step="perf-test",
        template="cv-perf-test",
        message="Pod was active on the node longer than the specified deadline",
        root_message="Max duration limit exceeded",
    )
    for node in failures:
        node["phase"] = "Error"
    result = mlcp(*exit_args(model, pipeline, workflow, "Error", failures))
    assert result.code == 0, result.err
    (run,) = workflow_runs(client, pipeline)
    tags = run.data.tags
    assert tags[WORKFLOW_STATUS_TAG] == "Error" and run.info.status == "FAILED"
    assert (tags[FAILED_STEP_TAG], tags[EXIT_CODE_TAG]) == ("perf-test", "unknown")
    assert "did not finish" in tags[EXIT_REASON_TAG]
    assert "longer than the specified deadline" in tags[EXIT_REASON_TAG]


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Hook.received
    finally:
        server.shutdown()
        server.server_close()


def test_the_notification_is_posted_as_json(mlcp, models, client, monkeypatch, webhook):
    # given a gate-refused workflow and a webhook listening
    url, received = webhook
    pipeline, workflow = unique("exit"), unique("wf")
    model = models.create(1, pipeline=pipeline)
    refuse(monkeypatch, model, "1", pipeline, workflow)
    # when the exit handler runs with MLCP_NOTIFY_URL set
    result = mlcp(
        *exit_args(model, pipeline, workflow, "Failed", argo_failures(workflow)),
        env={"MLCP_NOTIFY_URL": f"{url}/hooks/mlcp"},
    )
    # then the webhook got one short JSON document naming the record
    assert result.code == 0, result.err
    (run,) = workflow_runs(client, pipeline)
    assert len(received) == 1
    path, content_type, document = received[0]
    assert path == "/hooks/mlcp" and content_type == "application/json"
    assert document == {
        "workflow": workflow,
        "status": "Failed",
        "pipeline": pipeline,
        "model": model,
        "failed_step": "evaluate",
        "template": "cv-evaluate",
        "exit_code": "3",
        "reason": f"gate accuracy refused {model} v1: accuracy=0.41 misses >= 1",
        "refused_by": ["accuracy"],
        "mlflow_run_id": run.info.run_id,
        "experiment": f"{pipeline}/workflow",
    }
    assert run.data.tags[NOTIFICATION_TAG] == "sent"


def test_an_unreachable_webhook_is_a_warning_not_a_failure(mlcp, models, client):
    pipeline, workflow = unique("exit"), unique("wf")
    model = models.create(1, pipeline=pipeline)
    secret = "/hooks/T000-secret-token"
    url = f"http://127.0.0.1:{stack.free_port()}{secret}"  # nothing listens there
    result = mlcp(
        *exit_args(model, pipeline, workflow, "Failed", argo_failures(workflow)),
        env={"MLCP_NOTIFY_URL": url},
    )
    assert result.code == 0, result.err
    assert "warning: notification failed:" in result.err
    (run,) = workflow_runs(client, pipeline)
    assert run.info.status == "FAILED"
    notified = run.data.tags[NOTIFICATION_TAG]
    assert notified.startswith("failed: ")
    assert json.loads(result.out.strip().splitlines()[-1])["notified"] == notified
    # the URL may hold a token: it is neither printed nor recorded
    assert secret not in result.err + result.out + notified


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"failures": '[{"displayName": '}, "--failures is not valid JSON"),
        ({"failures": '{"displayName": "evaluate"}'}, "--failures must be a JSON list"),
        ({"status": "Running"}, "Running"),
        ({"pipeline": "CV"}, "invalid pipeline name 'CV'"),
    ],
)
def test_bad_input_exits_2_and_records_nothing(mlcp, client, change, words):
    pipeline, workflow = unique("exit"), unique("wf")
    given = {"pipeline": pipeline, "status": "Failed", "failures": "[]", **change}
    result = mlcp(*exit_args("m", given["pipeline"], workflow, given["status"], given["failures"]))
    assert result.code == 2, result.err
    assert words in result.err
    assert "Traceback" not in result.err
    assert workflow_runs(client, pipeline) == []


def test_an_unreachable_tracking_server_fails_with_exit_1_for_argo_to_retry(tmp_path):
    # given no MLflow server where the handler looks / when it runs
    from .conftest import run_mlcp

    port = stack.free_port()  # nothing listens there
    result = run_mlcp(
        *exit_args("m", "cv", "wf-1", "Failed", argo_failures("wf-1")),
        env={
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            "MLCP_HOME": str(tmp_path),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        },
    )
    # then it fails with 1 (Argo's retryStrategy retries it), saying what it could not do
    assert result.code == 1, result.err
    assert "mlcp: error: cannot search the decisions of workflow wf-1" in result.err
    assert "Traceback" not in result.err
