"""Serving follows the ``live`` alias.

A registered model tagged ``mlcp.serving`` names the server that carries its live traffic.
Before ``promote`` (or ``rollback``) moves ``live``, :func:`follow_live` loads the version
into the live slot (Triton model ``<model>-live``, vLLM adapter ``<model>-live``); if that
fails, the alias does not move, so the registry never names a live version that the server
cannot serve. A recorded no-op promotion re-loads the slot when it does not serve the live
version (after a server restart, say). Models without the tag are left alone.
"""

from __future__ import annotations

import os
import sys

from ..contract import live_slot
from ..errors import BadInput


def _say(message: str) -> None:
    print(f"[serving] {message}", file=sys.stderr, flush=True)


def follow_live(client, model: str, version: str, serving: str | None) -> None:
    if not serving:
        return
    if serving == "triton":
        _triton(client, model, str(version))
        return
    if serving == "vllm":
        _vllm(client, model, str(version))
        return
    raise BadInput(f"model {model!r} is tagged mlcp.serving={serving!r}, which mlcp cannot load")


def _triton(client, model: str, version: str) -> None:
    import mlflow

    from . import triton

    tags = client.get_model_version(model, version).tags
    onnx_uri = tags.get("mlcp.onnx_uri")
    if not onnx_uri:
        raise BadInput(
            f"{model} v{version} was never deployed (no ONNX export recorded): "
            f"run `mlcp cv deploy` on it before it can go live"
        )
    repository = os.environ.get("MLCP_TRITON_REPOSITORY")
    if not repository:
        raise BadInput("MLCP_TRITON_REPOSITORY is not set: cannot place the live version")
    server = triton.Triton()
    server.require_live()
    slot = f"{model}-live"
    if server.served_versions(slot) == [version]:
        return
    path = mlflow.artifacts.download_artifacts(onnx_uri)
    with open(path, "rb") as handle:
        onnx_bytes = handle.read()
    triton.write_entry(
        repository,
        slot,
        version,
        onnx_bytes,
        backend=tags.get("mlcp.triton_backend", "python"),
        image_size=int(tags.get("mlcp.image_size", "32")),
        num_classes=int(tags.get("mlcp.num_classes", "10")),
    )
    server.load(slot, version)
    _say(f"Triton slot {slot} now serves v{version}")


def _vllm(client, model: str, version: str) -> None:
    """Point vLLM's ``<model>-live`` adapter slot at the version (in place), after the same
    base-fit check as deploy; nothing to do when it already serves that version's folder."""
    from ..llm import data as llmdata
    from ..llm import deploy
    from . import vllm

    tags = dict(client.get_model_version(model, version).tags)
    if not tags.get("mlcp.adapter_path"):
        raise BadInput(
            f"{model} v{version} was never deployed (no adapter placed for vLLM): "
            f"run `mlcp llm deploy` on it before it can go live"
        )
    server = vllm.VLLM()
    server.require_live()
    slot = live_slot(model)
    root = deploy.adapter_root()
    wanted = deploy.server_path(root, model, version)
    if server.adapters().get(slot, {}).get("path") == wanted:
        return
    path, _, _ = deploy.fetch_checked(server, model, version, tags, root)
    prompt = llmdata.format_prompt(
        tags.get("mlcp.smoke_prompt", deploy.SMOKE_PROMPT),
        tags.get("mlcp.prompt_template", llmdata.PROMPT_TEMPLATE),
    )
    deploy.serve(server, slot, path, prompt)
    _say(f"vLLM slot {slot} now serves v{version} ({path})")
