"""The one S3 client every step uses, and how an ``s3://`` URI is split.

The endpoint is ``$AWS_ENDPOINT_URL``, else ``$MLFLOW_S3_ENDPOINT_URL`` (the variable MLflow's
own artifact client reads), else AWS itself; the credentials are boto3's usual ``AWS_*``
variables. Requests are retried (standard mode, 3 attempts) and a connection waits 5 s at
most. boto3 is imported inside :func:`client` only.
"""

from __future__ import annotations

from urllib.parse import urlparse

from .environment import AWS_ENDPOINT_URL, MLFLOW_S3_ENDPOINT_URL
from .errors import BadInput

MAX_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 5


def endpoint() -> str | None:
    """The S3 endpoint URL the environment names (None: boto3's default, AWS)."""
    return AWS_ENDPOINT_URL.get() or MLFLOW_S3_ENDPOINT_URL.get()


def client():
    """A boto3 S3 client on :func:`endpoint`, with retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint(),
        config=Config(
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT_S,
        ),
    )


def split(uri: str, *, prefix: bool = False) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` as ``(bucket, key)``; BadInput when either is missing. With
    ``prefix=True`` a folder, ``s3://BUCKET[/PREFIX]``: the prefix may be empty and loses its
    slashes at both ends."""
    parsed = urlparse(uri)
    bucket = parsed.netloc if parsed.scheme == "s3" else ""
    if prefix:
        if not bucket:
            raise BadInput(f"expected s3://BUCKET[/PREFIX], got {uri!r}")
        return bucket, parsed.path.strip("/")
    key = parsed.path.lstrip("/")
    if not bucket or not key:
        raise BadInput(f"expected s3://BUCKET/KEY, got {uri!r}")
    return bucket, key
