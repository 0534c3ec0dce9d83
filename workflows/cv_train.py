"""cv-train: reads no alias (the versioned image set, ``data``) and writes ``output-alias``
(default ``candidate``), only when the min-val-accuracy gate passes.

One container step running ``mlcp cv train``, as ``mlcp cv chain`` runs it locally. GPUs are
a build setting (``MLCP_CV_TRAIN_GPUS``, default 0: workflows/settings.py).
"""

from __future__ import annotations

from steps.cv import train

from .common import stage_template

SPEC, template = stage_template(
    __name__,
    train.STAGE,
    ("1", "2Gi", "2", "4Gi"),
    deadline=3600,
    gpus="cv_train_gpus",
    training=True,
)
