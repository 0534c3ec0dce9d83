"""cv-pipeline: reads no alias (the data set) and writes ``live`` (and ``previous``), through
``candidate`` -> ``staged`` -> ``evaluated`` -> ``benchmarked`` on the way.

The whole CV chain as ``templateRef`` steps: cv-train -> cv-deploy -> cv-evaluate ->
cv-perf-test -> promote (benchmarked -> live, requiring every CV gate). The steps pass each
other nothing but the model name and the alias names; a stage whose gate says no fails its
step, which fails the workflow, so nothing after it runs. ``promotion=rollout`` ends it with
cv-rollout instead of promote (an Argo ``when`` on each: the live traffic moves in steps at
the router, ``rollout-steps``, ``rollout-step-duration``, ``rollout-approval``)::

    argo submit --from workflowtemplate/cv-pipeline -p model-name=resnet18-digits
"""

from __future__ import annotations

from steps.cv.pipeline import CV

from . import cv_deploy, cv_evaluate, cv_perf_test, cv_rollout, cv_train, promote
from .common import pipeline_template

SPEC, template = pipeline_template(
    __name__, CV, (cv_train, cv_deploy, cv_evaluate, cv_perf_test), promote, cv_rollout
)
