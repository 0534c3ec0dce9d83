"""Dataset lineage: the digest is computed from the bytes actually read.

``read`` fetches a data set from ``s3://bucket/key`` (the client of :mod:`steps.base.s3`) or from
a local path / ``file://`` URI.
``log`` records it on the active run with ``mlflow.log_input``: source URI, digest, schema
and row count, plus the tags ``mlcp.data.digest`` and ``mlcp.data.source``. ``find_runs``
finds every run that read a given digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..base import s3
from ..base.errors import BadInput, MlcpError
from ..spec.contract import DATA_DIGEST_TAG, DATA_SOURCE_TAG, TAG_PREFIX

DIGEST_CHARS = 32  # MLflow's dataset digest column holds 36 characters


@dataclass(frozen=True)
class DataRead:
    uri: str  # canonical: s3://bucket/key or file:///abs/path
    data: bytes
    sha256: str

    @property
    def digest(self) -> str:
        return self.sha256[:DIGEST_CHARS]

    @property
    def tags(self) -> dict[str, str]:
        """Where the data came from and its digest, as a run or a model version records them."""
        return {DATA_SOURCE_TAG: self.uri, DATA_DIGEST_TAG: self.digest}


def read(uri: str) -> DataRead:
    """Read a data set's bytes from S3 or the local disk; BadInput when it is not there."""
    if uri.startswith("s3://"):
        from botocore.exceptions import ClientError, EndpointConnectionError

        bucket, key = s3.split(uri)
        try:
            data = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
                raise BadInput(f"data set {uri} does not exist ({code})") from None
            raise MlcpError(f"cannot read {uri}: {exc}") from exc
        except EndpointConnectionError as exc:
            raise MlcpError(f"cannot reach the S3 endpoint for {uri}: {exc}") from exc
        canonical = f"s3://{bucket}/{key}"
    else:
        path = Path(urlparse(uri).path if uri.startswith("file://") else uri).expanduser()
        if not path.is_file():
            raise BadInput(f"data set {uri} does not exist or is not a file")
        data = path.read_bytes()
        canonical = path.resolve().as_uri()
    return DataRead(uri=canonical, data=data, sha256=hashlib.sha256(data).hexdigest())


def write(uri: str, data: bytes) -> str:
    """Write bytes to S3 or a local path (used to publish versioned data sets)."""
    if uri.startswith("s3://"):
        bucket, key = s3.split(uri)
        s3.client().put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"
    path = Path(urlparse(uri).path if uri.startswith("file://") else uri).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path.resolve().as_uri()


def check_unchanged(data: DataRead, recorded: str, what: str) -> DataRead:
    """``data`` when its digest is the ``recorded`` one; BadInput naming both digests when
    the bytes at its URI changed since they were recorded (``what``: "the data set")."""
    if not recorded:
        raise BadInput(f"{what} at {data.uri} has no recorded digest to compare with")
    if data.digest != recorded[:DIGEST_CHARS]:
        raise BadInput(
            f"{what} at {data.uri} changed since it was recorded: its digest is now "
            f"{data.digest}, the recorded one is {recorded}"
        )
    return data


def _schema(columns: Mapping[str, str] | None):
    if columns is None:
        return None
    from mlflow.types import ColSpec, Schema

    return Schema([ColSpec(type=kind, name=name) for name, kind in columns.items()])


def _dataset_class():
    from mlflow.data.meta_dataset import MetaDataset

    class CountedDataset(MetaDataset):
        """MetaDataset with our own digest and a row count in its profile."""

        def __init__(self, source, name, digest, schema, num_rows):
            self._num_rows = num_rows
            super().__init__(source=source, name=name, digest=digest, schema=schema)

        @property
        def profile(self):
            return {"num_rows": self._num_rows}

        def to_dict(self):
            import json

            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return CountedDataset


def log(
    data: DataRead,
    *,
    name: str,
    num_rows: int,
    columns: Mapping[str, str] | None = None,
    context: str = "training",
) -> str:
    """Record ``data`` as an input of the active run; returns its digest."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if mlflow.active_run() is None:
        raise MlcpError("lineage.log needs an active MLflow run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "source can be interpreted in multiple ways"
        source = resolve_dataset_source(data.uri)
    dataset = _dataset_class()(source, name, data.digest, _schema(columns), int(num_rows))
    mlflow.log_input(dataset, context=context)
    mlflow.set_tags({**data.tags, f"{TAG_PREFIX}data.{context}.digest": data.digest})
    return data.digest


def find_runs(client, digest: str) -> list:
    """Every run, in any experiment, that logged a data set with this digest."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    digest = digest.replace("'", "")
    return list(
        client.search_runs(
            experiment_ids, filter_string=f"dataset.digest = '{digest}'", max_results=1000
        )
    )
