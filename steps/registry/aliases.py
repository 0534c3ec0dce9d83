"""The alias contract: ``model@alias`` names exactly one version, or fails clearly.

Writes are verified: the alias is read back after it is set, and an optional expected
current version turns a write into a compare-and-set that refuses when someone else moved
the alias first. (MLflow has no server-side compare-and-set; the read-check-write window is
closed by a per-model lock in ``promote`` and by Argo's mutex in the cluster.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import BadInput, ConcurrentChange
from ..base.rest import error_code
from ..spec.contract import check_alias_name, show_version

UNSET = object()  # "no expectation" for compare-and-set (``None`` means "expect unset")


@dataclass(frozen=True)
class Ref:
    model: str
    alias: str

    def __str__(self) -> str:
        return f"{self.model}@{self.alias}"


def parse_ref(text: str) -> Ref:
    """``"resnet@live"`` -> ``Ref("resnet", "live")``."""
    model, sep, alias = (text or "").rpartition("@")
    if not sep or not model or not alias:
        raise BadInput(f"expected MODEL@ALIAS, got {text!r}")
    return Ref(model, check_alias_name(alias))


def find_model(client, name: str):
    """Registered model ``name``, or None when it does not exist (yet)."""
    try:
        return client.get_registered_model(name)
    except Exception as exc:
        if not _is_missing(exc):
            raise
        return None


def _is_missing(exc: Exception) -> bool:
    """A refused request (either client's) saying the thing asked for does not exist."""
    return error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def get_model(client, name: str):
    """The registered model ``name``; BadInput naming close matches when it does not exist."""
    if not name or not name.strip():
        raise BadInput("model name is empty")
    try:
        return client.get_registered_model(name)
    except Exception as exc:
        if not _is_missing(exc):
            raise
    try:
        known = [m.name for m in client.search_registered_models(max_results=200)]
    except Exception as exc:
        if error_code(exc) is None:
            raise
        known = []
    hint = f" (registered models: {', '.join(sorted(known)[:20])})" if known else ""
    raise BadInput(f"registered model {name!r} does not exist{hint}") from None


def models_tagged(client, tag: str) -> list[str]:
    """The names of every registered model that carries ``tag`` (non-empty), sorted."""
    found, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        found += [m.name for m in page if dict(m.tags).get(tag)]
        token = page.token
        if not token:
            return sorted(found)


def aliases_of(client, name: str) -> dict[str, str]:
    """Every alias of model ``name`` -> version (as a string)."""
    return {alias: str(version) for alias, version in get_model(client, name).aliases.items()}


def resolve(client, name: str, alias: str, current: dict[str, str] | None = None) -> str:
    """The version ``name@alias`` names; BadInput listing the aliases that do exist.
    ``current`` is the model's aliases when the caller has just read them."""
    check_alias_name(alias)
    current = aliases_of(client, name) if current is None else current
    if alias not in current:
        listed = ", ".join(f"{a}=v{v}" for a, v in sorted(current.items())) or "none"
        raise BadInput(f"model {name!r} has no alias {alias!r} (its aliases: {listed})")
    return current[alias]


def get_version(client, name: str, version: str | int):
    try:
        return client.get_model_version(name, str(version))
    except Exception as exc:
        if _is_missing(exc):
            raise BadInput(f"model {name!r} has no version {version}") from None
        raise


def _check_expected(name: str, alias: str, actual: str | None, expected) -> None:
    if expected is UNSET:
        return
    expected = None if expected is None else str(expected)
    if actual != expected:
        raise ConcurrentChange(
            f"{name}@{alias} is {show_version(actual)}, expected {show_version(expected)}: "
            "it was moved by someone else; nothing was changed"
        )


def set_alias(
    client,
    name: str,
    alias: str,
    version: str | int,
    *,
    expect_current=UNSET,
    known=False,
    current: dict[str, str] | None = None,
) -> dict[str, str]:
    """Point ``name@alias`` at ``version``, refusing if it does not currently hold
    ``expect_current``; read back and verify. ``known``: the caller already knows the
    version exists (it resolved it from an alias), so it is not looked up again.
    ``current``: the model's aliases as read back right after the caller's previous write
    (else they are read now). Returns the aliases read back."""
    check_alias_name(alias)
    version = str(version)
    if not known:
        get_version(client, name, version)
    current = aliases_of(client, name) if current is None else current
    _check_expected(name, alias, current.get(alias), expect_current)
    client.set_registered_model_alias(name, alias, version)
    read_back = aliases_of(client, name)
    after = read_back.get(alias)
    if after != version:
        raise ConcurrentChange(
            f"{name}@{alias} reads {show_version(after)} right after being set to v{version}: "
            "a concurrent writer moved it"
        )
    return read_back


def delete_alias(
    client, name: str, alias: str, *, expect_current=UNSET, current: dict[str, str] | None = None
) -> dict[str, str]:
    """Remove ``name@alias`` (no-op when unset), with the same compare-and-set and check;
    ``current`` and the result as for :func:`set_alias`."""
    check_alias_name(alias)
    current = aliases_of(client, name) if current is None else current
    _check_expected(name, alias, current.get(alias), expect_current)
    if current.get(alias) is None:
        return current
    client.delete_registered_model_alias(name, alias)
    read_back = aliases_of(client, name)
    after = read_back.get(alias)
    if after is not None:
        raise ConcurrentChange(f"{name}@{alias} reads v{after} right after being removed")
    return read_back
