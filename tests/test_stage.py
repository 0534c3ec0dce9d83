"""The stage skeleton (steps.stages.stage) and the one S3 client (steps.base.s3)."""

from __future__ import annotations

import pytest

from steps.base import s3
from steps.base.errors import BadInput, GateFailed
from steps.decisions import gates
from steps.spec.contract import DATA_SOURCE_TAG
from steps.stages.stage import Reporter, data_source, resolve_input, say

# ---------------------------------------------------------------- without a server


def test_say_prefixes_every_line_with_where_it_comes_from(capsys):
    say("cv", "train")("epoch 2/2")
    say("vllm")("building")
    Reporter("llm", "perf-test")("12 users")
    assert capsys.readouterr().err.splitlines() == [
        "[cv train] epoch 2/2",
        "[vllm] building",
        "[llm perf-test] 12 users",
    ]


def test_data_source_is_the_given_one_else_the_versions_own():
    tags = {DATA_SOURCE_TAG: "s3://b/train.npz"}
    assert data_source("m", "3", tags) == "s3://b/train.npz"
    assert data_source("m", "3", tags, "s3://b/other.npz") == "s3://b/other.npz"
    with pytest.raises(BadInput, match=f"m v3 names no data set: it has no {DATA_SOURCE_TAG}"):
        data_source("m", "3", {})


def test_s3_split_an_object_and_a_prefix():
    assert s3.split("s3://bucket/a/b.npz") == ("bucket", "a/b.npz")
    assert s3.split("s3://bucket/models/", prefix=True) == ("bucket", "models")
    assert s3.split("s3://bucket", prefix=True) == ("bucket", "")
    for bad in ("s3://bucket", "s3://bucket/", "s3:///key", "/local/file", "http://b/k"):
        with pytest.raises(BadInput, match="expected s3://BUCKET/KEY"):
            s3.split(bad)
    with pytest.raises(BadInput, match=r"expected s3://BUCKET\[/PREFIX\]"):
        s3.split("file:///x", prefix=True)


def test_s3_endpoint_is_aws_endpoint_url_then_mlflows(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    assert s3.endpoint() is None
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://mlflow-s3:9000")
    assert s3.endpoint() == "http://mlflow-s3:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws:9000")
    assert s3.endpoint() == "http://aws:9000"


# ---------------------------------------------------------------- against the stack


def test_judge_records_prints_and_enforces_every_check(models, client, capsys):
    # given a version and a stage with three checks, one failing
    name = models.create(1)
    report = Reporter("test", "evaluate")
    checks = [
        (gates.Gate("accuracy", "accuracy", ">=", 0.5), 0.9),
        (gates.Gate("latency", "p95_ms", "<=", 50), 70.0),
        (gates.Gate("size", "size_mb", "<=", 100), 10.0),
    ]
    # when it judges them
    with pytest.raises(GateFailed) as info:
        report.judge(checks, model=name, version="1", evidence={"samples": 3})
    # then the version is refused (exit 3) naming the failed gate only
    assert info.value.exit_code == 3 and info.value.version == "1"
    assert "latency:" in str(info.value) and "accuracy:" not in str(info.value)
    # and every decision was printed, in order, and recorded on the version
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "[test evaluate] gate accuracy",
        "[test evaluate] gate latency",
        "[test evaluate] gate size",
    ]
    assert "gate latency: fail (p95_ms=70 misses <= 50)" in lines[1]
    recorded = {g.name: g.verdict for g in gates.decisions_of(client, name, "1")}
    assert recorded == {"accuracy": "pass", "latency": "fail", "size": "pass"}


def test_advance_writes_the_output_alias_and_says_so(models, client, capsys):
    # given a version whose checks all pass
    name = models.create(2)
    report = Reporter("test", "evaluate")
    decisions = report.judge(
        [(gates.Gate("accuracy", "accuracy", ">=", 0.5), 0.9)], model=name, version="2"
    )
    assert [d.verdict for d in decisions] == ["pass"]
    # when the stage advances its output alias
    outcome = report.advance(name, "evaluated", "2", reason="accuracy 0.9", client=client)
    # then the alias names the version, as a recorded move, and the line says so
    assert models.aliases(name)["evaluated"] == "2"
    assert outcome.moves[0].to_version == "2" and outcome.record_run_ids
    assert capsys.readouterr().err.splitlines()[-1] == f"[test evaluate] {name}@evaluated -> v2"
    # and the input of the next stage resolves to it, with its tags
    _, version, tags = resolve_input(name, "evaluated")
    assert version == "2" and tags["mlcp.gate.accuracy.verdict"] == "pass"
