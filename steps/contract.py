"""The contract every stage, template and back end shares: alias names, tag keys, slot names
and how a version is written for people. Standard library only; every other module imports
its names from here instead of spelling them again.
"""

from __future__ import annotations

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

# ------------------------------------------------------------------ tag keys

TAG_PREFIX = "mlcp."
# on registered models
PIPELINE_TAG = TAG_PREFIX + "pipeline"  # cv | llm: the experiments of its runs
SERVING_TAG = TAG_PREFIX + "serving"  # the serving back end that carries its live traffic
# on runs
KIND_TAG = TAG_PREFIX + "kind"  # stage | decision | alias-move | workflow
MODEL_TAG = TAG_PREFIX + "model"
VERSION_TAG = TAG_PREFIX + "version"
STAGE_TAG = TAG_PREFIX + "stage"
ACTOR_TAG = TAG_PREFIX + "actor"
ARGO_TAG_PREFIX = TAG_PREFIX + "argo."  # + workflow_name, workflow_uid
GATE_TAG = TAG_PREFIX + "gate"  # on a decision run: the gate's name
VERDICT_TAG = TAG_PREFIX + "verdict"  # on a decision run: pass | fail
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
GPU_TAG = TAG_PREFIX + "gpu"  # on a training run: the GPU it ran on
# An alias-move record stores a missing version (an unset alias) as this value.
NO_VERSION = "none"

# ------------------------------------------------------------------ serving slots


def staged_slot(model: str) -> str:
    """The serving slot a deployed, not yet live, version is loaded into."""
    return f"{model}-{STAGED}"


def live_slot(model: str) -> str:
    """The serving slot that carries the live version's traffic."""
    return f"{model}-{LIVE}"


# ------------------------------------------------------------------ versions for people


def show_version(version: str | int | None) -> str:
    """``v3``, or ``unset`` for an alias that names no version (one spelling everywhere)."""
    return "unset" if version is None else f"v{version}"
