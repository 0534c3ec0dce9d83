"""llm-deploy: reads ``input-alias`` (default ``candidate``) and writes ``output-alias``
(default ``staged``), once vLLM's ``<model>-staged`` adapter slot serves the version.

One container step running ``mlcp llm deploy``: the base-fit check, the adapter placed on the
volume it shares with the vLLM server (PersistentVolumeClaim ``mlcp-vllm-adapters``, mounted
at ``/adapters``), a runtime LoRA load and a smoke completion.
"""

from __future__ import annotations

from hera.workflows import WorkflowTemplate

from .common import adapter_volume, step_workflow_template
from .settings import Settings
from .specs import ADAPTER_MOUNT, LLM_DEPLOY


def template(settings: Settings | None = None) -> WorkflowTemplate:
    return step_workflow_template(LLM_DEPLOY, volumes=(adapter_volume(ADAPTER_MOUNT),))
