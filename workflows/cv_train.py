"""cv-train: reads no alias (the versioned image set, ``data``) and writes ``output-alias``
(default ``candidate``), only when the min-val-accuracy gate passes.

One container step running ``mlcp cv train``, as ``mlcp cv chain`` runs it locally. GPUs are
a build setting (``MLCP_CV_TRAIN_GPUS``, default 0: workflows/settings.py).
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.cv import train

from .common import step_workflow_template
from .settings import Settings
from .specs import STAGE_OUTPUTS, Resources, step_spec

SPEC = step_spec(
    train.STAGE,
    name="cv-train",
    title="CV: train ResNet-18 (writes candidate)",
    description=(
        "Trains ResNet-18 on the versioned image set, registers the version, records the "
        "min-val-accuracy gate and points output-alias (candidate) at it only on a pass."
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources("1", "2Gi", "2", "4Gi"),
    active_deadline_seconds=3600,
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    settings = settings or Settings()
    return step_workflow_template(SPEC, gpus=settings.cv_train_gpus)
