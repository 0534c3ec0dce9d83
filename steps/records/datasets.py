"""Versioned data sets with a "newest": what ``mlcp data <pipeline>`` publishes, and what a
reader asks for with ``newest`` (``mlcp <pipeline> drift --data newest``).

Layout under a data root (``$MLCP_DATA_ROOT``, e.g. ``s3://mlcp/data``, or a local folder)::

    <root>/<set>/<version>/<file>    one version's bytes (e.g. cv/digits/base-seed0/digits.npz)
    <root>/<set>/newest.json         the pointer: which version is the newest

- A version is named by what made it, ``<variant>-seed<seed>``: the publishers build
  deterministically, so one name always holds the same bytes. A version is never rewritten:
  publishing it again with the same bytes changes nothing, with other bytes is refused.
- The pointer is written last, once the version's bytes were written and read back with the
  digest they were built with, so a half-published version is never "newest". It names the
  version, its URI and its digest, and what made it.

Core side: standard library and :mod:`steps.records.lineage` only; never imports a pipeline.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from ..base.environment import MLCP_DATA_ROOT
from ..base.errors import BadInput
from . import lineage

NEWEST = "newest"  # what a reader passes instead of a URI
POINTER_FILE = "newest.json"
BASE_VARIANT = "base"  # the data set as published by default (no shift)
ROOT_VARIABLE = MLCP_DATA_ROOT.name


def version_name(variant: str, seed: int) -> str:
    """``base-seed0``: a version named by the variant and the seed that made it."""
    return f"{variant}-seed{seed}"


def data_root(given: str | None = None) -> str:
    """``given``, else ``$MLCP_DATA_ROOT``, without a trailing slash; BadInput when neither."""
    root = (given or MLCP_DATA_ROOT.get() or "").rstrip("/")
    if not root:
        raise BadInput(f"no data root: give --out or set {ROOT_VARIABLE} (run `mlcp stack up`)")
    return root


def version_uri(root: str, dataset: str, version: str, filename: str) -> str:
    return f"{root.rstrip('/')}/{dataset}/{version}/{filename}"


def pointer_uri(root: str, dataset: str) -> str:
    return f"{root.rstrip('/')}/{dataset}/{POINTER_FILE}"


def publish(
    root: str, dataset: str, version: str, filename: str, data: bytes, **made_by: object
) -> dict:
    """Write one version of ``dataset`` under ``root``, check it, then point ``newest`` at it.
    Returns the pointer (``uri``, ``version``, ``sha256``, ``digest``, what made it)."""
    uri = version_uri(root, dataset, version, filename)
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        existing = lineage.read(uri)
    except BadInput:
        existing = None
    if existing is not None and existing.sha256 != sha256:
        raise BadInput(
            f"version {version} of {dataset} at {existing.uri} already holds other bytes "
            f"(digest {existing.digest}, these are {sha256[: lineage.DIGEST_CHARS]}): a "
            "published version is never rewritten"
        )
    if existing is None:
        lineage.write(uri, data)
    written = lineage.read(uri)  # read back: only a complete version becomes newest
    if written.sha256 != sha256:
        raise BadInput(f"{written.uri} reads back with another digest than was written")
    pointer = {
        "dataset": dataset,
        "version": version,
        "uri": written.uri,
        "sha256": sha256,
        "digest": written.digest,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **made_by,
    }
    pointer["newest"] = lineage.write(
        pointer_uri(root, dataset), (json.dumps(pointer, indent=2) + "\n").encode()
    )
    return pointer


def newest(dataset: str, root: str | None = None) -> dict:
    """The pointer to the newest published version of ``dataset`` (BadInput when none was
    published under the root, or the pointer is unreadable)."""
    where = pointer_uri(data_root(root), dataset)
    try:
        read = lineage.read(where)
    except BadInput:
        raise BadInput(
            f"no version of {dataset} was published under {data_root(root)} (no {where}): "
            "publish one with `mlcp data <pipeline>`"
        ) from None
    try:
        pointer = json.loads(read.data)
        if not isinstance(pointer, dict) or not isinstance(pointer.get("uri"), str):
            raise ValueError("no uri in it")
    except ValueError as exc:
        raise BadInput(f"the newest-version pointer {where} is unreadable: {exc}") from None
    return pointer


def resolve(given: str, dataset: str) -> tuple[str, dict | None]:
    """A data argument as a URI: ``newest`` is the newest published version of ``dataset``
    (and its pointer), anything else is a URI as given (and no pointer)."""
    if given.strip() == NEWEST:
        pointer = newest(dataset)
        return pointer["uri"], pointer
    if not given.strip():
        raise BadInput(f"no data given: a URI, or {NEWEST}")
    return given, None
