"""cv-deploy: reads ``input-alias`` (default ``candidate``) and writes ``output-alias``
(default ``staged``), once Triton's ``<model>-staged`` slot serves the version.

One container step running ``mlcp cv deploy``: ONNX export, the onnx-parity gate, the Triton
model repository entry, an explicit load and a smoke inference.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from .common import step_workflow_template
from .settings import Settings
from .specs import CV_DEPLOY


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(CV_DEPLOY)
