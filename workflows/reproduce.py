"""reproduce: reads ``alias`` (default ``live``) and writes no alias; it trains the version that
alias names again from its recorded params, seed and data, and records whether it came out
the same.

One container step running ``mlcp reproduce --model-name=M --alias=A``, for a model of any
pipeline (the model's ``mlcp.pipeline`` tag picks the training, as ``promote`` serves every
pipeline). Its ``verdict`` output is identical, within tolerance or differs; it exits 3 when
the training differs and 2 when the data's digest or the code changed since (nothing is
trained then; ``allow-code-change=true`` goes on). It registers a version only with
``register=true`` (tagged ``mlcp.reproduces=<version>``).

It trains: it gets the larger of cv-train's and llm-train's resources and deadline, and the
label ``mlcp.io/role=training``, so the chart places it on the training nodes. It holds no
training semaphore (those are sized per pipeline, and this step serves every pipeline) and
asks for no GPU: a version trained on a GPU is reproduced with ``device=cpu`` here (at best
"within tolerance"), or refused with the default ``device=recorded``.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.stages import reproduce

from . import metrics
from .common import ROLE_LABEL, TRAINING_ROLE, step_workflow_template
from .settings import Settings
from .specs import PIPELINE_OUTPUT, RESULT_OUTPUT, VERSION_OUTPUT, Output, Resources, step_spec

VERDICT_OUTPUT = Output(
    "verdict",
    "verdict",
    f"{', '.join(reproduce.VERDICTS)}; empty when refused before training",
)
REGISTERED_OUTPUT = Output(
    "registered-version",
    "registered-version",
    "the version register=true wrote (tagged mlcp.reproduces); empty when none",
)

SPEC = step_spec(
    reproduce.REPRODUCE,
    name=reproduce.REPRODUCE.template_name,
    title=reproduce.REPRODUCE.title,
    description=reproduce.REPRODUCE.description,
    outputs=(VERSION_OUTPUT, VERDICT_OUTPUT, RESULT_OUTPUT, REGISTERED_OUTPUT, PIPELINE_OUTPUT),
    # it may train either pipeline: the larger of cv-train's and llm-train's
    resources=Resources("1", "4Gi", "4", "16Gi"),
    active_deadline_seconds=7200,
)
# The same step serves every pipeline: its metrics take the pipeline from the model's tag.
METRICS = metrics.step_metrics(metrics.output(PIPELINE_OUTPUT.name), SPEC.name)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(
        SPEC,
        settings=settings,
        labels={ROLE_LABEL: TRAINING_ROLE},
        step_metrics=METRICS,
    )
