"""The installed pipelines, found through the entry-point group ``mlcp.pipelines``.

Each entry point names a :class:`~steps.spec.declare.Pipeline` declaration (a light module: no
heavy import at module level). The built-in cv and llm register there in this project's
``pyproject.toml``; a pipeline of its own package (``examples/tabular``) adds one line to its
own metadata. ``mlcp``, the template build, the docs generator and the tests all read this
module, so nothing lists the pipelines by hand and the core never imports one.

Standard library only (and the declarations), as ``workflows/`` reads the same group.
"""

from __future__ import annotations

from ..base.errors import MlcpError
from .declare import Pipeline

GROUP = "mlcp.pipelines"  # the entry-point group pipelines register in

_LOADED: tuple[Pipeline, ...] | None = None


def installed(names: tuple[str, ...] | None = None) -> tuple[Pipeline, ...]:
    """Every installed pipeline, by name (or those of ``names``, in that order): each entry
    point imported once. MlcpError when one cannot be imported, is no Pipeline, is registered
    twice, or is named here but not installed."""
    global _LOADED
    if _LOADED is None:
        _LOADED = _load_all()
    if names is None:
        return _LOADED
    found = {p.name: p for p in _LOADED}
    missing = [n for n in names if n not in found]
    if missing:
        known = ", ".join(found) or "none is installed"
        raise MlcpError(f"no installed pipeline named {', '.join(missing)} (installed: {known})")
    return tuple(found[n] for n in names)


def _load_all() -> tuple[Pipeline, ...]:
    from importlib import metadata

    points: dict[str, list] = {}
    for point in metadata.entry_points(group=GROUP):
        same = points.setdefault(point.name, [])
        if all(p.value != point.value for p in same):  # an editable install may list it twice
            same.append(point)
    loaded = []
    for name, same in sorted(points.items()):
        if len(same) > 1:
            values = ", ".join(p.value for p in same)
            raise MlcpError(f"pipeline {name!r} is registered more than once: {values}")
        try:
            pipeline = same[0].load()
        except Exception as exc:
            raise MlcpError(
                f"pipeline {name!r} ({same[0].value}) cannot be imported: {exc}"
            ) from exc
        if not isinstance(pipeline, Pipeline):
            raise MlcpError(
                f"pipeline {name!r} ({same[0].value}) is a {type(pipeline).__name__}, "
                "not a Pipeline declaration"
            )
        if pipeline.name != name:
            raise MlcpError(
                f"pipeline entry point {name!r} ({same[0].value}) declares {pipeline.name!r}"
            )
        loaded.append(pipeline)
    return tuple(loaded)


def __getattr__(name: str):
    if name == "PIPELINES":  # every installed pipeline, read on first use
        return installed()
    raise AttributeError(name)
