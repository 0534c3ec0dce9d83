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

from .common import mutex, step_workflow_template
from .settings import Settings
from .specs import PROMOTE

MUTEX = f"mlcp-promote-{PROMOTE.param('model-name').reference}"


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(PROMOTE, synchronization=mutex(MUTEX))
