"""llm-deploy: reads ``input-alias`` (default ``candidate``) and writes ``output-alias``
(default ``staged``), once vLLM's ``<model>-staged`` adapter slot serves the version.

One container step running ``mlcp llm deploy``: the base-fit check, the adapter placed on the
volume it shares with the vLLM server (PersistentVolumeClaim ``mlcp-vllm-adapters``, mounted
at ``/adapters``), a runtime LoRA load and a smoke completion.
"""

from __future__ import annotations

from steps.llm import deploy
from steps.llm.serving import VLLM

from .common import existing_volume, stage_template
from .specs import Override

ADAPTER_MOUNT = VLLM.volumes[0].mount_path  # the adapter volume vLLM reads
OVERRIDES = {
    "adapter-dir": Override(
        ADAPTER_MOUNT,
        why="the template mounts the adapter volume it shares with the vLLM server there",
        description="folder shared with the vLLM server where adapters are placed "
        f"(the template mounts the adapter volume at {ADAPTER_MOUNT})",
    )
}
SPEC, template = stage_template(
    __name__,
    deploy.STAGE,
    ("250m", "512Mi", "1", "2Gi"),
    deadline=1200,
    overrides=OVERRIDES,
    volumes=tuple(existing_volume(v) for v in VLLM.volumes),
)
