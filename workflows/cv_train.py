"""cv-train: reads no alias (the versioned image set, ``data``) and writes ``output-alias``
(default ``candidate``), only when the min-val-accuracy gate passes.

One container step running ``mlcp cv train``, as ``mlcp cv chain`` runs it locally. GPUs are
a build setting (``MLCP_CV_TRAIN_GPUS``, default 0: workflows/settings.py).
"""

from __future__ import annotations

import dataclasses

from hera.workflows import WorkflowTemplate

from .common import step_workflow_template
from .settings import Settings
from .specs import CV_TRAIN


def template(settings: Settings | None = None) -> WorkflowTemplate:
    settings = settings or Settings()
    resources = dataclasses.replace(CV_TRAIN.resources, gpus=settings.cv_train_gpus)
    return step_workflow_template(dataclasses.replace(CV_TRAIN, resources=resources))
