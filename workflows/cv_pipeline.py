"""cv-pipeline: reads no alias (the data set) and writes ``live`` (and ``previous``), through
``candidate`` -> ``staged`` -> ``evaluated`` -> ``benchmarked`` on the way.

The whole CV chain as ``templateRef`` steps: cv-train -> cv-deploy -> cv-evaluate ->
cv-perf-test -> promote (benchmarked -> live, requiring every CV gate). The steps pass each
other nothing but the model name and the alias names; a stage whose gate says no fails its
step, which fails the workflow, so nothing after it runs::

    argo submit --from workflowtemplate/cv-pipeline -p model-name=resnet18-digits
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.cv.pipeline import CV

from . import cv_deploy, cv_evaluate, cv_perf_test, cv_train, promote
from .common import pipeline_workflow_template
from .settings import Settings
from .specs import PipelineSpec

SPEC = PipelineSpec.of(
    CV,
    {
        "train": cv_train.SPEC,
        "deploy": cv_deploy.SPEC,
        "evaluate": cv_evaluate.SPEC,
        "perf-test": cv_perf_test.SPEC,
    },
    promote.SPEC,
    name="cv-pipeline",
    title="CV: train -> deploy -> evaluate -> perf-test -> promote",
    description=(
        "The whole CV chain, each stage its own WorkflowTemplate (templateRef), sharing "
        "nothing but the model name and the aliases. A failed gate fails its step and stops "
        "the chain; promote to live requires every CV gate's passing decision."
    ),
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return pipeline_workflow_template(SPEC)
