"""The cv pipeline's serving back end: Triton Inference Server (``mlcp.serving=triton``).

Registered as the entry point ``triton`` in the group ``mlcp.serving`` (pyproject.toml);
the core finds it through :mod:`steps.serving.backend` and never imports this module.
:meth:`TritonBackend.load_live` writes the version's ONNX export (recorded by ``mlcp cv
deploy`` as the version tag ``mlcp.onnx_uri``) into the model repository under the slot
``<model>-live`` and loads exactly that version, so a restarted Triton serves it too.
Light at import time, and no ``mlflow``: the export is downloaded through the caller's client
(MLflow's REST API on the promote path).
"""

from __future__ import annotations

import os

from ..contract import live_slot, show_version
from ..errors import BadInput
from ..serving import triton
from ..serving.backend import Volume
from ..stage import say
from . import IMAGE_SIZE_TAG, NUM_CLASSES_TAG, ONNX_URI_TAG, TRITON_BACKEND_TAG

# What a version that predates a tag is read as.
DEFAULT_TRITON_BACKEND = "python"
DEFAULT_IMAGE_SIZE = 32
DEFAULT_NUM_CLASSES = 10


_say = say("serving")


class TritonBackend:
    """Triton's ``<model>-live`` model, one version at a time (explicit model control)."""

    name = "triton"
    # The model repository is reached through $MLCP_TRITON_REPOSITORY (a local folder or an
    # s3:// prefix): in the cluster it is S3, so no volume is needed.
    volumes: tuple[Volume, ...] = ()

    def load_live(self, client, model: str, version: str) -> None:
        import tempfile

        from ..rest import download

        version = str(version)
        tags = client.get_model_version(model, version).tags
        onnx_uri = tags.get(ONNX_URI_TAG)
        if not onnx_uri:
            raise BadInput(
                f"{model} {show_version(version)} was never deployed (no ONNX export "
                f"recorded): run `mlcp cv deploy` on it before it can go live"
            )
        repository = os.environ.get("MLCP_TRITON_REPOSITORY")
        if not repository:
            raise BadInput("MLCP_TRITON_REPOSITORY is not set: cannot place the live version")
        server = triton.Triton()
        server.require_live()
        slot = live_slot(model)
        if server.served_versions(slot) == [version]:
            return
        with tempfile.TemporaryDirectory() as tmp:  # through the caller's client: REST or mlflow
            onnx_bytes = download(client, onnx_uri, tmp).read_bytes()
        triton.write_entry(
            repository,
            slot,
            version,
            onnx_bytes,
            backend=tags.get(TRITON_BACKEND_TAG, DEFAULT_TRITON_BACKEND),
            image_size=int(tags.get(IMAGE_SIZE_TAG, DEFAULT_IMAGE_SIZE)),
            num_classes=int(tags.get(NUM_CLASSES_TAG, DEFAULT_NUM_CLASSES)),
        )
        server.load(slot, version)
        _say(f"Triton slot {slot} now serves {show_version(version)}")

    def served_version(self, model: str, slot: str) -> str | None:
        """The version Triton answers with on ``slot`` (the highest ready one: during a
        switch both are ready and Triton routes to the higher); None when none is ready."""
        versions = triton.Triton().served_versions(slot)
        return versions[-1] if versions else None


TRITON = TritonBackend()
