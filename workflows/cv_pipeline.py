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

from .common import pipeline_workflow_template
from .settings import Settings
from .specs import CV_PIPELINE


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return pipeline_workflow_template(CV_PIPELINE)
