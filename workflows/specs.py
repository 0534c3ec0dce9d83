"""One definition of each step: its ``mlcp`` command, its parameters and what it returns.

A template is built from a :class:`StepSpec` and nothing else: the Argo parameter names, the
descriptions the UI shows, the defaults, the enums and the container's arguments all come
from here, so they cannot drift apart. Standard library only (no hera), so anything may read
it cheaply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The aliases of the default chain (steps/settings.py CHAIN; a test keeps the two equal).
ALIASES = ("candidate", "staged", "evaluated", "benchmarked", "live", "previous")
BOOLEAN = ("false", "true")
KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


@dataclass(frozen=True)
class Param:
    """One Argo parameter of a step and the CLI flag it becomes.

    ``default=None`` means required: the parameter gets no value, so Argo (and its UI)
    asks for one at submission. An empty string is a real default (the CLI reads an empty
    ``--flag=`` as "not given").
    """

    name: str  # kebab-case Argo name, e.g. model-name
    flag: str  # the CLI flag, e.g. --model-name
    description: str
    default: str | None = None
    enum: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not KEBAB.fullmatch(self.name):
            raise ValueError(f"Argo parameter names are kebab-case: {self.name!r}")
        if not self.flag.startswith("--") or not self.description.strip():
            raise ValueError(f"{self.name}: a --flag and a description are required")
        if self.enum is not None and self.default is not None and self.default not in self.enum:
            raise ValueError(f"{self.name}: default {self.default!r} not in {self.enum}")

    @property
    def required(self) -> bool:
        return self.default is None

    @property
    def reference(self) -> str:
        """The Argo expression of the template's input, e.g. {{inputs.parameters.model-name}}."""
        return f"{{{{inputs.parameters.{self.name}}}}}"

    def arg(self) -> str:
        """The container argument: ``--flag={{inputs.parameters.name}}`` (one argv item)."""
        return f"{self.flag}={self.reference}"


@dataclass(frozen=True)
class Output:
    """An output parameter read from a file the CLI writes under $MLCP_OUTPUT_DIR."""

    name: str
    file: str
    description: str


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True)
class StepSpec:
    """A step: the template name, the ``mlcp`` subcommand words and its parameters."""

    name: str  # the WorkflowTemplate and template name
    title: str
    description: str
    command: tuple[str, ...]  # mlcp subcommand words, e.g. ("promote",) or ("cv", "train")
    params: tuple[Param, ...]
    outputs: tuple[Output, ...] = ()
    resources: Resources = field(
        default_factory=lambda: Resources(
            cpu_request="100m", memory_request="256Mi", cpu_limit="1", memory_limit="1Gi"
        )
    )
    active_deadline_seconds: int = 900

    def args(self) -> list[str]:
        """The container's arguments after the ``mlcp`` entrypoint."""
        return [*self.command, *(p.arg() for p in self.params)]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


VERSION_OUTPUT = Output("version", "version", "the model version the step acted on")
MOVES_OUTPUT = Output("moves", "moves", "the alias moves made, e.g. live:v1->v2 previous:unset->v1")


def _model_name() -> Param:
    return Param("model-name", "--model-name", "registered model name in MLflow")


PROMOTE = StepSpec(
    name="promote",
    title="Promote (or roll back) a model alias",
    description=(
        "Points target-alias at the version source-alias names; moving live keeps the old "
        "live version as previous. Rollback: source-alias=previous, target-alias=live. "
        "One promotion per model at a time (mutex)."
    ),
    command=("promote",),
    params=(
        _model_name(),
        Param(
            "source-alias",
            "--source-alias",
            "alias naming the version to promote (previous for a rollback)",
            default="benchmarked",
            enum=ALIASES,
        ),
        Param(
            "target-alias",
            "--target-alias",
            "alias to move to that version (live keeps the old live as previous)",
            default="live",
            enum=ALIASES,
        ),
        Param(
            "require-gates",
            "--require-gates",
            "comma-separated gates the version must have a passing decision run for (empty: none)",
            default="",
        ),
        Param(
            "expect-version",
            "--expect-version",
            "refuse unless source-alias names this version (empty: any)",
            default="",
        ),
        Param(
            "reason",
            "--reason",
            "why; recorded with the move (required when force is true)",
            default="",
        ),
        Param(
            "force",
            "--force",
            "promote despite missing gates (needs a reason; recorded as forced)",
            default="false",
            enum=BOOLEAN,
        ),
        Param(
            "dry-run",
            "--dry-run",
            "show the moves and exit with the code the real run would have; change nothing",
            default="false",
            enum=BOOLEAN,
        ),
    ),
    outputs=(VERSION_OUTPUT, MOVES_OUTPUT),
    resources=Resources(
        cpu_request="100m", memory_request="256Mi", cpu_limit="1", memory_limit="1Gi"
    ),
    active_deadline_seconds=600,
)

STEPS: tuple[StepSpec, ...] = (PROMOTE,)
