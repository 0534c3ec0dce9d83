"""The llm pipeline's serving back end: vLLM with runtime LoRA adapters (``mlcp.serving=vllm``).

Registered as the entry point ``vllm`` in the group ``mlcp.serving`` (pyproject.toml); the
core finds it through :mod:`steps.serving.backend` and never imports this module.
:meth:`VLLMBackend.load_live` places the version's adapter on the adapter volume (after the
same base-fit check as ``mlcp llm deploy``) and points vLLM's ``<model>-live`` adapter slot
at it in place. Light at import time: the deploy stage is imported when a version is loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..contract import live_slot, show_version
from ..errors import BadInput, MlcpError
from ..serving.backend import Volume
from ..stage import say
from . import ADAPTER_PATH_TAG, PROMPT_TEMPLATE_TAG, SMOKE_PROMPT_TAG

# The ReadWriteMany claim the steps share with the vLLM server: a step places adapters on it
# and vLLM loads them from it.
ADAPTER_VOLUME = Volume(name="adapters", claim="mlcp-vllm-adapters", mount_path="/adapters")


_say = say("serving")


class VLLMBackend:
    """vLLM's ``<model>-live`` adapter slot, repointed in place at one version's folder."""

    name = "vllm"
    volumes: tuple[Volume, ...] = (ADAPTER_VOLUME,)

    def load_live(self, client, model: str, version: str) -> None:
        """Point the live slot at the version, after the same base-fit check as deploy;
        nothing to do when it already serves that version's folder."""
        from ..serving import vllm
        from . import data as llmdata
        from . import deploy

        version = str(version)
        tags = dict(client.get_model_version(model, version).tags)
        if not tags.get(ADAPTER_PATH_TAG):
            raise BadInput(
                f"{model} {show_version(version)} was never deployed (no adapter placed for "
                f"vLLM): run `mlcp llm deploy` on it before it can go live"
            )
        server = vllm.VLLM()
        server.require_live()
        slot = live_slot(model)
        root = deploy.adapter_root()
        wanted = deploy.server_path(root, model, version)
        if server.adapters().get(slot, {}).get("path") == wanted:
            return
        path, _, _ = deploy.fetch_checked(server, model, version, tags, root, client)
        prompt = llmdata.format_prompt(
            tags.get(SMOKE_PROMPT_TAG, deploy.SMOKE_PROMPT),
            tags.get(PROMPT_TEMPLATE_TAG, llmdata.PROMPT_TEMPLATE),
        )
        deploy.serve(server, slot, path, prompt)
        _say(f"vLLM slot {slot} now serves {show_version(version)} ({path})")

    def served_version(self, model: str, slot: str) -> str | None:
        """The version whose folder (``<adapters>/<model>/<version>``) the slot points at;
        None when vLLM has no such slot."""
        from ..serving import vllm

        server = vllm.VLLM()
        path = server.adapters().get(slot, {}).get("path")
        if not path:
            return None
        folder = Path(path)
        if folder.parent.name != model or not folder.name.isdigit():
            raise MlcpError(
                f"vLLM at {server.url} serves {slot} from {path}, which is not a version "
                f"folder of {model} (<adapters>/{model}/<version>)"
            )
        return folder.name


VLLM = VLLMBackend()
