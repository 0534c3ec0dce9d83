"""cv-evaluate: reads ``input-alias`` (default ``staged``) and writes ``output-alias``
(default ``evaluated``), only when the accuracy gate passes.

One container step running ``mlcp cv evaluate``: the test split through Triton's staged slot,
accuracy against a minimum and against the live version's recorded decision.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from .common import step_workflow_template
from .settings import Settings
from .specs import CV_EVALUATE


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(CV_EVALUATE)
