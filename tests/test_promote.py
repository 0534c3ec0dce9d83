"""promote / rollback / history / lineage through the real CLI against the real stack."""

from __future__ import annotations

import json
import subprocess
import sys

from steps.registry import moves

from .conftest import ROOT


def live_history(client, name):
    return [r for r in moves.history(client, name, "live") if r.action != "noop"]


def promote_to_live(mlcp, models, name, version, *, reason="ship it"):
    models.set_alias(name, "benchmarked", version)
    result = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--reason",
        reason,
    )
    assert result.code == 0, result.err
    return result


def test_first_promotion_sets_live_and_no_previous(mlcp, models, client):
    # given a model with a benchmarked version and nothing live
    name = models.create(1)
    models.set_alias(name, "benchmarked", "1")
    # when it is promoted
    result = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--reason",
        "first release",
    )
    # then live names it, nothing is previous, and the move is recorded
    assert result.code == 0, result.err
    assert "live: unset -> v1" in result.out
    assert models.aliases(name) == {"benchmarked": "1", "live": "1"}
    records = moves.history(client, name)
    assert [(r.alias, r.from_version, r.to_version, r.action) for r in records] == [
        ("live", None, "1", "promote")
    ]
    assert records[0].reason == "first release"
    assert records[0].status == "FINISHED"
    assert records[0].actor


def test_normal_promotion_keeps_old_live_as_previous(mlcp, models, client):
    name = models.create(2)
    promote_to_live(mlcp, models, name, "1")
    promote_to_live(mlcp, models, name, "2", reason="better accuracy")
    assert models.aliases(name) == {"benchmarked": "2", "live": "2", "previous": "1"}
    made = [(r.alias, r.from_version, r.to_version) for r in moves.history(client, name)]
    assert made == [("live", None, "1"), ("previous", None, "1"), ("live", "1", "2")]


def test_two_rollbacks_in_a_row_do_not_swap(mlcp, models, client):
    # given v1, v2, v3 promoted in turn (live v3, previous v2)
    name = models.create(3)
    for version in ("1", "2", "3"):
        promote_to_live(mlcp, models, name, version)
    # when rolled back once
    first = mlcp("rollback", "--model-name", name, "--reason", "v3 latency spike")
    assert first.code == 0, first.err
    # then v2 is live and previous is the version live before v2 (v1), not v3
    assert models.aliases(name) == {"benchmarked": "3", "live": "2", "previous": "1"}
    tags = client.get_model_version(name, "3").tags
    assert tags["mlcp.rolled_back"] == "true"
    assert tags["mlcp.rolled_back_to"] == "2"
    # when rolled back again
    second = mlcp("rollback", "--model-name", name)
    assert second.code == 0, second.err
    # then v1 is live and nothing was live before it: previous is removed
    assert models.aliases(name) == {"benchmarked": "3", "live": "1"}
    assert client.get_model_version(name, "2").tags["mlcp.rolled_back"] == "true"
    live_moves = [(r.from_version, r.to_version, r.action) for r in live_history(client, name)]
    assert live_moves[-2:] == [("3", "2", "rollback"), ("2", "1", "rollback")]
    # and a third rollback is refused with nothing moved
    third = mlcp("rollback", "--model-name", name)
    assert third.code == 2
    assert "no previous version" in third.err
    assert models.aliases(name) == {"benchmarked": "3", "live": "1"}


def test_rollback_then_promote_then_rollback_follows_the_stack(mlcp, models, client):
    name = models.create(3)
    for version in ("1", "2", "3"):
        promote_to_live(mlcp, models, name, version)
    assert mlcp("rollback", "--model-name", name).code == 0  # live 2, previous 1
    promote_to_live(mlcp, models, name, "3", reason="fixed config")  # live 3, previous 2
    assert models.aliases(name)["previous"] == "2"
    assert mlcp("rollback", "--model-name", name).code == 0
    assert models.aliases(name) == {"benchmarked": "3", "live": "2", "previous": "1"}


def test_rollback_without_previous_is_refused_and_moves_nothing(mlcp, models, client):
    name = models.create(1)
    promote_to_live(mlcp, models, name, "1")
    before = len(moves.history(client, name))
    result = mlcp("rollback", "--model-name", name)
    assert result.code == 2
    assert "no previous version to roll back to" in result.err
    assert "live is v1" in result.err
    assert models.aliases(name) == {"benchmarked": "1", "live": "1"}
    assert len(moves.history(client, name)) == before


def test_unknown_model_and_alias_exit_2_and_move_nothing(mlcp, models, client):
    name = models.create(1)
    models.set_alias(name, "candidate", "1")
    missing_model = mlcp(
        "promote",
        "--model-name",
        name + "-nope",
        "--source-alias",
        "candidate",
        "--target-alias",
        "staged",
    )
    assert missing_model.code == 2
    assert f"registered model '{name}-nope' does not exist" in missing_model.err
    missing_alias = mlcp(
        "promote", "--model-name", name, "--source-alias", "benchmarked", "--target-alias", "live"
    )
    assert missing_alias.code == 2
    assert "has no alias 'benchmarked'" in missing_alias.err
    assert "candidate=v1" in missing_alias.err  # it lists the aliases that do exist
    bad_alias = mlcp(
        "promote", "--model-name", name, "--source-alias", "candidate", "--target-alias", "v2"
    )
    assert bad_alias.code == 2
    assert "reserved" in bad_alias.err
    assert mlcp("history", "--model-name", name + "-nope").code == 2
    # an alias the model never had: exit 2 as the exit codes promise, naming those it has
    bogus = mlcp("history", "--model-name", name, "--alias", "bogus")
    assert bogus.code == 2, bogus.out
    assert "has no alias 'bogus' and no recorded move of it (its aliases: candidate)" in bogus.err
    # an alias it has but whose moves no record holds (set by hand): listed as none, exit 0
    unrecorded = mlcp("history", "--model-name", name, "--alias", "candidate")
    assert (
        unrecorded.code == 0 and f"no recorded alias moves for {name}@candidate" in unrecorded.out
    )
    assert mlcp("lineage", f"{name}@nowhere").code == 2
    assert mlcp("lineage", "no-at-sign").code == 2
    assert models.aliases(name) == {"candidate": "1"}
    assert moves.history(client, name) == []


def test_live_refused_without_required_passing_gates(mlcp, models, client):
    from steps.decisions import gates

    name = models.create(2)
    models.set_alias(name, "benchmarked", "1")
    args = (
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--require-gates",
        "accuracy,latency",
    )
    # no decision at all
    none_yet = mlcp(*args)
    assert none_yet.code == 3
    assert "accuracy (no decision recorded)" in none_yet.err
    # one passing, one failing decision
    models.pass_gate(name, "1", "accuracy")
    gates.evaluate(
        gates.Gate("latency", "p95_ms", "<=", 50),
        model=name,
        version="1",
        value=80.0,
        pipeline="test",
        stage="perf-test",
    )
    failing = mlcp(*args)
    assert failing.code == 3
    assert "latency (fail)" in failing.err
    # a verdict tag set by hand, without a decision run behind it, is not proof
    client.set_model_version_tag(name, "2", "mlcp.gate.accuracy.verdict", "pass")
    client.set_model_version_tag(name, "2", "mlcp.gate.latency.verdict", "pass")
    models.set_alias(name, "benchmarked", "2")
    forged = mlcp(*args)
    assert forged.code == 3
    assert models.aliases(name) == {"benchmarked": "2"}
    assert moves.history(client, name) == []
    # with both decisions passing, it goes through and the move cites the decision runs
    models.set_alias(name, "benchmarked", "1")
    passing = gates.evaluate(
        gates.Gate("latency", "p95_ms", "<=", 100),
        model=name,
        version="1",
        value=80.0,
        pipeline="test",
        stage="perf-test",
    )
    ok = mlcp(*args)
    assert ok.code == 0, ok.err
    record = moves.history(client, name)[-1]
    assert passing.run_id in record.gate_runs
    assert len(record.gate_runs) == 2


def test_force_needs_a_reason_and_is_recorded(mlcp, models, client):
    name = models.create(1)
    models.set_alias(name, "benchmarked", "1")
    base = (
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--require-gates",
        "accuracy",
        "--force",
    )
    no_reason = mlcp(*base)
    assert no_reason.code == 2
    assert "--reason" in no_reason.err
    assert "live" not in models.aliases(name)
    forced = mlcp(*base, "--reason", "hotfix for incident 42")
    assert forced.code == 0, forced.err
    assert models.aliases(name)["live"] == "1"
    record = moves.history(client, name)[-1]
    assert record.forced is True
    assert record.reason == "hotfix for incident 42"


def test_expected_version_mismatch_is_refused(mlcp, models, client):
    name = models.create(2)
    promote_to_live(mlcp, models, name, "1")
    models.set_alias(name, "benchmarked", "2")
    wrong_source = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--expect-version",
        "1",
    )
    assert wrong_source.code == 2
    assert "not the expected v1" in wrong_source.err
    wrong_target = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--expect-current",
        "2",
    )
    assert wrong_target.code == 2
    assert "live is v1, expected v2" in wrong_target.err
    assert models.aliases(name) == {"benchmarked": "2", "live": "1"}
    right = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--expect-version",
        "2",
        "--expect-current",
        "1",
    )
    assert right.code == 0, right.err
    assert models.aliases(name) == {"benchmarked": "2", "live": "2", "previous": "1"}


def test_rerun_is_a_recorded_noop(mlcp, models, client):
    name = models.create(2)
    promote_to_live(mlcp, models, name, "1")
    promote_to_live(mlcp, models, name, "2")
    again = mlcp(
        "promote", "--model-name", name, "--source-alias", "benchmarked", "--target-alias", "live"
    )
    assert again.code == 0, again.err
    assert "no-op" in again.out
    assert models.aliases(name) == {"benchmarked": "2", "live": "2", "previous": "1"}
    last = moves.history(client, name)[-1]
    assert (last.action, last.from_version, last.to_version) == ("noop", "2", "2")


def test_dry_run_changes_nothing(mlcp, models, client):
    name = models.create(2)
    promote_to_live(mlcp, models, name, "1")
    models.set_alias(name, "benchmarked", "2")
    before = len(moves.history(client, name))
    result = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--dry-run",
    )
    assert result.code == 0, result.err
    assert "[dry-run] would move" in result.out and "live: v1 -> v2" in result.out
    assert models.aliases(name) == {"benchmarked": "2", "live": "1"}
    assert len(moves.history(client, name)) == before
    gated = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        "--dry-run",
        "--require-gates",
        "accuracy",
    )
    assert gated.code == 3  # a dry run reports the refusal the real run would meet


def test_workflow_identity_and_actor_are_recorded(mlcp, models, client):
    name = models.create(1)
    models.set_alias(name, "benchmarked", "1")
    result = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        env={
            "ARGO_WORKFLOW_NAME": "cv-pipeline-x7k2p",
            "ARGO_WORKFLOW_UID": "uid-123",
            "MLCP_ACTOR": "alice",
        },
    )
    assert result.code == 0, result.err
    record = moves.history(client, name)[-1]
    assert (record.workflow_name, record.workflow_uid, record.actor) == (
        "cv-pipeline-x7k2p",
        "uid-123",
        "alice",
    )
    run = client.get_run(record.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "test/promote"
    assert run.data.params["to_version"] == "1"


def test_eight_concurrent_promoters_lose_no_move(backend_store):
    # on sqlite (the session's MLflow) and on PostgreSQL (the chart's backend store)
    models, client = backend_store.models, backend_store.client
    # given 8 versions, each named by its own source alias
    name = models.create(8)
    for version in range(1, 9):
        models.set_alias(name, f"cand-{version}", str(version))
    # when 8 processes promote them to live at the same moment
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "steps.cli",
                "promote",
                "--model-name",
                name,
                "--source-alias",
                f"cand-{version}",
                "--target-alias",
                "live",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in range(1, 9)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outputs
    # then every promotion is recorded, confirmed, and the records chain without a gap
    moves = live_history(client, name)
    assert len(moves) == 8
    assert all(r.status == "FINISHED" for r in moves)
    assert sorted(r.to_version for r in moves) == [str(v) for v in range(1, 9)]
    assert moves[0].from_version is None
    for before, after in zip(moves, moves[1:], strict=False):
        assert after.from_version == before.to_version
    # and the final aliases agree with the history
    final = models.aliases(name)
    assert final["live"] == moves[-1].to_version
    assert final["previous"] == moves[-1].from_version


def test_history_and_lineage_outputs(mlcp, models, client, tmp_path):
    import mlflow

    from steps.records import lineage, prompts, tracking

    name = models.create(0)
    data_file = tmp_path / "train.csv"
    data_file.write_text("x,y\n1,2\n3,4\n")
    with tracking.stage_run(
        "test", "train", name, "tiny-lineage", params={"epochs": 3}, system_metrics=False
    ) as run:
        read = lineage.read(str(data_file))
        lineage.log(read, name="train", num_rows=2, columns={"x": "long", "y": "long"})
        prompts.use("judge-lineage-test", "Grade the answer: {{answer}}")
        mlflow.log_text("w", "model/w.txt")
        mv = client.create_model_version(
            name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
    models.pass_gate(name, str(mv.version), "accuracy")
    promote_to_live(mlcp, models, name, str(mv.version), reason="initial release")

    text = mlcp("history", "--model-name", name, "--alias", "live")
    assert text.code == 0, text.err
    assert "initial release" in text.out and "-> v1" in text.out
    as_json = json.loads(mlcp("history", "--model-name", name, "--json").out)
    assert as_json[-1]["to_version"] == "1" and as_json[-1]["alias"] == "live"

    report = mlcp("lineage", f"{name}@live")
    assert report.code == 0, report.err
    assert "epochs = 3" in report.out
    assert read.digest in report.out and data_file.as_uri() in report.out
    assert "2 rows" in report.out
    assert prompts.sha256("Grade the answer: {{answer}}") in report.out
    assert "accuracy: pass" in report.out
    assert "initial release" in report.out
    data = json.loads(mlcp("lineage", f"{name}@live", "--json").out)
    assert data["version"] == "1"
    assert data["datasets"][0]["digest"] == read.digest
    assert data["became"]["reason"] == "initial release"
