"""cv-deploy: reads ``input-alias`` (default ``candidate``) and writes ``output-alias``
(default ``staged``), once Triton's ``<model>-staged`` slot serves the version.

One container step running ``mlcp cv deploy``: ONNX export, the onnx-parity gate, the Triton
model repository entry, an explicit load and a smoke inference.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.cv import deploy

from .common import step_workflow_template
from .settings import Settings
from .specs import STAGE_OUTPUTS, Override, Resources, step_spec

SPEC = step_spec(
    deploy.STAGE,
    name="cv-deploy",
    title="CV: deploy to Triton's staged slot (candidate -> staged)",
    description=(
        "Exports input-alias (candidate) to ONNX, checks it against PyTorch (onnx-parity "
        "gate), writes it to the Triton model repository, loads <model>-staged, smoke-tests "
        "it and points output-alias (staged) at it."
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources("500m", "1Gi", "2", "3Gi"),
    active_deadline_seconds=1200,
    overrides={
        "backend": Override(
            "onnxruntime",
            why="the cluster runs the official Triton image, whose ONNX back end is "
            "onnxruntime (the local tritonserver has the python back end only)",
        )
    },
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(SPEC)
