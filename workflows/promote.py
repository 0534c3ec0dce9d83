"""promote: reads ``source-alias`` (default ``benchmarked``) and writes ``target-alias``
(default ``live``); moving ``live`` also writes ``previous`` (the old live version).

The generic promotion, for any model and any pair of aliases. It is also the rollback::

    argo submit --from workflowtemplate/promote \\
        -p model-name=M -p source-alias=previous -p target-alias=live

which does not swap: ``previous`` becomes the version that was live before the restored one
(the history of ``live`` is a stack). One writer per model at a time: the template holds an
Argo mutex named after the model.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.registry import promote
from steps.spec.contract import BENCHMARKED, LIVE

from . import metrics
from .common import backend_volumes, model_mutex, mutex, step_workflow_template
from .settings import Settings
from .specs import (
    ACTION_OUTPUT,
    MOVES_OUTPUT,
    PIPELINE_OUTPUT,
    VERSION_OUTPUT,
    Override,
    Resources,
    step_spec,
)

SPEC = step_spec(
    promote.PROMOTE,
    name="promote",
    title="Promote (or roll back) a model alias",
    description=(
        "Points target-alias at the version source-alias names; moving live keeps the old "
        "live version as previous. Rollback: source-alias=previous, target-alias=live. "
        "One promotion per model at a time (mutex)."
    ),
    outputs=(VERSION_OUTPUT, MOVES_OUTPUT, ACTION_OUTPUT, PIPELINE_OUTPUT),
    resources=Resources("100m", "256Mi", "1", "1Gi"),
    active_deadline_seconds=600,
    overrides={
        # the CLI asks for both aliases; a submission from the UI starts from the chain's end
        "source-alias": Override(BENCHMARKED, why="the last stage's alias of every chain"),
        "target-alias": Override(LIVE, why="what a promotion usually moves"),
    },
)
MUTEX = model_mutex(SPEC)
# The same step serves every pipeline: its metrics take the pipeline from the model's tag.
METRICS = metrics.step_metrics(
    metrics.output(PIPELINE_OUTPUT.name),
    SPEC.name,
    extra=(
        metrics.alias_move_metric(
            SPEC.param("model-name").reference,
            SPEC.param("target-alias").reference,
            ACTION_OUTPUT.name,
        ),
    ),
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    # promote loads the new live version into its back end: it mounts what they declare
    return step_workflow_template(
        SPEC,
        settings=settings,
        synchronization=mutex(MUTEX),
        volumes=backend_volumes(),
        step_metrics=METRICS,
    )
