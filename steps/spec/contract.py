"""The contract every stage, template and back end shares: alias names (and what one may be),
tag keys, slot names and how a version is written for people. Standard library only; every
other module imports its names from here instead of spelling them again.
"""

from __future__ import annotations

import re

from ..base.errors import BadInput

# ------------------------------------------------------------------ aliases (the default chain)

CANDIDATE = "candidate"
STAGED = "staged"
EVALUATED = "evaluated"
BENCHMARKED = "benchmarked"
LIVE = "live"
PREVIOUS = "previous"
# In chain order: train writes candidate, deploy staged, evaluate evaluated, perf-test
# benchmarked, promote live (and previous).
CHAIN = (CANDIDATE, STAGED, EVALUATED, BENCHMARKED, LIVE, PREVIOUS)
# Outside the chain: the drift step points it at the live version whose data drifted
# (steps/stages/drift.py); a promotion of a new version to live removes it
# (steps/registry/promote.py).
DRIFT_DETECTED = "drift-detected"

# ------------------------------------------------------------------ tag keys

TAG_PREFIX = "mlcp."
# on registered models
PIPELINE_TAG = TAG_PREFIX + "pipeline"  # cv | llm: the experiments of its runs
NO_PIPELINE = "registry"  # the experiments of a model whose PIPELINE_TAG is unset
SERVING_TAG = TAG_PREFIX + "serving"  # the serving back end that carries its live traffic
# the gates a promotion to live requires (comma-separated; steps/registry/policy.py)
REQUIRED_GATES_TAG = TAG_PREFIX + "policy.require_gates"
# on runs
KIND_TAG = TAG_PREFIX + "kind"  # stage | decision | alias-move | workflow | reproduce
MODEL_TAG = TAG_PREFIX + "model"
VERSION_TAG = TAG_PREFIX + "version"
STAGE_TAG = TAG_PREFIX + "stage"
ACTOR_TAG = TAG_PREFIX + "actor"
ARGO_TAG_PREFIX = TAG_PREFIX + "argo."  # + workflow_name, workflow_uid
GATE_TAG = TAG_PREFIX + "gate"  # on a decision run: the gate's name
VERDICT_TAG = TAG_PREFIX + "verdict"  # on a decision run: pass | fail
# on a decision run of a gate against the champion: the comparison in one line
COMPARISON_TAG = TAG_PREFIX + "comparison"
# on a workflow run (``mlcp record-exit``, the Argo exit handler): how a workflow ended
WORKFLOW_STATUS_TAG = TAG_PREFIX + "workflow.status"  # Succeeded | Failed | Error
FAILED_STEP_TAG = TAG_PREFIX + "workflow.failed_step"  # e.g. evaluate; none
FAILED_TEMPLATE_TAG = TAG_PREFIX + "workflow.failed_template"  # e.g. cv-evaluate; none
EXIT_CODE_TAG = TAG_PREFIX + "workflow.exit_code"  # 3; unknown (no exit code); none
EXIT_REASON_TAG = TAG_PREFIX + "workflow.reason"  # one line: why it failed
REFUSED_BY_TAG = TAG_PREFIX + "workflow.refused_by"  # comma-separated gates; empty: none
NOTIFICATION_TAG = TAG_PREFIX + "workflow.notification"  # sent | not configured | failed: why
# on model versions
DATA_SOURCE_TAG = TAG_PREFIX + "data.source"
DATA_DIGEST_TAG = TAG_PREFIX + "data.digest"
ROLLED_BACK_TAG = TAG_PREFIX + "rolled_back"
TRAIN_RUN_TAG = TAG_PREFIX + "train_run"  # the run that trained the version
# on a version `mlcp reproduce --register` wrote, and on the runs of a reproduction: the
# version it trained again
REPRODUCES_TAG = TAG_PREFIX + "reproduces"
GPU_TAG = TAG_PREFIX + "gpu"  # the GPU torch sees (provenance); a cuda training run: its GPU
# pinned inputs (steps/spec/pinning.py), on the training run and its version: the revision of each
# model the run loaded (+ the input's name, e.g. base_model): a model hub commit (40 hex), or
# sha256:<digest> of the folder or .tar it read
REVISION_TAG_PREFIX = TAG_PREFIX + "revision."
# on an adapter's version: the base model it was trained on, its pinned revision (above, input
# base_model) and the hidden size it was made for; a serving back end that loads adapters
# checks them against the base it serves before it loads one (steps/serving/vllm.py)
BASE_MODEL_TAG = TAG_PREFIX + "base_model"
BASE_INPUT = "base_model"
BASE_REVISION_TAG = REVISION_TAG_PREFIX + BASE_INPUT
HIDDEN_SIZE_TAG = TAG_PREFIX + "hidden_size"
# true on a run that was allowed to load a model by name without a pinned revision
# (--allow-unpinned); false otherwise
ALLOW_UNPINNED_TAG = TAG_PREFIX + "allow_unpinned"
# An alias-move record stores a missing version (an unset alias) as this value.
NO_VERSION = "none"
# provenance, on every run the project creates (steps/records/provenance.py). MLflow's own names
# where MLflow defines one (mlflow/utils/mlflow_tags.py), so that its UI shows them.
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # the commit of the code; unknown
SOURCE_NAME_TAG = "mlflow.source.name"  # what ran: e.g. mlcp cv train
SOURCE_TYPE_TAG = "mlflow.source.type"  # JOB
SOURCE_TYPE = "JOB"
PACKAGE_VERSION_TAG = TAG_PREFIX + "package_version"  # mlflow-control-plane's version
IMAGE_TAG = TAG_PREFIX + "image"  # the image the step ran in; local outside one
ENV_TAG_PREFIX = TAG_PREFIX + "env."  # + a library: its installed version; not installed
ENV_LIBRARIES = ("python", "torch", "transformers", "peft", "mlflow", "onnxruntime", "vllm")
CUDA_TAG = TAG_PREFIX + "cuda"  # the CUDA version torch runs with; cpu; not loaded
SEEDS_TAG = TAG_PREFIX + "seeds"  # name=value,... the seeds the run set; none
# GPU_TAG (above) is provenance too: the GPU's name; cpu; not loaded
UNKNOWN = "unknown"  # a commit the run cannot find
LOCAL_IMAGE = "local"  # a run outside the step image (no MLCP_IMAGE)
NOT_INSTALLED = "not installed"
NOT_LOADED = "not loaded"  # torch not imported by the process: CUDA and GPU not looked at
NO_SEED = "none"
PROVENANCE_TAGS = (
    GIT_COMMIT_TAG,
    SOURCE_NAME_TAG,
    SOURCE_TYPE_TAG,
    PACKAGE_VERSION_TAG,
    IMAGE_TAG,
    *(ENV_TAG_PREFIX + name for name in ENV_LIBRARIES),
    CUDA_TAG,
    GPU_TAG,
    SEEDS_TAG,
)  # every key every run carries

# on traces (steps/registry/traces.py): one trace per call a stage makes to a model or a judge
CALL_TAG = TAG_PREFIX + "call"  # what the call was: one of CALLS
ANSWER_CALL = "answer"  # a completion that answers an eval prompt
JUDGE_CALL = "judge"  # a judge grading one answer
SMOKE_CALL = "smoke"  # a deploy's smoke completion
CALLS = (ANSWER_CALL, JUDGE_CALL, SMOKE_CALL)
SAMPLE_TAG = TAG_PREFIX + "sample_id"  # the eval sample asked
SLOT_TAG = TAG_PREFIX + "slot"  # who answered: a serving slot, or the bare base's name
# MODEL_TAG and VERSION_TAG (above) too: the model, and the version the slot served (NO_VERSION
# for the bare base)
JUDGE_PROMPT_TAG = TAG_PREFIX + "judge_prompt.sha256"  # the sha256 of the judge's instructions
GRADE_TAG = TAG_PREFIX + "grade"  # the judge's grade; on an answer also an assessment:
GRADE_ASSESSMENT = "grade"  # the name of that assessment (MLflow's feedback)
TRACE_TAGS = (CALL_TAG, MODEL_TAG, VERSION_TAG, SAMPLE_TAG, SLOT_TAG, JUDGE_PROMPT_TAG, GRADE_TAG)

# on a weight change at the router (an alias-move record of the alias TRAFFIC, action shift,
# or sync when a check repaired it; steps/stages/rollout.py): the challenger's share, from and to
# (percent), and the slot that share goes to
TRAFFIC = "traffic"  # the "alias" such a record moves: the model's traffic at the router
WEIGHT_FROM_TAG = TAG_PREFIX + "weight.from"
WEIGHT_TO_TAG = TAG_PREFIX + "weight.to"
WEIGHT_SLOT_TAG = TAG_PREFIX + "weight.slot"

# ------------------------------------------------------------------ serving slots


def staged_slot(model: str) -> str:
    """The serving slot a deployed, not yet live, version is loaded into."""
    return f"{model}-{STAGED}"


def previous_slot(model: str) -> str:
    """The slot that keeps the version live before the last promotion through the router
    warm, so that a rollback flips the route to it instead of loading it."""
    return f"{model}-{PREVIOUS}"


def live_slot(model: str) -> str:
    """The serving slot that carries the live version's traffic."""
    return f"{model}-{LIVE}"


# ------------------------------------------------------------------ versions for people


def show_version(version: str | int | None) -> str:
    """``v3``, or ``unset`` for an alias that names no version (one spelling everywhere)."""
    return "unset" if version is None else f"v{version}"


# ------------------------------------------------------------------ alias names

ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")
# ``v1``/``v2``... are reserved by MLflow as version references, never alias names.
RESERVED_RE = re.compile(r"^[vV]\d+$")


def check_alias_name(alias: str) -> str:
    if not ALIAS_RE.match(alias or "") or RESERVED_RE.match(alias) or alias.lower() == "latest":
        raise BadInput(
            f"invalid alias name {alias!r}: use letters, digits, '_' and '-', starting with a "
            "letter ('latest' and names like 'v3' are reserved by MLflow)"
        )
    return alias
