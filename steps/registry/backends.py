"""Serving back ends as the core sees them: one small interface, looked up by name.

A registered model tagged ``mlcp.serving`` names the server that carries its live traffic.
A deploy switches its staged slot through the same back end (:meth:`~ServingBackend.switch`),
which puts the slot back itself when the switch or its smoke test fails.
Before ``promote`` (or ``rollback``) moves ``live``, :mod:`steps.registry.moves` asks that model's
back end to :meth:`~ServingBackend.load_live` the version into the ``<model>-live`` slot; if that
fails, the alias does not move, so the registry never names a live version the server cannot
serve. Models without the tag are left alone.

Back ends are Python entry points in the group ``mlcp.serving`` (``pyproject.toml``,
``[project.entry-points."mlcp.serving"]``), each naming an object that implements
:class:`ServingBackend`. Entry points, and not a table here, because the core must never
import a pipeline or a serving engine: with entry points a third pipeline (its own package,
even) adds a back end by declaring one line in its own metadata, without touching the core,
and only the back end a model names is ever imported.

Standard library only.
"""

from __future__ import annotations

import inspect
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..base.errors import BadInput, MlcpError
from ..spec.contract import SERVING_TAG

if TYPE_CHECKING:  # importing importlib.metadata costs every promote ~15 ms: only when needed
    from importlib.metadata import EntryPoint

GROUP = "mlcp.serving"  # the entry-point group back ends register in


@dataclass(frozen=True)
class Volume:
    """A volume the promote step's pod must mount for the back end to load a version: an
    existing PersistentVolumeClaim ``claim`` mounted as ``name`` at ``mount_path``."""

    name: str
    claim: str
    mount_path: str


def each_address(url: str) -> list[str]:
    """One URL per IPv4 address the URL's host resolves to: a headless Service's name stands
    for every replica behind it, so a step that must reach each of them (a load, a check)
    expands it here. A name such as ``localhost`` that also resolves to ::1 is still one
    server; an IP address, or a name that does not resolve here, is kept as it is (the call
    then says it is not reachable)."""
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "", parsed.port
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return [url]  # an address already
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(host, port or 80, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return [url]
    addresses = sorted({info[4][0] for info in infos})
    if len(addresses) <= 1:
        return [url]
    netloc = lambda a: f"{a}:{port}" if port else a  # noqa: E731
    return [urllib.parse.urlunsplit(parsed._replace(netloc=netloc(a))) for a in addresses]


@dataclass(frozen=True)
class Served:
    """What one replica of a server serves on one slot: ``version`` (None: nothing), or
    ``error`` (why that replica could not be asked; ``version`` is then None)."""

    replica: str  # how messages name the replica: its URL
    version: str | None
    error: str | None = None


@runtime_checkable
class ServingBackend(Protocol):
    """What the core needs from a serving back end.

    ``name`` is the value of the models' ``mlcp.serving`` tag; ``volumes`` what a step that
    loads a version needs mounted in the cluster (plain data, read by the templates)."""

    name: str
    volumes: tuple[Volume, ...]

    def load_live(self, client, model: str, version: str, slot: str | None = None) -> None:
        """Make ``slot`` (default: ``<model>-live``) serve ``version`` on every replica of
        the server (a no-op where it already does), and record it as the slot's desired
        state where the server reads it at start. Returns only when every replica serves it;
        raises :class:`~steps.base.errors.MlcpError` naming the replica that is down or refused
        (exit 1: Argo retries), :class:`~steps.base.errors.BadInput` when the version was never
        deployed."""
        ...

    def served(self, model: str, slot: str) -> list[Served]:
        """What each replica serves on the slot now, one entry per replica (an unreachable
        replica is an entry with ``error``, never an exception)."""
        ...

    def switch(self, model: str, slot: str, version: str, smoke=None) -> None:
        """What a deploy calls (steps/stages/runner.py) once its export is placed where the server
        reads it: make ``slot`` serve ``version`` on every replica, call ``smoke(replica)``
        on each replica that serves it (it raises to refuse), then record the version as the
        slot's desired state. On any failure the back end restores itself: every replica,
        and the desired state, go back to what the slot served before, and the first error
        is raised."""
        ...


METHODS = ("load_live", "served", "switch")

SERVICES_GROUP = "mlcp.services"  # the entry-point group of the servers the local stack runs


@runtime_checkable
class StackService(Protocol):
    """A server the local stack starts beside its own (``mlcp stack up --services <name>``),
    registered in the entry-point group ``mlcp.services`` by the package that serves with it.

    ``name`` is the service's name and the serving back end it runs (so that ``stack up``
    syncs that back end's models after starting it); ``default_port`` its HTTP port unless
    ``--ports`` says otherwise; ``health`` the path that answers (2xx-4xx) once it serves;
    ``start_timeout`` the seconds it may take to become healthy (a first start may build its
    environment: see :mod:`steps.serving.envs`)."""

    name: str
    default_port: int
    health: str
    start_timeout: float

    def command(self, port: int, home) -> tuple[list[str], dict[str, str], dict]:
        """The server's argv and process environment, and what the stack keeps about it (its
        ``extra``: other ports, its repository), for port ``port`` in the stack folder
        ``home`` (a :class:`~pathlib.Path`)."""
        ...

    def env(self, url: str, extra: dict) -> dict[str, str]:
        """The variables the steps read to reach the server at ``url``."""
        ...


def stack_services() -> dict[str, StackService]:
    """Every server registered for the local stack, by name (each imported)."""
    found: dict[str, StackService] = {}
    for point in entry_points(group=SERVICES_GROUP):
        if point.name in found:
            continue
        try:
            found[point.name] = point.load()
        except Exception as exc:
            raise MlcpError(
                f"stack service {point.name!r} ({point.value}) cannot be imported: {exc}"
            ) from exc
    return dict(sorted(found.items()))


def problems(candidate: object, name: str | None = None) -> list[str]:
    """Why ``candidate`` is not a usable :class:`ServingBackend` registered as ``name``
    (empty when it is one)."""
    found = []
    declared = getattr(candidate, "name", None)
    if not isinstance(declared, str) or not declared:
        found.append("it has no `name` string")
    elif name is not None and declared != name:
        found.append(f"it is named {declared!r}, not {name!r}")
    volumes = getattr(candidate, "volumes", None)
    if not isinstance(volumes, tuple) or not all(isinstance(v, Volume) for v in volumes):
        found.append("its `volumes` is not a tuple of Volume")
    for method in METHODS:
        function = getattr(candidate, method, None)
        if not callable(function):
            found.append(f"it has no `{method}` method")
            continue
        wanted = list(inspect.signature(getattr(ServingBackend, method)).parameters)[1:]
        try:
            inspect.signature(function).bind(*wanted)
        except TypeError:
            found.append(f"`{method}` cannot be called as {method}({', '.join(wanted)})")
        except ValueError:
            pass  # no signature to read (a builtin): trust it
    return found


def entry_points(group: str):
    """The installed entry points of ``group`` (importlib.metadata, imported on first use)."""
    from importlib import metadata

    return metadata.entry_points(group=group)


def _registered() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for point in entry_points(group=GROUP):
        same = found.setdefault(point.name, [])
        if all(p.value != point.value for p in same):  # an editable install may list it twice
            same.append(point)
    return found


def _load(name: str, points: list[EntryPoint]) -> ServingBackend:
    if len(points) > 1:
        values = ", ".join(p.value for p in points)
        raise MlcpError(f"serving back end {name!r} is registered more than once: {values}")
    point = points[0]
    try:
        loaded = point.load()
    except Exception as exc:
        raise MlcpError(
            f"serving back end {name!r} ({point.value}) cannot be imported: {exc}"
        ) from exc
    wrong = problems(loaded, name)
    if wrong:
        raise MlcpError(
            f"serving back end {name!r} ({point.value}) does not implement ServingBackend: "
            + "; ".join(wrong)
        )
    return loaded


def known() -> dict[str, ServingBackend]:
    """Every registered back end by name (imports each of them)."""
    return {name: _load(name, points) for name, points in sorted(_registered().items())}


def for_model(model: str, tags: Mapping[str, str]) -> ServingBackend | None:
    """The back end named by a registered model's ``mlcp.serving`` tag; None without one."""
    wanted = (tags or {}).get(SERVING_TAG)
    if not wanted:
        return None
    registered = _registered()
    if wanted not in registered:
        known_names = ", ".join(sorted(registered)) or "none is installed"
        raise BadInput(
            f"model {model!r} is tagged {SERVING_TAG}={wanted!r}, which names no serving back "
            f"end mlcp knows (known: {known_names})"
        )
    return _load(wanted, registered[wanted])
