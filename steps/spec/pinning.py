"""Pinned model revisions: a model loaded by name is loaded at a revision, and the run says which.

A name on a model hub (``org/model``) can mean other weights tomorrow, so a run that loads
one must name the revision it wants: a commit hash of the hub (40 hex digits; a branch or a
tag such as ``main`` moves and pins nothing). A folder or a ``.tar`` is pinned by the
digest of the bytes read (``sha256:<hex>``); a revision given for one is checked against
it. A name without a commit is refused as bad input (exit 2, before anything is trained or
registered) unless the run is explicitly allowed to load it unpinned (``--allow-unpinned``);
that permission is itself recorded.

What was loaded is recorded as tags (steps/spec/contract.py): ``mlcp.revision.<input>`` (the
commit the hub resolved, or ``sha256:<digest>``) and ``mlcp.allow_unpinned`` (true|false),
on the training run and on the version it registers. ``mlcp lineage`` shows them
(:func:`of_run`, through steps/records/provenance.py) and ``mlcp reproduce`` loads the recorded
revision and compares it (:func:`compare`).

Standard library only; pipeline-blind: an input is named by the pipeline (``base_model``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..base.errors import BadInput
from .contract import ALLOW_UNPINNED_TAG, REVISION_TAG_PREFIX

COMMIT = re.compile(r"[0-9a-f]{40}")
DIGEST = "sha256:"
_HEX = re.compile(r"[0-9a-f]{32,64}")
MIN_DIGEST_CHARS = 32  # a shorter prefix of a digest is not accepted as a pin


def is_commit(revision: str | None) -> bool:
    return bool(revision) and COMMIT.fullmatch(str(revision)) is not None


def digest_revision(sha256: str) -> str:
    """The revision of a folder or ``.tar``: ``sha256:<hex digest of what was read>``."""
    return DIGEST + sha256


def tag(name: str) -> str:
    """The tag key of input ``name``'s revision: ``mlcp.revision.base_model``."""
    return REVISION_TAG_PREFIX + name


def check_digest(revision: str | None, sha256: str, *, what: str, flag: str) -> str:
    """The revision of a folder or ``.tar`` whose bytes have ``sha256``: given ``revision``
    (``sha256:<hex>`` or the hex alone, at least 32 digits), it must match; BadInput names both
    otherwise."""
    actual = digest_revision(sha256)
    if not revision:
        return actual
    wanted = revision.strip().lower().removeprefix(DIGEST)
    if not _HEX.fullmatch(wanted):
        raise BadInput(
            f"{flag} {revision!r} is not a digest for {what}: a folder or .tar is pinned by "
            f"{DIGEST}<hex> (at least {MIN_DIGEST_CHARS} hex digits), e.g. {actual}"
        )
    if not sha256.startswith(wanted):
        raise BadInput(
            f"{what} is not the pinned revision: its digest is {actual}, {flag} asks for "
            f"{DIGEST}{wanted}"
        )
    return actual


def require_commit(
    name: str, revision: str | None, *, allow_unpinned: bool, what: str, flag: str
) -> None:
    """Refuse (BadInput, exit 2) a load of ``name`` by name without a commit as its revision,
    unless ``allow_unpinned``."""
    if is_commit(revision) or allow_unpinned:
        return
    if revision:
        raise BadInput(
            f"{what} {name!r} is loaded by name at {flag} {revision!r}, which is not a commit "
            "hash (a branch or tag moves): give the 40-hex commit, or pass --allow-unpinned "
            "to load it anyway (recorded on the run)"
        )
    raise BadInput(
        f"{what} {name!r} is a name on a model hub and has no {flag}: the same name can mean "
        f"other weights tomorrow. Give {flag} <40-hex commit>, or pass --allow-unpinned to "
        "load it unpinned (recorded on the run as mlcp.allow_unpinned=true)"
    )


def tags(revisions: Mapping[str, str], *, allow_unpinned: bool) -> dict[str, str]:
    """The tags a run (and its version) records: each input's revision and the permission."""
    return {
        **{tag(name): str(value) for name, value in revisions.items()},
        ALLOW_UNPINNED_TAG: "true" if allow_unpinned else "false",
    }


def of_run(run_tags: Mapping[str, str]) -> dict:
    """What a run recorded: ``{"revisions": {input: revision}, "allow_unpinned": bool|None}``
    (None: recorded before revisions were)."""
    flag = run_tags.get(ALLOW_UNPINNED_TAG)
    return {
        "revisions": {
            key[len(REVISION_TAG_PREFIX) :]: value
            for key, value in sorted(run_tags.items())
            if key.startswith(REVISION_TAG_PREFIX)
        },
        "allow_unpinned": None if flag is None else flag == "true",
    }


def compare(recorded: Mapping[str, str], reproduced: Mapping[str, str]) -> dict[str, dict]:
    """Per input, the recorded revision against the reproduction's (run tags of each side):
    ``{input: {"recorded", "reproduced", "same"}}``, for every input either side recorded."""
    before, after = of_run(recorded)["revisions"], of_run(reproduced)["revisions"]
    return {
        name: {
            "recorded": before.get(name),
            "reproduced": after.get(name),
            "same": before.get(name) == after.get(name),
        }
        for name in sorted({*before, *after})
    }
