"""llm-deploy: reads ``input-alias`` (default ``candidate``) and writes ``output-alias``
(default ``staged``), once vLLM's ``<model>-staged`` adapter slot serves the version.

One container step running ``mlcp llm deploy``: the base-fit check, the adapter placed on the
volume it shares with the vLLM server (PersistentVolumeClaim ``mlcp-vllm-adapters``, mounted
at ``/adapters``), a runtime LoRA load and a smoke completion.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from steps.llm import deploy

from .common import ADAPTER_MOUNT, adapter_volume, step_workflow_template
from .settings import Settings
from .specs import STAGE_OUTPUTS, Override, Resources, step_spec

SPEC = step_spec(
    deploy.STAGE,
    name="llm-deploy",
    title="LLM: deploy to vLLM's staged slot (candidate -> staged)",
    description=(
        "Checks input-alias's (candidate) adapter against the base vLLM serves, places it on "
        "the adapter volume vLLM reads, loads it into the <model>-staged slot at runtime, "
        "smoke-tests it and points output-alias (staged) at it."
    ),
    outputs=STAGE_OUTPUTS,
    resources=Resources("250m", "512Mi", "1", "2Gi"),
    active_deadline_seconds=1200,
    overrides={
        "adapter-dir": Override(
            ADAPTER_MOUNT,
            why="the template mounts the adapter volume it shares with the vLLM server there",
            description="folder shared with the vLLM server where adapters are placed "
            f"(the template mounts the adapter volume at {ADAPTER_MOUNT})",
        )
    },
)


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(SPEC, volumes=(adapter_volume(ADAPTER_MOUNT),))
