"""Dataset lineage (steps.records.lineage) against the real S3 endpoint and MLflow server."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import mlflow
import pytest

from steps.base.errors import BadInput, MlcpError
from steps.records import lineage, tracking

from .conftest import unique


def upload(data: bytes, key: str | None = None) -> str:
    """Put bytes in the test bucket with a plain boto3 client; return the s3:// URI."""
    import boto3

    bucket = os.environ["MLCP_BUCKET"]
    key = key or f"datasets/{uuid.uuid4().hex}/train.csv"
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def csv_bytes() -> bytes:
    return f"x,y\n1,2\n3,4\n# {uuid.uuid4().hex}\n".encode()


def test_read_s3_digest_is_sha256_of_the_bytes(stack_env):
    data = csv_bytes()
    uri = upload(data)
    read = lineage.read(uri)
    assert read.data == data
    assert read.uri == uri
    assert read.sha256 == hashlib.sha256(data).hexdigest()
    assert read.digest == hashlib.sha256(data).hexdigest()[:32]
    assert len(read.digest) == 32


def test_read_local_path_and_file_uri(tmp_path):
    data = csv_bytes()
    path = tmp_path / "train.csv"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()[:32]
    by_path = lineage.read(str(path))
    by_uri = lineage.read(path.as_uri())
    assert by_path.digest == by_uri.digest == expected
    assert by_path.uri == by_uri.uri == path.resolve().as_uri()
    assert by_path.data == data


def test_different_bytes_give_different_digests(stack_env, tmp_path):
    first = lineage.read(upload(b"a,b\n1,2\n"))
    second = lineage.read(upload(b"a,b\n1,3\n"))
    assert first.digest != second.digest
    same = tmp_path / "same.csv"
    same.write_bytes(b"a,b\n1,2\n")
    assert lineage.read(str(same)).digest == first.digest  # the digest is of the bytes only


def test_read_missing_s3_key_is_bad_input(stack_env):
    bucket = os.environ["MLCP_BUCKET"]
    with pytest.raises(BadInput, match="does not exist"):
        lineage.read(f"s3://{bucket}/nothing/{uuid.uuid4().hex}.csv")


def test_read_missing_bucket_is_bad_input(stack_env):
    with pytest.raises(BadInput, match="does not exist"):
        lineage.read(f"s3://{unique('no-bucket')}/train.csv")


@pytest.mark.parametrize("uri", ["s3://", "s3://bucket-only", "s3://bucket-only/"])
def test_read_malformed_s3_uri_is_bad_input(uri):
    with pytest.raises(BadInput, match="expected s3://BUCKET/KEY"):
        lineage.read(uri)


def test_read_missing_local_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput):
        lineage.read(str(tmp_path / "missing.csv"))
    with pytest.raises(BadInput):
        lineage.read((tmp_path / "missing.csv").as_uri())
    with pytest.raises(BadInput):  # a folder is not a data set
        lineage.read(str(tmp_path))


def log_in_run(read, *, context="training", model=None):
    model = model or unique("lineage-model")
    with tracking.stage_run("test", "train", model, "tiny", system_metrics=False) as run:
        digest = lineage.log(
            read, name="train", num_rows=2, columns={"x": "long", "y": "long"}, context=context
        )
    return run.info.run_id, digest


def test_log_records_the_dataset_input_and_tags(client, stack_env):
    read = lineage.read(upload(csv_bytes()))
    run_id, digest = log_in_run(read, context="validation")
    assert digest == read.digest

    run = client.get_run(run_id)
    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "train"
    assert dataset.digest == read.digest
    assert dataset.source_type == "s3"
    assert json.loads(dataset.source)["uri"] == read.uri
    assert read.uri.startswith("s3://")
    columns = json.loads(dataset.schema)["mlflow_colspec"]
    assert [(c["name"], c["type"]) for c in columns] == [("x", "long"), ("y", "long")]
    assert json.loads(dataset.profile) == {"num_rows": 2}
    contexts = {t.key: t.value for t in dataset_input.tags}
    assert contexts["mlflow.data.context"] == "validation"

    tags = run.data.tags
    assert tags["mlcp.data.digest"] == read.digest
    assert tags["mlcp.data.source"] == read.uri
    assert tags["mlcp.data.validation.digest"] == read.digest


def test_log_local_file_records_a_local_source(client, tmp_path, stack_env):
    path = tmp_path / "train.csv"
    path.write_bytes(csv_bytes())
    read = lineage.read(str(path))
    run_id, _ = log_in_run(read)
    [dataset_input] = client.get_run(run_id).inputs.dataset_inputs
    assert dataset_input.dataset.source_type == "local"
    assert json.loads(dataset_input.dataset.source)["uri"] == path.resolve().as_uri()


def test_log_without_an_active_run_is_an_error(stack_env):
    assert mlflow.active_run() is None
    read = lineage.read(upload(csv_bytes()))
    with pytest.raises(MlcpError, match="active MLflow run"):
        lineage.log(read, name="train", num_rows=2)


def test_find_runs_finds_exactly_the_runs_that_read_the_digest(client, stack_env):
    shared = lineage.read(upload(csv_bytes()))
    other = lineage.read(upload(csv_bytes()))
    first, _ = log_in_run(shared)
    second, _ = log_in_run(shared, context="validation")
    unrelated, _ = log_in_run(other)

    found = {r.info.run_id for r in lineage.find_runs(client, shared.digest)}
    assert found == {first, second}
    assert {r.info.run_id for r in lineage.find_runs(client, other.digest)} == {unrelated}
    assert lineage.find_runs(client, "0" * 32) == []
