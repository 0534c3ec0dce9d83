"""The promote path's REST client (steps/base/rest.py) against the real tracking server.

Given/when/then: the real ``mlcp`` commands, in their own processes, never import
``mlflow``; the REST client and ``MlflowClient`` read the same entities; a move recorded by
the old path (``MlflowClient``) and one recorded by the new (REST) read the same in
``history``; refusals map to the project's errors; credentials are sent as MLflow sends them.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from steps.base import rest
from steps.base.errors import BadInput
from steps.registry import aliases, moves, promote

from . import switching


def run_watched(*args: str) -> tuple[int, list[str], str]:
    """``mlcp ARGS`` in a new process: its exit code, the mlflow modules it imported, its
    output."""
    return switching.watched(*args, timeout=120)


def test_promote_rollback_history_never_import_mlflow(stack_env, models):
    # given a model with two versions, each with a passing gate and a policy requiring it
    name = models.create(2)
    for version in ("1", "2"):
        models.pass_gate(name, version, "quality")
    models.client.set_registered_model_tag(name, "mlcp.policy.require_gates", "quality")
    promote = ("promote", "--model-name", name, "--source-alias", "benchmarked")
    promote += ("--target-alias", "live", "--reason", "ship it")
    steps = [("1", promote), ("2", promote)] + [
        (None, command)
        for command in (
            ("rollback", "--model-name", name, "--reason", "v2 regressed"),
            ("history", "--model-name", name),
            ("history", "--model-name", name, "--alias", "live", "--json"),
            ("policy", "show", "--model-name", name),
        )
    ]
    for version, command in steps:
        if version:
            models.set_alias(name, "benchmarked", version)
        # when each runs in its own process
        code, loaded, output = run_watched(*command)
        # then it succeeds without importing mlflow at all
        assert code == 0, output[-3000:]
        assert loaded == [], f"`mlcp {command[0]}` imported {loaded[:5]}"
    # and the moves happened: live back on v1, v2 rolled back
    assert models.aliases(name) == {"benchmarked": "2", "live": "1"}
    assert models.client.get_model_version(name, "2").tags["mlcp.rolled_back"] == "true"


def test_a_refused_command_does_not_import_mlflow_either(stack_env, models):
    name = models.create(1)
    code, loaded, output = run_watched("rollback", "--model-name", name)
    assert code == 2, output
    assert "no previous version" in output
    assert loaded == []


def test_rest_client_reads_what_mlflow_client_reads(stack_env, models, client):
    # given a model with aliases and tags, and a gate decision run
    name = models.create(2)
    models.set_alias(name, "staged", "2")
    decision = models.pass_gate(name, "2", "quality")
    api = rest.Client()
    # then registered model, version and run read the same through both clients
    ours, theirs = api.get_registered_model(name), client.get_registered_model(name)
    assert ours.aliases == {a: str(v) for a, v in theirs.aliases.items()}
    assert ours.tags == theirs.tags
    ours_v, theirs_v = api.get_model_version(name, "2"), client.get_model_version(name, "2")
    assert (ours_v.tags, ours_v.run_id, ours_v.source) == (
        theirs_v.tags,
        theirs_v.run_id,
        theirs_v.source,
    )
    run_id = theirs_v.tags["mlcp.gate.quality.run_id"]
    assert decision.run_id == run_id
    ours_r, theirs_r = api.get_run(run_id), client.get_run(run_id)
    assert ours_r.data.tags == theirs_r.data.tags
    assert ours_r.data.params == theirs_r.data.params
    assert ours_r.data.metrics == theirs_r.data.metrics
    assert (ours_r.info.status, ours_r.info.start_time, ours_r.info.artifact_uri) == (
        theirs_r.info.status,
        theirs_r.info.start_time,
        theirs_r.info.artifact_uri,
    )


def test_history_written_by_the_old_and_the_new_path_reads_the_same(stack_env, models, client):
    # given two models with the same versions, one moved through MlflowClient (the old
    # path), the other through the REST client (the new), with the same moves
    old, new = models.create(3), models.create(3)
    for name, mover in ((old, client), (new, rest.Client())):
        for version in ("1", "2", "3"):
            models.set_alias(name, "benchmarked", version)
            promote.promote(name, "benchmarked", "live", reason=f"v{version}", client=mover)
        promote.rollback(name, reason="back", client=mover)
        promote.promote(name, "benchmarked", "live", reason="again", client=mover)
    # then each history reads the same through either client
    for name in (old, new):
        through_mlflow = moves.history(client, name)
        through_rest = moves.history(rest.Client(), name)
        assert [asdict(r) for r in through_rest] == [asdict(r) for r in through_mlflow]

    # and the two paths recorded the same moves, field for field (but ids and times)
    def shape(name):
        keep = []
        for record in moves.history(rest.Client(), name):
            fields = asdict(record)
            for key in ("run_id", "time", "seq", "model", "gate_runs"):
                fields.pop(key)
            keep.append(fields)
        return keep

    assert shape(old) == shape(new)
    assert len(shape(new)) == 9  # 1 + 2 + 2 promotions, 2 rollback records, 2 re-promotion
    # and the records' runs carry the same tags and params
    old_runs = [client.get_run(r.run_id) for r in moves.history(client, old)]
    new_runs = [client.get_run(r.run_id) for r in moves.history(client, new)]
    for a, b in zip(old_runs, new_runs, strict=True):
        assert sorted(a.data.tags) == sorted(b.data.tags)
        assert {k: v for k, v in a.data.params.items() if k != "model"} == {
            k: v for k, v in b.data.params.items() if k != "model"
        }
        assert a.info.run_name.replace(old, "M") == b.info.run_name.replace(new, "M")
    # and rollback reads either history: the stack replays to the same versions
    assert models.aliases(old) == models.aliases(new)


def test_refusals_map_to_mlflow_error_codes_and_project_errors(stack_env, models):
    api = rest.Client()
    with pytest.raises(rest.ApiError) as missing:
        api.get_registered_model("no-such-model-anywhere")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert rest.error_code(missing.value) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(BadInput, match="does not exist"):
        aliases.get_model(api, "no-such-model-anywhere")
    name = models.create(1)
    with pytest.raises(BadInput, match="has no version 7"):
        aliases.get_version(api, name, 7)
    assert api.get_experiment_by_name("no/such-experiment") is None


def test_an_unreachable_server_is_an_error_not_a_hang(stack_env, monkeypatch):
    from steps.local import stack

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    api = rest.Client(f"http://127.0.0.1:{stack.free_port()}")
    with pytest.raises(rest.ApiError) as caught:
        api.get_registered_model("x")
    assert caught.value.error_code == "UNREACHABLE"


class _Recorder(BaseHTTPRequestHandler):
    """Answers like MLflow's registered-models/get and keeps the Authorization header.
    (The real server with --app-name basic-auth needs an admin set up per run; what is
    checked here is the header MLflow's client sends, byte for byte.)"""

    seen: list[str | None] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append(self.headers.get("Authorization"))
        body = json.dumps({"registered_model": {"name": "m", "aliases": [], "tags": []}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_credentials_are_sent_as_mlflow_sends_them(monkeypatch, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_port}"
    try:
        for var in (
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
        ):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))  # no credentials file yet
        rest.Client(uri).get_registered_model("m")
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123")
        rest.Client(uri).get_registered_model("m")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ann")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
        rest.Client(uri).get_registered_model("m")  # basic wins over a token, as in MLflow
        # MLflow's credentials file, each variable winning over its line
        (tmp_path / ".mlflow").mkdir()
        (tmp_path / ".mlflow" / "credentials").write_text(
            "[mlflow]\nmlflow_tracking_username = bob\nmlflow_tracking_password = from-file\n"
        )
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        rest.Client(uri).get_registered_model("m")
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
        rest.Client(uri).get_registered_model("m")
    finally:
        server.shutdown()
    basic = "Basic " + base64.b64encode(b"ann:s3cret").decode()
    mixed = "Basic " + base64.b64encode(b"ann:from-file").decode()
    from_file = "Basic " + base64.b64encode(b"bob:from-file").decode()
    assert _Recorder.seen == [None, "Bearer tok-123", basic, mixed, from_file]


def test_tls_settings_reach_the_connection(monkeypatch, tmp_path):
    import ssl

    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    context = rest.Client("https://127.0.0.1:1")._ssl_context()
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    monkeypatch.delenv("MLFLOW_TRACKING_INSECURE_TLS")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tmp_path / "missing-ca.pem"))
    with pytest.raises(FileNotFoundError):  # the CA bundle named is the one loaded
        rest.Client("https://127.0.0.1:1")._ssl_context()
