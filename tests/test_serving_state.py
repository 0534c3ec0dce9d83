"""``mlcp serving check|sync`` and ``mlcp audit`` against the real stack: MLflow, S3 and every
Triton replica the session runs. The versions are tiny ONNX nets (nothing is trained).

A slot is "loaded by hand" through the back end itself (the same loads the pipeline makes,
without a record), and an alias is "moved outside mlcp" with the plain MLflow client.
"""

from __future__ import annotations

import json

import pytest

from steps.registry import moves
from steps.spec.contract import LIVE, live_slot

from . import switching
from .conftest import unique


@pytest.fixture(scope="module")
def served_model(stack_env, client, tmp_path_factory):
    """A model served by Triton, v1 and v2, ``benchmarked`` = v1 written as a stage writes
    it, then v1 promoted to live: every state so far has its record."""
    from steps.registry import promote

    name = unique("serving-state")
    switching.register_onnx_versions(
        client, tmp_path_factory.mktemp("serving-onnx"), name, seeds=(1, 2)
    )
    moves.assign(name, "benchmarked", "1", reason="test: a stage wrote it")
    promote.promote(name, "benchmarked", LIVE, reason="test: v1 live")
    return name


def promote_recorded(mlcp, model: str, version: str):
    """``benchmarked`` -> version written as a stage writes it, then ``mlcp promote`` to live:
    every state it leaves has its record. The command's result."""
    moves.assign(model, "benchmarked", version, reason="test: a stage wrote it")
    return mlcp(
        "promote", "--model-name", model, "--source-alias", "benchmarked", "--target-alias", LIVE
    )


def _server(client, model):
    from steps.registry import backends as backend

    return backend.for_model(model, dict(client.get_registered_model(model).tags))


def _check_runs(client, model):
    experiment = client.get_experiment_by_name("test/serving")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlcp.model` = '{model}'",
        order_by=["attributes.start_time DESC"],
    )
    return runs


def test_check_sees_drift_that_sync_repairs_and_audit_reports(served_model, client, mlcp):
    model, slot = served_model, live_slot(served_model)
    replicas = [s.replica for s in _server(client, model).served(model, slot)]
    # given v1 live and served everywhere: the check agrees, one line per replica and slot
    ok = mlcp("serving", "check", "--model-name", model)
    assert ok.code == 0, ok.err[-2000:]
    lines = [line for line in ok.out.splitlines() if line.startswith(f"{model}: ")]
    assert len(lines) == 2 * len(replicas)  # live and staged on every replica
    assert not any(line.startswith(f"{model}: DRIFT") for line in lines)
    assert sum("live=v1, serves v1" in line for line in lines) == len(replicas)
    assert _check_runs(client, model)[0].data.tags["mlcp.serving.agrees"] == "true"
    audit = mlcp("audit", "--model-name", model)
    assert audit.code == 0, audit.out + audit.err[-2000:]
    assert "every state is explained" in audit.out

    # when v2 is loaded into the live slot by hand (no record, live still names v1)
    _server(client, model).load_live(client, model, "2")
    drift = mlcp("serving", "check", "--model-name", model)
    # then the check says so on every replica (exit 3), and records it
    assert drift.code == 3, drift.err[-2000:]
    drifted = [line for line in drift.out.splitlines() if line.startswith(f"{model}: DRIFT")]
    assert len(drifted) == len(replicas)
    assert all(slot in line and "live=v1, serves v2" in line for line in drifted)
    run = _check_runs(client, model)[0]
    assert run.data.tags["mlcp.serving.agrees"] == "false"
    assert run.data.metrics["drifted"] == len(replicas)
    # and the audit names the slot, what the alias says and what the server serves
    audit = mlcp("audit", "--model-name", model)
    assert audit.code == 3, audit.out + audit.err[-2000:]
    for replica in replicas:
        assert f"slot {slot} on {replica}: expected live=v1 served; found serves v2" in audit.out
    assert f"{model}: alias " not in audit.out  # the aliases are all explained

    # when sync runs: the slot serves v1 again everywhere, and the repair is recorded
    repaired = mlcp("serving", "sync", "--model-name", model, "--reason", "test")
    assert repaired.code == 0, repaired.err[-2000:]
    assert "live slot now serves v1" in repaired.out
    assert {s.version for s in _server(client, model).served(model, slot)} == {"1"}
    again = mlcp("serving", "check", "--model-name", model, "--json")
    assert again.code == 0
    assert all(r["agrees"] for r in json.loads(again.out)[model]["rows"])
    record = moves.history(client, model, LIVE)[-1]
    assert (record.action, record.to_version, record.from_version) == ("sync", "1", "2")
    assert record.status == "FINISHED" and "serving sync of" in record.reason
    assert client.get_registered_model(model).aliases[LIVE] == "1"  # sync moves no alias
    nothing = mlcp("serving", "sync", "--model-name", model)
    assert nothing.code == 0 and "already agrees" in nothing.out


def test_audit_finds_an_alias_moved_outside_mlcp_until_promote_explains_it(
    served_model, client, mlcp
):
    model = served_model
    # given live moved to v2 with the plain MLflow client, behind mlcp's back
    client.set_registered_model_alias(model, LIVE, "2")
    audit = mlcp("audit", "--model-name", model)
    # then the audit names the alias, the record's version and the registry's (exit 3)
    assert audit.code == 3, audit.out + audit.err[-2000:]
    (line,) = [x for x in audit.out.splitlines() if f"{model}: alias live:" in x]
    assert "expected v1 (recorded" in line and line.endswith("found live=v2")
    # and the slot that still serves v1 is reported against the alias that names v2
    assert "expected live=v2 served; found serves v1" in audit.out
    runs = client.search_runs(
        [client.get_experiment_by_name("test/audit").experiment_id],
        filter_string=f"tags.`mlcp.model` = '{model}'",
        order_by=["attributes.start_time DESC"],
    )
    assert runs[0].data.metrics["findings"] >= 2
    assert "alias live" in runs[0].data.tags["mlcp.audit.findings"]
    # when mlcp promote puts v2 live properly (recorded, loaded), everything is explained
    promoted = promote_recorded(mlcp, model, "2")
    assert promoted.code == 0, promoted.err[-2000:]
    clean = mlcp("audit", "--model-name", model)
    assert clean.code == 0, clean.out + clean.err[-2000:]


def test_a_refused_move_shows_in_history_and_moves_nothing(stack_env, client, mlcp, tmp_path):
    name = unique("refused")
    switching.register_onnx_versions(client, tmp_path, name, seeds=(1, 2))
    assert promote_recorded(mlcp, name, "1").code == 0
    # given v2, whose ONNX export was never recorded (no deploy): the server cannot load it
    client.delete_model_version_tag(name, "2", "mlcp.onnx_uri")
    refused = promote_recorded(mlcp, name, "2")
    assert refused.code == 2 and "never deployed" in refused.err
    assert client.get_registered_model(name).aliases[LIVE] == "1"
    history = mlcp("history", "--model-name", name, "--alias", "live")
    assert history.code == 0
    (line,) = [x for x in history.out.splitlines() if "refused" in x]
    assert "v1 -> v2" in line and "[refused, nothing moved:" in line and "never deployed" in line
    # rollback's replay ignores it: the refused move is not part of live's stack
    assert moves.live_stack(moves.history(client, name)) == ["1"]


def test_check_refuses_what_it_cannot_compare(stack_env, client, mlcp, models):
    unserved = models.create(versions=1)
    no_backend = mlcp("serving", "check", "--model-name", unserved)
    assert no_backend.code == 2 and "has no serving back end" in no_backend.err
    missing = mlcp("serving", "sync", "--model-name", unique("missing"))
    assert missing.code == 2 and "does not exist" in missing.err
    assert mlcp("audit", "--model-name", unique("missing")).code == 2


def test_check_and_sync_of_one_back_end_leave_the_other_back_ends_models_alone(
    served_model, models, mlcp
):
    # given a model served by Triton, and one whose back end is vLLM (no vLLM runs here)
    from steps.spec.contract import SERVING_TAG

    other = models.create(1, prefix="served-by-vllm")
    models.client.set_registered_model_tag(other, SERVING_TAG, "vllm")
    # when the check and the sync are asked for Triton's models only, as `mlcp stack up`
    # asks for the servers it runs, then the vLLM model is neither compared nor touched
    check = mlcp("serving", "check", "--serving", "triton", "--json", timeout=300)
    assert served_model in json.loads(check.out), check.err[-2000:]
    assert other not in json.loads(check.out)
    sync = mlcp("serving", "sync", "--serving", "triton", "--json", timeout=300)
    assert other not in json.loads(sync.out)["repaired"], sync.err[-2000:]
    # an unknown back end is bad input, naming the known ones
    from steps.registry import backends

    bad = mlcp("serving", "sync", "--serving", "nope")
    known = ", ".join(sorted(backends.known()))  # every installed one (a plugin's too)
    assert {"triton", "vllm"} <= set(backends.known())
    assert bad.code == 2 and f"unknown serving back end(s) nope; choose from {known}" in bad.err
