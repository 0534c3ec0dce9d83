"""The llm pipeline's serving back end: vLLM with runtime LoRA adapters (``mlcp.serving=vllm``).

Registered as the entry point ``vllm`` in the group ``mlcp.serving`` (pyproject.toml); the
core finds it through :mod:`steps.registry.backends` and never imports this module.
:meth:`VLLMBackend.load_live` places the version's adapter on the adapter volume (after the
same base-fit check as ``mlcp llm deploy``), points the adapter slot (``<model>-live`` unless
told otherwise) at it in place on every replica, and records it in the manifest that each
vLLM server loads again when it starts; :meth:`VLLMBackend.served` says what every replica
serves. Light at import time: the deploy stage is imported when a version is loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..base.errors import BadInput, MlcpError
from ..registry.backends import Served, Volume
from ..spec.contract import live_slot, show_version
from ..stages.stage import say
from . import ADAPTER_PATH_TAG, PROMPT_TEMPLATE_TAG, SMOKE_PROMPT_TAG

# The ReadWriteMany claim the steps share with the vLLM server: a step places adapters on it
# and vLLM loads them from it.
ADAPTER_VOLUME = Volume(name="adapters", claim="mlcp-vllm-adapters", mount_path="/adapters")


_say = say("serving")


class VLLMBackend:
    """vLLM's adapter slots (``<model>-live``, ``<model>-staged``), repointed in place at one
    version's folder on every replica, and recorded in the adapter volume's manifest."""

    name = "vllm"
    volumes: tuple[Volume, ...] = (ADAPTER_VOLUME,)
    # The router reads the model from the OpenAI JSON body and rewrites it
    # (steps/registry/router.py)
    router_protocol = "openai"

    def router_upstreams(self) -> list[str]:
        """Where the router sends a slot's requests: each entry of the replicas variable as
        it is written (a headless Service's name, which Envoy resolves to every pod), else
        the one vLLM URL."""
        from ..base import settings
        from ..base.environment import MLCP_VLLM_REPLICAS
        from ..serving import vllm

        listed = MLCP_VLLM_REPLICAS.raw
        if not listed:
            return [vllm.replica_urls()[0]]
        entries = (e.strip() for e in listed.split(","))
        return [
            settings.server_url(e, vllm.REPLICAS_VAR, "vLLM", vllm.REPLICAS_VAR)
            for e in entries
            if e
        ]

    def load_live(self, client, model: str, version: str, slot: str | None = None) -> None:
        """Point ``slot`` (default ``<model>-live``) at the version on every replica, after
        the same base-fit check as deploy, and record it in the manifest; replicas that
        already serve that version's folder are left as they are."""
        from ..serving import vllm
        from . import data as llmdata
        from . import deploy

        version = str(version)
        slot = vllm.check_slot(slot or live_slot(model))
        tags = dict(client.get_model_version(model, version).tags)
        if not tags.get(ADAPTER_PATH_TAG):
            raise BadInput(
                f"{model} {show_version(version)} was never deployed (no adapter placed for "
                f"vLLM): run `mlcp llm deploy` on it before it can go live"
            )
        servers = vllm.replicas()
        root = deploy.adapter_root()
        wanted = deploy.server_path(root, model, version)
        if all(s.adapters().get(slot, {}).get("path") == wanted for s in servers):
            vllm.record_slot(root, slot, wanted, model, version)  # a restart must keep it
            return
        path, _, _ = deploy.fetch_checked(servers[0], model, version, tags, root, client)
        prompt = llmdata.format_prompt(
            tags.get(SMOKE_PROMPT_TAG, deploy.SMOKE_PROMPT),
            tags.get(PROMPT_TEMPLATE_TAG, llmdata.PROMPT_TEMPLATE),
        )
        deploy.serve_everywhere(
            servers, slot, path, deploy.Smoke(slot, prompt), root=root, model=model, version=version
        )
        _say(f"vLLM slot {slot} now serves {show_version(version)} ({path}) on {_count(servers)}")

    def stack_base(self, home: Path):
        """The base model a local vLLM of ``mlcp stack up`` serves: this pipeline's
        (:func:`steps.llm.data.serving_base`, built in ``home`` when not given)."""
        from . import data as llmdata

        return llmdata.serving_base(home)

    def switch(
        self, model: str, slot: str, version: str, smoke=None, *, root=None, url=None
    ) -> None:
        """Point ``slot`` on every replica (``url``'s, else the configured ones) at the
        version's adapter folder, already placed under ``root`` (the adapter volume), run
        ``smoke`` on each, then record it in the manifest; on failure every replica is
        pointed back at what it served (steps/llm/deploy.py's ``serve_everywhere``)."""
        from ..serving import vllm
        from . import deploy

        version = str(version)
        root = root or deploy.adapter_root()
        path = deploy.server_path(root, model, version)
        deploy.serve_everywhere(
            vllm.replicas(url), slot, path, smoke, root=root, model=model, version=version
        )

    def served(self, model: str, slot: str) -> list[Served]:
        """Per replica, the version whose folder (``<adapters>/<model>/<version>``) the slot
        points at; None when the replica has no such slot; an error when it cannot be asked
        or serves a folder that is no version of the model."""
        from ..serving import vllm

        found = []
        for server in vllm.replicas():
            try:
                path = server.adapters().get(slot, {}).get("path")
            except MlcpError as exc:
                found.append(Served(server.url, None, str(exc)))
                continue
            folder = Path(path) if path else None
            if folder is None:
                found.append(Served(server.url, None))
            elif folder.parent.name != model or not folder.name.isdigit():
                found.append(
                    Served(
                        server.url,
                        None,
                        f"serves {slot} from {path}, which is not a version folder of {model} "
                        f"(<adapters>/{model}/<version>)",
                    )
                )
            else:
                found.append(Served(server.url, folder.name))
        return found


def _count(servers) -> str:
    return servers[0].url if len(servers) == 1 else f"all {len(servers)} replicas"


VLLM = VLLMBackend()
