"""One definition of each step: its ``mlcp`` command, its parameters and what it returns.

A template is built from a :class:`StepSpec` and nothing else: the Argo parameter names, the
descriptions the UI shows, the defaults, the enums and the container's arguments all come
from here, so they cannot drift apart. A :class:`PipelineSpec` chains step templates (by
``templateRef``) that share nothing but the model name and the alias names. Standard library
only (no hera), so anything may read it cheaply.

A new pipeline (llm) is new specs here and one short module per template in ``workflows/``.
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

    def args(self) -> list[str]:
        """The container's arguments after the ``mlcp`` entrypoint."""
        return [*self.command, *(p.arg() for p in self.params)]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


VERSION_OUTPUT = Output(
    "version", "version", "the model version the step acted on (also when a gate refused it)"
)
VERDICT_OUTPUT = Output(
    "verdict", "verdict", "pass when every gate of the stage passed, fail when one said no"
)
RESULT_OUTPUT = Output("result", "result.json", "the stage's summary as JSON (metrics, run id)")
STAGE_OUTPUTS = (VERSION_OUTPUT, VERDICT_OUTPUT, RESULT_OUTPUT)
MOVES_OUTPUT = Output("moves", "moves", "the alias moves made, e.g. live:v1->v2 previous:unset->v1")


def _model_name() -> Param:
    return Param("model-name", "--model-name", "registered model name in MLflow")


def _input_alias(default: str) -> Param:
    return Param(
        "input-alias", "--input-alias", "alias naming the version to read", default, ALIASES
    )


def _output_alias(default: str) -> Param:
    return Param(
        "output-alias",
        "--output-alias",
        "alias to point at the version when every gate passes",
        default,
        ALIASES,
    )


DEVICES = ("auto", "cpu", "cuda")


def _device() -> Param:
    return Param(
        "device",
        "--device",
        "where to train: auto (the GPU when the pod has one, else the CPU), cpu or cuda",
        default="auto",
        enum=DEVICES,
    )


def _triton_url() -> Param:
    return Param(
        "triton-url", "--triton-url", "Triton HTTP URL (empty: $MLCP_TRITON_URL)", default=""
    )


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

# ------------------------------------------------------------------ cv (ResNet-18 on Triton)

CV_TRAIN = StepSpec(
    name="cv-train",
    title="CV: train ResNet-18 (writes candidate)",
    description=(
        "Trains ResNet-18 on the versioned image set, registers the version, records the "
        "min-val-accuracy gate and points output-alias (candidate) at it only on a pass."
    ),
    command=("cv", "train"),
    params=(
        _model_name(),
        _output_alias("candidate"),
        Param(
            "data",
            "--data",
            "data set URI, s3://... or a folder (empty: the published digits set)",
            default="",
        ),
        Param("epochs", "--epochs", "training epochs", default="3"),
        Param("lr", "--lr", "SGD learning rate", default="0.05"),
        Param("batch-size", "--batch-size", "images per training step", default="32"),
        Param("image-size", "--image-size", "side of the square input images", default="32"),
        Param("seed", "--seed", "random seed of the initialisation and shuffling", default="0"),
        Param(
            "min-val-accuracy",
            "--min-val-accuracy",
            "gate: the lowest validation accuracy that writes candidate",
            default="0.8",
        ),
        Param(
            "weights",
            "--weights",
            "ResNet-18 state_dict file in the image to start from (empty: random init)",
            default="",
        ),
        _device(),
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources(cpu_request="1", memory_request="2Gi", cpu_limit="2", memory_limit="4Gi"),
    active_deadline_seconds=3600,
)

CV_DEPLOY = StepSpec(
    name="cv-deploy",
    title="CV: deploy to Triton's staged slot (candidate -> staged)",
    description=(
        "Exports input-alias (candidate) to ONNX, checks it against PyTorch (onnx-parity "
        "gate), writes it to the Triton model repository, loads <model>-staged, smoke-tests "
        "it and points output-alias (staged) at it."
    ),
    command=("cv", "deploy"),
    params=(
        _model_name(),
        _input_alias("candidate"),
        _output_alias("staged"),
        Param(
            "backend",
            "--backend",
            "Triton backend: onnxruntime (the official Triton image) or python",
            default="onnxruntime",
            enum=("python", "onnxruntime"),
        ),
        Param(
            "repository",
            "--repository",
            "Triton model repository, s3://... or a folder (empty: $MLCP_TRITON_REPOSITORY)",
            default="",
        ),
        _triton_url(),
        Param(
            "tolerance",
            "--tolerance",
            "gate onnx-parity: the largest |ONNX - PyTorch| allowed on held-out images",
            default="0.001",
        ),
        Param(
            "max-batch-size",
            "--max-batch-size",
            "Triton max_batch_size (dynamic batching)",
            default="64",
        ),
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources(
        cpu_request="500m", memory_request="1Gi", cpu_limit="2", memory_limit="3Gi"
    ),
    active_deadline_seconds=1200,
)

CV_EVALUATE = StepSpec(
    name="cv-evaluate",
    title="CV: evaluate through Triton (staged -> evaluated)",
    description=(
        "Sends the test split through Triton's <model>-staged slot; records accuracy, "
        "per-class accuracy and the confusion matrix; the accuracy gate (a minimum, and no "
        "worse than live by more than max-regression) decides output-alias (evaluated)."
    ),
    command=("cv", "evaluate"),
    params=(
        _model_name(),
        _input_alias("staged"),
        _output_alias("evaluated"),
        Param(
            "data",
            "--data",
            "data set URI (empty: the one the version was trained on)",
            default="",
        ),
        Param("min-accuracy", "--min-accuracy", "gate accuracy: the lowest test accuracy", "0.8"),
        Param(
            "max-regression",
            "--max-regression",
            "gate accuracy: the largest drop allowed against the live version",
            default="0.02",
        ),
        Param("batch-size", "--batch-size", "images per inference request", default="64"),
        _triton_url(),
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources(
        cpu_request="250m", memory_request="1Gi", cpu_limit="1", memory_limit="2Gi"
    ),
    active_deadline_seconds=900,
)

CV_PERF_TEST = StepSpec(
    name="cv-perf-test",
    title="CV: load-test the staged slot (evaluated -> benchmarked)",
    description=(
        "A bounded locust load against Triton's <model>-staged slot; records p50/p95/p99, "
        "requests per second and the error rate; the p95-latency, throughput and error-rate "
        "gates (also against live) decide output-alias (benchmarked)."
    ),
    command=("cv", "perf-test"),
    params=(
        _model_name(),
        _input_alias("evaluated"),
        _output_alias("benchmarked"),
        Param("users", "--users", "concurrent simulated users", default="4"),
        Param("duration", "--duration", "seconds of load", default="8"),
        Param("batch", "--batch", "images per request", default="1"),
        Param("max-p95-ms", "--max-p95-ms", "gate p95-latency: the highest p95 in ms", "500"),
        Param("min-rps", "--min-rps", "gate throughput: the lowest requests per second", "5"),
        Param(
            "max-error-rate",
            "--max-error-rate",
            "gate error-rate: the highest share of failed requests",
            default="0.01",
        ),
        Param(
            "max-p95-regression-ms",
            "--max-p95-regression-ms",
            "gate p95-latency: the largest rise in ms allowed against the live version",
            default="100",
        ),
        Param(
            "max-rps-regression",
            "--max-rps-regression",
            "gate throughput: the largest drop in requests/s allowed against the live version",
            default="50",
        ),
        _triton_url(),
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources(
        cpu_request="500m", memory_request="512Mi", cpu_limit="2", memory_limit="2Gi"
    ),
    active_deadline_seconds=900,
)


# ------------------------------------------------------------------ llm (LoRA adapter on vLLM)


def _vllm_url() -> Param:
    return Param("vllm-url", "--vllm-url", "vLLM URL (empty: $MLCP_VLLM_URL)", default="")


# Where llm-deploy mounts the adapter volume it shares with the vLLM server (workflows/common.py
# ADAPTER_CLAIM); the server may see it under another path ($MLCP_VLLM_SERVER_ADAPTER_DIR).
ADAPTER_MOUNT = "/adapters"
LLM_TARGET_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
JUDGES = ("reference", "openai")
JUDGE_CONSTRAINTS = ("structured_outputs", "guided_choice", "none")

LLM_TRAIN = StepSpec(
    name="llm-train",
    title="LLM: train a LoRA adapter (writes candidate)",
    description=(
        "Trains a LoRA adapter (transformers + peft) on the base model with the versioned "
        "instruction set, registers the version, records the max-eval-perplexity gate and "
        "points output-alias (candidate) at it only on a pass."
    ),
    command=("llm", "train"),
    params=(
        _model_name(),
        _output_alias("candidate"),
        Param(
            "data",
            "--data",
            "instruction set URI (JSONL), s3://... or a file (empty: the published set)",
            default="",
        ),
        Param(
            "base-model",
            "--base-model",
            "base model: a .tar (s3:// or a file), a folder or a model name "
            "(empty: $MLCP_LLM_BASE_MODEL, else the published one)",
            default="",
        ),
        Param("epochs", "--epochs", "training epochs", default="12"),
        Param("lr", "--lr", "AdamW learning rate", default="0.003"),
        Param("batch-size", "--batch-size", "samples per training step", default="32"),
        Param("rank", "--rank", "LoRA rank", default="8"),
        Param("alpha", "--alpha", "LoRA alpha (scaling)", default="16"),
        Param("dropout", "--dropout", "LoRA dropout", default="0"),
        Param(
            "target-modules",
            "--target-modules",
            "comma-separated modules to adapt (default: every linear layer of a block)",
            default=LLM_TARGET_MODULES,
        ),
        Param("seed", "--seed", "random seed of the initialisation and shuffling", default="0"),
        Param(
            "max-eval-perplexity",
            "--max-eval-perplexity",
            "gate: the highest validation perplexity that writes candidate",
            default="2",
        ),
        Param("max-length", "--max-length", "tokens per training sample", default="64"),
        _device(),
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources(cpu_request="1", memory_request="4Gi", cpu_limit="4", memory_limit="16Gi"),
    active_deadline_seconds=7200,
)

LLM_DEPLOY = StepSpec(
    name="llm-deploy",
    title="LLM: deploy to vLLM's staged slot (candidate -> staged)",
    description=(
        "Checks input-alias's (candidate) adapter against the base vLLM serves, places it on "
        "the adapter volume vLLM reads, loads it into the <model>-staged slot at runtime, "
        "smoke-tests it and points output-alias (staged) at it."
    ),
    command=("llm", "deploy"),
    params=(
        _model_name(),
        _input_alias("candidate"),
        _output_alias("staged"),
        _vllm_url(),
        Param(
            "adapter-dir",
            "--adapter-dir",
            f"folder shared with the vLLM server where adapters are placed "
            f"(the template mounts the adapter volume at {ADAPTER_MOUNT})",
            default=ADAPTER_MOUNT,
        ),
        Param(
            "smoke-prompt",
            "--smoke-prompt",
            "instruction the loaded adapter must answer (a smoke test)",
            default="repeat: red blue green",
        ),
        Param("max-tokens", "--max-tokens", "tokens of the smoke answer", default="8"),
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources(
        cpu_request="250m", memory_request="512Mi", cpu_limit="1", memory_limit="2Gi"
    ),
    active_deadline_seconds=1200,
)

LLM_EVALUATE = StepSpec(
    name="llm-evaluate",
    title="LLM: judge the staged slot's answers (staged -> evaluated)",
    description=(
        "Answers the eval split through vLLM's <model>-staged slot and through the bare base; "
        "a judge (versioned prompt) grades every answer; the correct-rate (also against "
        "live), refusal-rate and gain-over-base gates decide output-alias (evaluated)."
    ),
    command=("llm", "evaluate"),
    params=(
        _model_name(),
        _input_alias("staged"),
        _output_alias("evaluated"),
        Param(
            "data",
            "--data",
            "instruction set URI (empty: the one the version was trained on)",
            default="",
        ),
        Param(
            "judge",
            "--judge",
            "judge back end: reference (deterministic rubric) or openai (an "
            "OpenAI-compatible endpoint)",
            default="reference",
            enum=JUDGES,
        ),
        Param(
            "judge-url",
            "--judge-url",
            "openai judge: base URL, e.g. http://judge:8000/v1 (empty: $MLCP_JUDGE_URL)",
            default="",
        ),
        Param(
            "judge-model",
            "--judge-model",
            "openai judge: model name (empty: $MLCP_JUDGE_MODEL)",
            default="",
        ),
        Param(
            "judge-constraint",
            "--judge-constraint",
            "openai judge: how its reply is held to the grades (guided_choice for older "
            "vLLM, none for endpoints without the option)",
            default="structured_outputs",
            enum=JUDGE_CONSTRAINTS,
        ),
        Param(
            "min-correct",
            "--min-correct",
            "gate correct-rate: the lowest share of correct answers",
            default="0.5",
        ),
        Param(
            "max-regression",
            "--max-regression",
            "gate correct-rate: the largest drop allowed against the live version",
            default="0.1",
        ),
        Param(
            "max-refusal",
            "--max-refusal",
            "gate refusal-rate: the highest share of refusals",
            default="0.1",
        ),
        Param(
            "min-gain",
            "--min-gain",
            "gate gain-over-base: the lowest score gain over the bare base model",
            default="0.2",
        ),
        Param("max-tokens", "--max-tokens", "tokens per answer", default="12"),
        Param("limit", "--limit", "only the first N eval prompts (0: all)", default="0"),
        _vllm_url(),
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources(
        cpu_request="250m", memory_request="512Mi", cpu_limit="1", memory_limit="2Gi"
    ),
    active_deadline_seconds=1800,
)

LLM_PERF_TEST = StepSpec(
    name="llm-perf-test",
    title="LLM: load-test the staged slot (evaluated -> benchmarked)",
    description=(
        "A bounded locust load of streaming completions against vLLM's <model>-staged slot; "
        "records time to first token, end-to-end latency, tokens per second and the success "
        "rate; the ttft-p95, e2e-p95, tokens-per-second (also against live) and success-rate "
        "gates decide output-alias (benchmarked)."
    ),
    command=("llm", "perf-test"),
    params=(
        _model_name(),
        _input_alias("evaluated"),
        _output_alias("benchmarked"),
        Param("users", "--users", "concurrent simulated users", default="2"),
        Param("duration", "--duration", "seconds of load", default="8"),
        Param("max-tokens", "--max-tokens", "tokens per completion", default="16"),
        Param(
            "max-ttft-p95-ms",
            "--max-ttft-p95-ms",
            "gate ttft-p95: the highest p95 time to first token in ms",
            default="1000",
        ),
        Param(
            "max-e2e-p95-ms",
            "--max-e2e-p95-ms",
            "gate e2e-p95: the highest p95 end-to-end latency in ms",
            default="3000",
        ),
        Param(
            "min-tokens-per-s",
            "--min-tokens-per-s",
            "gate tokens-per-second: the lowest generated tokens per second",
            default="20",
        ),
        Param(
            "min-success-rate",
            "--min-success-rate",
            "gate success-rate: the lowest share of completed requests",
            default="0.99",
        ),
        Param(
            "max-ttft-regression-ms",
            "--max-ttft-regression-ms",
            "gate ttft-p95: the largest rise in ms allowed against the live version",
            default="500",
        ),
        Param(
            "max-e2e-regression-ms",
            "--max-e2e-regression-ms",
            "gate e2e-p95: the largest rise in ms allowed against the live version",
            default="1000",
        ),
        Param(
            "max-tps-regression",
            "--max-tps-regression",
            "gate tokens-per-second: the largest drop allowed against the live version",
            default="100",
        ),
        _vllm_url(),
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources(
        cpu_request="500m", memory_request="512Mi", cpu_limit="2", memory_limit="2Gi"
    ),
    active_deadline_seconds=900,
)


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

    def params(self) -> tuple[Param, ...]:
        return (_model_name(), *self.alias_params())


CV_GATES = (
    "min-val-accuracy",
    "onnx-parity",
    "accuracy",
    "p95-latency",
    "throughput",
    "error-rate",
)

CV_PIPELINE = PipelineSpec(
    name="cv-pipeline",
    title="CV: train -> deploy -> evaluate -> perf-test -> promote",
    description=(
        "The whole CV chain, each stage its own WorkflowTemplate (templateRef), sharing "
        "nothing but the model name and the aliases. A failed gate fails its step and stops "
        "the chain; promote to live requires every CV gate's passing decision."
    ),
    stages=(
        ("train", CV_TRAIN),
        ("deploy", CV_DEPLOY),
        ("evaluate", CV_EVALUATE),
        ("perf-test", CV_PERF_TEST),
        ("promote", PROMOTE),
    ),
    require_gates=CV_GATES,
)


# steps/llm/chain.py GATES (a test keeps the two equal).
LLM_GATES = (
    "max-eval-perplexity",
    "correct-rate",
    "refusal-rate",
    "gain-over-base",
    "ttft-p95",
    "e2e-p95",
    "tokens-per-second",
    "success-rate",
)

LLM_PIPELINE = PipelineSpec(
    name="llm-pipeline",
    title="LLM: train -> deploy -> evaluate -> perf-test -> promote",
    description=(
        "The whole LLM chain, each stage its own WorkflowTemplate (templateRef), sharing "
        "nothing but the model name and the aliases. A failed gate fails its step and stops "
        "the chain; promote to live (which reloads vLLM's <model>-live slot) requires every "
        "LLM gate's passing decision."
    ),
    stages=(
        ("train", LLM_TRAIN),
        ("deploy", LLM_DEPLOY),
        ("evaluate", LLM_EVALUATE),
        ("perf-test", LLM_PERF_TEST),
        ("promote", PROMOTE),
    ),
    require_gates=LLM_GATES,
)

STEPS: tuple[StepSpec, ...] = (
    PROMOTE,
    CV_TRAIN,
    CV_DEPLOY,
    CV_EVALUATE,
    CV_PERF_TEST,
    LLM_TRAIN,
    LLM_DEPLOY,
    LLM_EVALUATE,
    LLM_PERF_TEST,
)
PIPELINES: tuple[PipelineSpec, ...] = (CV_PIPELINE, LLM_PIPELINE)
