"""The promotion policy (steps/registry/policy.py) against the real MLflow server: the gates a
model's
registered-model tag requires are enforced on every promotion to live, with or without
``--require-gates``; only ``--force --reason`` bypasses them; a rollback is not checked again
but links the decisions; ``mlcp policy set`` is itself recorded."""

from __future__ import annotations

import json

import pytest

from steps.base.errors import GateFailed
from steps.registry import moves, promote
from steps.spec.contract import ACTOR_TAG, KIND_TAG, REQUIRED_GATES_TAG

from .conftest import run_mlcp


def with_policy(models, client, gates: str, versions: int = 1) -> str:
    """A model whose policy requires ``gates``, set the way a person would."""
    name = models.create(versions)
    result = run_mlcp(
        "policy", "set", "--model-name", name, "--require-gates", gates, "--reason", "audit"
    )
    assert result.code == 0, result.err
    assert client.get_registered_model(name).tags[REQUIRED_GATES_TAG] == gates
    return name


def promote_live(name: str, *more: str):
    return run_mlcp(
        "promote", "--model-name", name, "--source-alias", "benchmarked", "--target-alias", "live",
        *more,
    )  # fmt: skip


def test_the_policy_is_enforced_without_require_gates_and_only_force_bypasses_it(models, client):
    name = with_policy(models, client, "quality")
    models.set_alias(name, "benchmarked", "1")
    # no --require-gates, no decision: refused, the policy named, nothing moved or recorded
    refused = promote_live(name)
    assert refused.code == 3, refused.err
    assert "quality (no decision recorded)" in refused.err
    assert "required by the model's policy" in refused.err
    assert models.aliases(name) == {"benchmarked": "1"}
    assert moves.history(client, name) == []
    # forced with a reason: through, and recorded as forced
    forced = promote_live(name, "--force", "--reason", "incident 42")
    assert forced.code == 0, forced.err
    record = moves.history(client, name, "live")[-1]
    assert record.forced and record.reason == "incident 42" and record.to_version == "1"
    # --force without a reason is bad input
    unexplained = promote_live(name, "--force")
    assert unexplained.code == 2 and "--force needs --reason" in unexplained.err


def test_require_gates_adds_to_the_policy_and_cannot_remove_from_it(models, client):
    name = with_policy(models, client, "quality", versions=2)
    models.set_alias(name, "benchmarked", "1")
    models.pass_gate(name, "1", "quality")

    def to_live(*required: str):
        return promote.promote(name, "benchmarked", "live", require_gates=required, client=client)

    # an extra gate without a decision: refused, although the policy's gate passed
    with pytest.raises(GateFailed, match="latency") as refused:
        to_live("latency")
    assert "quality" not in str(refused.value)
    # naming only another gate does not drop the policy's
    models.pass_gate(name, "1", "latency")
    models.set_alias(name, "benchmarked", "2")
    models.pass_gate(name, "2", "latency")
    with pytest.raises(GateFailed, match="quality"):
        to_live("latency")
    assert "live" not in models.aliases(name)
    # v1 has both: it goes live, and its record links both decisions
    models.set_alias(name, "benchmarked", "1")
    to_live("latency")
    record = moves.history(client, name, "live")[-1]
    assert len(record.gate_runs) == 2 and not record.forced


def test_a_rollback_is_not_checked_again_but_links_the_decisions(models, client):
    name = with_policy(models, client, "quality", versions=2)
    for version in ("1", "2"):
        models.pass_gate(name, version, "quality")
        models.set_alias(name, "benchmarked", version)
        promote.promote(name, "benchmarked", "live", client=client)
    # the policy grows after v1 went live: a rollback to v1 is still allowed
    grown = run_mlcp(
        "policy", "set", "--model-name", name, "--require-gates", "quality,fairness",
        "--reason", "new rule",
    )  # fmt: skip
    assert grown.code == 0, grown.err
    rollback = run_mlcp("rollback", "--model-name", name)
    assert rollback.code == 0, rollback.err
    assert models.aliases(name)["live"] == "1"
    record = next(r for r in moves.history(client, name, "live")[::-1] if r.action == "rollback")
    quality = client.get_model_version(name, "1").tags["mlcp.gate.quality.run_id"]
    assert record.gate_runs == [quality] and not record.forced
    # while a promotion to live now needs the new gate too
    models.set_alias(name, "benchmarked", "2")
    with pytest.raises(GateFailed, match="fairness"):
        promote.promote(name, "benchmarked", "live", client=client)


def test_policy_show_and_set_are_recorded_and_refuse_bad_input(models, client):
    name = models.create(1)
    shown = run_mlcp("policy", "show", "--model-name", name)
    assert shown.code == 0 and "no policy recorded" in shown.out
    changed = run_mlcp(
        "policy", "set", "--model-name", name, "--require-gates", "accuracy,error-rate",
        "--reason", "the quarterly review", "--json",
    )  # fmt: skip
    assert changed.code == 0, changed.err
    result = json.loads(changed.out)
    assert result["require_gates"] == ["accuracy", "error-rate"] and result["before"] is None
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[KIND_TAG] == "policy"
    assert run.data.tags["mlcp.reason"] == "the quarterly review"
    assert run.data.tags["mlcp.policy.before"] == "unset"
    assert run.data.tags["mlcp.policy.after"] == "accuracy,error-rate"
    assert run.data.tags[ACTOR_TAG]
    shown = run_mlcp("policy", "show", "--model-name", name)
    assert "requires accuracy, error-rate" in shown.out
    # bad input: exit 2, the policy unchanged
    for args, message in (
        (("--require-gates", "Bad Gate", "--reason", "x"), "invalid gate name"),
        (("--require-gates", "accuracy", "--reason", " "), "needs --reason"),
    ):
        bad = run_mlcp("policy", "set", "--model-name", name, *args)
        assert bad.code == 2 and message in bad.err, bad.err
    missing = run_mlcp("policy", "set", "--model-name", name + "-nope", "--require-gates",
                       "a", "--reason", "x")  # fmt: skip
    assert missing.code == 2 and "does not exist" in missing.err
    tags = client.get_registered_model(name).tags
    assert tags[REQUIRED_GATES_TAG] == "accuracy,error-rate"
