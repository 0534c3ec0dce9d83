"""What a template is made of, derived from a stage's declaration (``steps/spec/declare.py``).

:func:`step_spec` turns a :class:`~steps.spec.declare.Stage` into a :class:`StepSpec`: the Argo
parameter names (the kebab-case field names), the descriptions the UI shows (the fields'
help), the defaults, the enums and the container's arguments all come from the stage's
config, so they cannot drift from the CLI. What only the cluster needs (a title, resources,
a deadline, a default that differs in the cluster) is written in the template's own module
as an explicit :class:`Override`. A :class:`PipelineSpec` chains step templates (by
``templateRef``) that share nothing but the model name and the alias names.

Standard library and the light declaration modules only (no hera, nothing heavy).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from steps.base import outputs
from steps.spec.contract import CHAIN
from steps.spec.declare import BOOLEAN, Opt, Pipeline, Stage, options
from steps.stages import drift

ALIASES = CHAIN
KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


@dataclass(frozen=True)
class Param:
    """One Argo parameter of a step and the CLI flag it becomes.

    ``default=None`` means required: the parameter gets no value, so Argo (and its UI)
    asks for one at submission. An empty string is a real default (the CLI reads an empty
    ``--flag=`` as "not given").
    """

    name: str  # kebab-case Argo name, e.g. model-name
    flag: str  # the CLI flag, e.g. --model-name ("" for a pipeline's own parameter)
    description: str
    default: str | None = None
    enum: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not KEBAB.fullmatch(self.name):
            raise ValueError(f"Argo parameter names are kebab-case: {self.name!r}")
        if (self.flag and not self.flag.startswith("--")) or not self.description.strip():
            raise ValueError(f"{self.name}: a --flag (or none) and a description are required")
        if self.enum is not None and self.default is not None and self.default not in self.enum:
            raise ValueError(f"{self.name}: default {self.default!r} not in {self.enum}")

    @property
    def required(self) -> bool:
        return self.default is None

    @property
    def is_alias(self) -> bool:
        """An alias of the chain (input or output of a stage): a pipeline wires it by name."""
        return self.enum == ALIASES

    @property
    def reference(self) -> str:
        """The Argo expression of the template's input, e.g. {{inputs.parameters.model-name}}."""
        return f"{{{{inputs.parameters.{self.name}}}}}"

    def arg(self) -> str:
        """The container argument: ``--flag={{inputs.parameters.name}}`` (one argv item)."""
        if not self.flag:
            raise ValueError(f"{self.name} is not a CLI flag")
        return f"{self.flag}={self.reference}"


@dataclass(frozen=True)
class Output:
    """An output parameter read from a file the CLI writes under $MLCP_OUTPUT_DIR
    (``default``: its value when the step wrote no such file)."""

    name: str
    file: str
    description: str
    default: str = ""


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    gpus: int = 0  # nvidia.com/gpu (request = limit) when > 0; set at build time (settings)


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
    # parameters whose template default differs from the CLI's, and why (see Override)
    overrides: tuple[tuple[str, Override], ...] = ()

    def args(self) -> list[str]:
        """The container's arguments after the ``mlcp`` entrypoint."""
        return [*self.command, *(p.arg() for p in self.params)]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class Override:
    """A parameter whose template default (and, if given, description) differs from the CLI's,
    with the reason, which the generated YAML does not carry but the code keeps."""

    default: str
    why: str
    description: str | None = None


def param_of(opt: Opt, override: Override | None = None) -> Param:
    """The Argo parameter of a declared field (a required field gets no default)."""
    enum = opt.choices or opt.enum or (BOOLEAN if opt.kind == "bool" else None)
    default = None if opt.required else opt.text(opt.default)
    description = opt.help
    if override is not None:
        default = override.default
        description = override.description or description
    return Param(opt.kebab, opt.flag, description, default, enum)


def step_spec(
    stage: Stage,
    *,
    name: str,
    title: str,
    description: str,
    outputs: tuple[Output, ...],
    resources: Resources,
    active_deadline_seconds: int,
    overrides: Mapping[str, Override] = {},
) -> StepSpec:
    """A step template's spec: every template-visible field of the stage's config, in order."""
    opts = [o for o in options(stage.config) if o.argo]
    unknown = set(overrides) - {o.kebab for o in opts}
    if unknown:
        raise ValueError(f"{name}: overrides of unknown parameters {sorted(unknown)}")
    return StepSpec(
        name=name,
        title=title,
        description=description,
        command=stage.command,
        params=tuple(param_of(o, overrides.get(o.kebab)) for o in opts),
        outputs=outputs,
        resources=resources,
        active_deadline_seconds=active_deadline_seconds,
        overrides=tuple(overrides.items()),
    )


VERSION_OUTPUT = Output(
    "version", "version", "the model version the step acted on (also when a gate refused it)"
)
VERDICT_OUTPUT = Output(
    "verdict", "verdict", "pass when every gate of the stage passed, fail when one said no"
)
RESULT_OUTPUT = Output("result", "result.json", "the stage's summary as JSON (metrics, run id)")
STAGE_OUTPUTS = (VERSION_OUTPUT, VERDICT_OUTPUT, RESULT_OUTPUT)
MOVES_OUTPUT = Output("moves", "moves", "the alias moves made, e.g. live:v1->v2 previous:unset->v1")
EXIT_OUTPUT = Output("run-id", "run-id", "the MLflow run that records the workflow's end")
ACTION_OUTPUT = Output(
    outputs.ACTION,
    outputs.ACTION,
    "promote or rollback when the target alias moved, none otherwise",
    "none",
)
PIPELINE_OUTPUT = Output(
    outputs.PIPELINE,
    outputs.PIPELINE,
    "the model's pipeline (its metrics' label)",
    outputs.UNKNOWN_PIPELINE,
)


HELD_OUTPUT = Output(
    outputs.HELD,
    outputs.HELD,
    "true when the rollout held its weight after a passed step (--until), false when it "
    "promoted or ended",
    "false",
)
# The rollout template's manual approval: a template parameter, no CLI flag (the CLI's is
# --approve, on a terminal). True: the rollout runs step by step (--until next), with an Argo
# suspend between the steps; `argo resume` continues.
APPROVAL = Param(
    "approval",
    "",
    "true: wait for `argo resume` (a suspend step) before each rollout step after the first; "
    "false: every step in one run",
    "false",
    BOOLEAN,
)
# How a pipeline's chain ends: `promote` moves live at once, `rollout` moves the live traffic
# in steps at the router first (<pipeline>-rollout). Only pipelines that declare a rollout.
PROMOTION = Param(
    "promotion",
    "",
    "how the chain moves live: direct (promote at once) or rollout (the pipeline's rollout "
    "template: the live traffic in steps at the router, each judged, then promote)",
    "direct",
    ("direct", "rollout"),
)
ROLLOUT_PREFIX = "rollout-"  # the pipeline's parameters passed to its rollout step
ROLLOUT_PASSED = ("steps", "step-duration")  # ...besides APPROVAL


# The drift step's outputs (steps/stages/drift.py writes them): what the retrain crons' `when`
# reads.
DRIFT_OUTPUTS = (
    Output("version", "version", "the live version whose training data was compared"),
    Output(
        drift.RETRAIN_OUTPUT,
        drift.RETRAIN_OUTPUT,
        "true when the chain should run: drift, or new data and retrain-on-new-data",
        "false",
    ),
    Output(
        drift.REASON_OUTPUT,
        drift.REASON_OUTPUT,
        f"the verdict: {', '.join(drift.VERDICTS)}",
    ),
    Output(drift.DATA_OUTPUT, drift.DATA_OUTPUT, "the data compared: the data to train on"),
    RESULT_OUTPUT,
)


def gate_outputs(gates: tuple[str, ...]) -> tuple[Output, ...]:
    """Each gate's judged value and verdict (1 passed, 0 refused), as the stage writes them
    (``steps/base/outputs.py``); empty when the step ended before judging it."""
    found: list[Output] = []
    for gate in gates:
        found.append(
            Output(
                outputs.gate_value(gate), outputs.gate_value(gate), f"the value gate {gate} judged"
            )
        )
        found.append(
            Output(
                outputs.gate_passed(gate),
                outputs.gate_passed(gate),
                f"1 when gate {gate} passed, 0 when it refused",
            )
        )
    return tuple(found)


# ------------------------------------------------------------------ pipelines


@dataclass(frozen=True)
class PipelineSpec:
    """A chain of step templates run one after the other by ``templateRef``.

    The steps pass each other nothing but the model name and the alias names: every alias
    parameter of a step is wired to the pipeline parameter ``<its default>-alias``.
    ``require_gates`` are the gates promotion to the last alias insists on.
    """

    name: str
    title: str
    description: str
    stages: tuple[tuple[str, StepSpec], ...]  # (step name, spec), in order
    require_gates: tuple[str, ...]
    pipeline: str  # the declared pipeline's name: cv, llm
    # the alternative to the last step, promote (``promotion=rollout``); None: promote only
    rollout: StepSpec | None = None

    @classmethod
    def of(
        cls,
        pipeline: Pipeline,
        steps: Mapping[str, StepSpec],
        promote: StepSpec,
        *,
        name: str,
        title: str,
        description: str,
        rollout: StepSpec | None = None,
    ) -> PipelineSpec:
        """The pipeline's stages in declared order, then promote (or, when the pipeline
        declares one, its rollout); the gates its stages record."""
        if (rollout is None) != (pipeline.rollout is None):
            raise ValueError(f"{name}: a rollout template exactly when the pipeline declares one")
        missing = [s.name for s in pipeline.stages if s.name not in steps]
        if missing:
            raise ValueError(f"{name}: no step template for stage(s) {missing}")
        return cls(
            name=name,
            title=title,
            description=description,
            stages=(*((s.name, steps[s.name]) for s in pipeline.stages), ("promote", promote)),
            require_gates=pipeline.gates,
            pipeline=pipeline.name,
            rollout=rollout,
        )

    def alias_params(self) -> tuple[Param, ...]:
        """The pipeline's alias parameters, in chain order (candidate-alias, ...)."""
        seen: list[str] = []
        for _, spec in self.stages:
            for p in spec.params:
                if p.is_alias and p.default not in seen:
                    seen.append(p.default)
        return tuple(
            Param(
                f"{alias}-alias",
                "",
                f"name of the chain's {alias} alias (the stages read and write it)",
                default=alias,
                enum=ALIASES,
            )
            for alias in sorted(seen, key=ALIASES.index)
        )

    def rollout_params(self) -> tuple[Param, ...]:
        """``promotion`` and what the rollout step is given (``rollout-steps``, ...), each
        declared by the rollout; none when the pipeline has no rollout."""
        if self.rollout is None:
            return ()
        passed = (*(self.rollout.param(name) for name in ROLLOUT_PASSED), APPROVAL)
        return (
            PROMOTION,
            *(Param(ROLLOUT_PREFIX + p.name, "", p.description, p.default, p.enum) for p in passed),
        )

    def params(self) -> tuple[Param, ...]:
        model = next(p for _, spec in self.stages for p in spec.params if p.name == "model-name")
        return (model, *self.alias_params(), *self.rollout_params())
