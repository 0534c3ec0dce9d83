"""cv-deploy: reads ``input-alias`` (default ``candidate``) and writes ``output-alias``
(default ``staged``), once Triton's ``<model>-staged`` slot serves the version.

One container step running ``mlcp cv deploy``: ONNX export, the onnx-parity gate, the Triton
model repository entry, an explicit load and a smoke inference.
"""

from __future__ import annotations

from steps.cv import deploy

from .common import stage_template
from .specs import Override

OVERRIDES = {
    "backend": Override(
        "onnxruntime",
        why="the cluster runs the official Triton image, whose ONNX back end is "
        "onnxruntime (the local tritonserver has the python back end only)",
    )
}
SPEC, template = stage_template(
    __name__, deploy.STAGE, ("500m", "1Gi", "2", "3Gi"), deadline=1200, overrides=OVERRIDES
)
