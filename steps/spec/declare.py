"""One declaration per stage: a typed config whose fields carry their help, choices, bounds
and defaults, and the :class:`Stage` and :class:`Pipeline` records that name what runs.

Everything else is derived from these declarations and never written a second time: the
``mlcp <pipeline> <stage>`` flags and their parsing (``steps/cli.py``), the validation (a
config checks itself when it is built, so a stage called from Python is held to the same
rules), the WorkflowTemplate's input parameters and container arguments (``workflows/``),
the gates a chain and a pipeline template require, and the site's reference pages.

Standard library only (plus the contract and the errors), so that ``workflows/`` and
``mlcp --help`` can read every declaration without importing a heavy library.

Adding a stage parameter is one edit: a field of the stage's config, e.g.::

    users: int = option(4, help="concurrent simulated users", min=1, max=64)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..base.errors import BadInput
from .contract import CHAIN, check_alias_name

REQUIRED = dataclasses.MISSING
BOOLEAN = ("false", "true")
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0", "")


def option(
    default: Any = REQUIRED,
    *,
    help: str,
    choices: tuple[str, ...] | None = None,
    noun: str | None = None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    below: float | None = None,
    enum: tuple[str, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    argo: bool = True,
) -> Any:
    """A config field with what the CLI, the validation and the template need to know.

    ``choices`` are closed (the CLI refuses others; the template offers them as an enum);
    ``enum`` is offered by the template only (the chain's aliases: the CLI takes any valid
    alias). ``min``/``max`` are inclusive bounds, ``above``/``below`` exclusive ones.
    ``noun`` names the value in the error for an unknown choice ("unknown Triton backend
    'x'"). ``parse`` turns the flag's text into the value when the type alone cannot.
    ``argo=False`` keeps a field off the template (a CLI-only switch such as ``--json``).
    """
    meta = {
        "help": help,
        "choices": choices,
        "noun": noun,
        "min": min,
        "max": max,
        "above": above,
        "below": below,
        "enum": enum,
        "parse": parse,
        "argo": argo,
    }
    if not help.strip():
        raise ValueError("every option needs its help text")
    if default is REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def alias_option(default: str, *, reads: bool) -> Any:
    """The alias a stage reads (``reads=True``) or writes; any valid alias on the command line,
    the chain's aliases as the template's drop-down."""
    text = (
        "alias naming the version to read"
        if reads
        else "alias to point at the version when every gate passes"
    )
    return option(default, help=text, enum=CHAIN, parse=alias_name)


def alias_name(text: str) -> str:
    """An alias flag's text, checked (ValueError with the reason when it is no alias name)."""
    try:
        return check_alias_name(text)
    except BadInput as exc:
        raise ValueError(str(exc)) from None


def csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def flag_value(text: str) -> bool:
    """``--force`` alone, or ``--force=true|false`` as an Argo template passes it."""
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def format_number(value: float) -> str:
    """``8.0`` -> ``8``, ``1e-3`` -> ``0.001``: the shortest text that reads back the same."""
    text = format(value, "g")
    return text if float(text) == value else repr(value)


@dataclass(frozen=True)
class Opt:
    """One field of a config, as the CLI and the template see it."""

    name: str  # python name, e.g. max_p95_ms
    kind: str  # str | optional | int | float | bool | csv
    default: Any  # REQUIRED when the caller must give it
    help: str
    choices: tuple[str, ...] | None
    noun: str | None
    min: float | None
    max: float | None
    above: float | None
    below: float | None
    enum: tuple[str, ...] | None
    parse: Callable[[str], Any] | None
    argo: bool

    @property
    def kebab(self) -> str:
        return self.name.replace("_", "-")

    @property
    def flag(self) -> str:
        return f"--{self.kebab}"

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def text(self, value: Any) -> str:
        """A value as the flag's text (and the template's default): None is empty."""
        if value is None:
            return ""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "csv":
            return ",".join(value)
        if self.kind == "float":
            return format_number(float(value))
        return str(value)

    def from_text(self, text: str) -> Any:
        """The flag's text as a value; ValueError with a reason when it is not one."""
        if self.parse is not None:
            return self.parse(text)
        if self.kind == "bool":
            return flag_value(text)
        if self.kind == "csv":
            return csv(text)
        if self.kind == "optional":
            return text or None  # an Argo parameter left empty means "not given"
        if self.kind in ("int", "float"):
            try:
                return int(text) if self.kind == "int" else float(text)
            except ValueError:
                whole = "whole " if self.kind == "int" else ""
                raise ValueError(f"not a {whole}number: {text!r}") from None
        return text

    def check(self, value: Any) -> None:
        """BadInput naming the flag when ``value`` breaks a declared rule."""
        if value is None:
            return
        if self.choices is not None and value not in self.choices:
            what = self.noun or f"{self.flag} value"
            raise BadInput(f"unknown {what} {value!r}; choose one of {', '.join(self.choices)}")
        if self.kind not in ("int", "float"):
            return
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInput(f"{self.flag} must be a finite number, got {value}")
        rules = [
            (self.above, lambda v, b: v > b, "greater than"),
            (self.min, lambda v, b: v >= b, "at least"),
            (self.below, lambda v, b: v < b, "less than"),
            (self.max, lambda v, b: v <= b, "at most"),
        ]
        if all(bound is None or ok(value, bound) for bound, ok, _ in rules):
            return
        bound = " and ".join(
            f"{words} {format_number(bound)}" for bound, _, words in rules if bound is not None
        )
        raise BadInput(f"{self.flag} must be {bound}, got {self.text(value)}")


def _kind(hint: Any) -> str:
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if hint is str:
        return "str"
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        return "optional"
    if origin is tuple and args and args[0] is str:
        return "csv"
    raise TypeError(f"no option kind for the type {hint!r}")


def options(config: type) -> tuple[Opt, ...]:
    """The declared fields of a config class, in declaration order (base class first)."""
    hints = typing.get_type_hints(config)
    found = []
    for f in dataclasses.fields(config):
        meta = f.metadata
        if "help" not in meta:
            raise TypeError(f"{config.__name__}.{f.name} is not declared with option()")
        found.append(
            Opt(
                name=f.name,
                kind=_kind(hints[f.name]),
                default=f.default,
                help=meta["help"],
                choices=meta["choices"],
                noun=meta["noun"],
                min=meta["min"],
                max=meta["max"],
                above=meta["above"],
                below=meta["below"],
                enum=meta["enum"],
                parse=meta["parse"],
                argo=meta["argo"],
            )
        )
    return tuple(found)


@dataclass(kw_only=True)
class Declared:
    """Base of every declared config: checks every field against its declaration when built."""

    def __post_init__(self) -> None:
        for opt in options(type(self)):
            opt.check(getattr(self, opt.name))


@dataclass(kw_only=True)
class Config(Declared):
    """Base of every stage config: the model it acts on."""

    model_name: str = option(help="registered model name in MLflow")


@dataclass(kw_only=True)
class DataConfig(Declared):
    """What ``mlcp data <pipeline>`` takes: where to publish, and the seed."""

    out: str | None = option(
        None, help="where to publish: a URI, s3://... or a path (empty: under $MLCP_DATA_ROOT)"
    )
    seed: int = option(0, help="seed of the split (and of the LLM base model's weights)")


@dataclass(frozen=True)
class Stage:
    """A stage: its place (``mlcp <pipeline> <name>``), its config, its function, its gates.

    ``gates`` are the names of the gates the stage records; a chain and a pipeline template
    require the union of their stages' gates before promoting to ``live``. ``title`` and
    ``description`` are what the Argo UI shows of its template.
    """

    pipeline: str
    name: str
    help: str
    config: type
    run: Callable[[Any], Any]
    gates: tuple[str, ...] = ()
    title: str = ""
    description: str = ""

    @property
    def template_name(self) -> str:
        """The WorkflowTemplate's name: ``cv-train``, or ``promote`` for a generic step."""
        return "-".join(self.command)

    @property
    def command(self) -> tuple[str, ...]:
        """The ``mlcp`` words: ``("cv", "train")``, or ``("promote",)`` for a generic step."""
        return tuple(word for word in (self.pipeline, self.name) if word)

    @property
    def writes(self) -> str:
        return next(o for o in options(self.config) if o.name == "output_alias").default


@dataclass(frozen=True)
class Pipeline:
    """A pipeline: its stages in chain order, its data publisher, its default model, and
    how its chain summary reads. The gates promotion to ``live`` requires are its stages'."""

    name: str
    help: str
    stages: tuple[Stage, ...]
    publish: Callable[[DataConfig], dict]  # ``mlcp data <name>``: the versioned data set
    data_help: str
    default_model: str
    summarize: Callable[[str, dict[str, dict], dict[str, str]], tuple[dict, str]]
    title: str = ""  # of the pipeline's template, in the Argo UI
    description: str = ""
    # ``mlcp reproduce``: train a version of this pipeline again from its recorded params and
    # data, and measure it (steps/stages/reproduce.py says what it is given and returns)
    reproduce: Callable[[Any], dict] | None = None
    # ``mlcp data <name>``'s config: DataConfig, or the pipeline's own with its variants
    data_config: type = DataConfig
    # ``mlcp <name> drift``: its drift statistics as a stage (steps/stages/drift.py); a pipeline
    # without one has no drift step, retrain command or drift-aware cron
    drift: Stage | None = None
    # The stages whose experiments MLflow's UI opens on its GenAI view (traces, judges)
    # rather than its model-training view (runs, charts): those whose runs are graded model
    # answers, each a trace (steps/spec/experiments.py)
    genai: tuple[str, ...] = ()
    # The serving back end of its models (their ``mlcp.serving`` tag, an entry point of
    # steps/registry/backends.py), and what its registered models are, in words for someone
    # who has never seen mlcp: the start of each model's description (steps/registry/describe.py)
    serving: str = ""
    model_description: str = ""
    # ``mlcp <name> rollout`` (steps/stages/rollout.py): the gradual shift of its models' live
    # traffic at the router, between perf-test and promote; None: no rollout
    rollout: Stage | None = None

    @property
    def data(self) -> Stage:
        return Stage(self.name, "data", self.data_help, self.data_config, self.publish)

    def __post_init__(self) -> None:
        _DECLARED[self.name] = self

    @property
    def gates(self) -> tuple[str, ...]:
        return tuple(g for stage in self.stages for g in stage.gates)


# Every pipeline declared so far, by name: a stage reads its own pipeline's declaration at
# run time (the training stage records the pipeline's gates as the model's policy) without
# importing the module that declares it, which imports the stage.
_DECLARED: dict[str, Pipeline] = {}


def declared_pipelines() -> tuple[Pipeline, ...]:
    """Every pipeline declared so far (``steps.spec.pipelines.installed()`` declares them all)."""
    return tuple(_DECLARED.values())


def declared_pipeline(name: str) -> Pipeline:
    """The declaration of pipeline ``name`` (LookupError when it was never loaded)."""
    try:
        return _DECLARED[name]
    except KeyError:
        raise LookupError(
            f"pipeline {name!r} is not declared (load it with steps.spec.pipelines.installed() "
            "first)"
        ) from None
