"""serving-sync: reads live and staged and writes no alias.

It loads the version each alias names into its slot on every replica that serves another or
none (after a restart that lost it, a load made by hand), each repair recorded in
``<pipeline>/promote`` with the action ``sync``, so ``mlcp history`` shows it. It holds
promote's per-model mutex (an empty ``model-name``, every model, holds the mutex of that empty
name: run it when no promotion is due) and mounts the serving back ends' volumes, as promote
does.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.registry import serving_state

from . import metrics
from .common import ANY_PIPELINE, backend_volumes, mutex, step_workflow_template
from .promote import MUTEX
from .serving_check import SPEC as CHECK
from .settings import Settings
from .specs import step_spec

SPEC = step_spec(
    serving_state.SYNC,
    name=serving_state.SYNC.template_name,
    title=serving_state.SYNC.title,
    description=serving_state.SYNC.description,
    outputs=(),
    resources=CHECK.resources,
    active_deadline_seconds=1800,
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(
        SPEC,
        settings=settings,
        synchronization=mutex(MUTEX),  # promote's: no promotion of the model meanwhile
        volumes=backend_volumes(),
        step_metrics=metrics.step_metrics(ANY_PIPELINE, SPEC.name),
    )
