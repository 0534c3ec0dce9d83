"""cv-evaluate: reads ``input-alias`` (default ``staged``) and writes ``output-alias``
(default ``evaluated``), only when the accuracy gate passes.

One container step running ``mlcp cv evaluate``: the test split through Triton's staged slot,
accuracy against a minimum and against the live version's recorded decision.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.cv import evaluate

from .common import step_workflow_template
from .settings import Settings
from .specs import STAGE_OUTPUTS, Resources, step_spec

SPEC = step_spec(
    evaluate.STAGE,
    name="cv-evaluate",
    title="CV: evaluate through Triton (staged -> evaluated)",
    description=(
        "Sends the test split through Triton's <model>-staged slot; records accuracy, "
        "per-class accuracy and the confusion matrix; the accuracy gate (a minimum, and no "
        "worse than live by more than max-regression) decides output-alias (evaluated)."
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources("250m", "1Gi", "1", "2Gi"),
    active_deadline_seconds=900,
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(SPEC)
