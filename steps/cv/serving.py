"""The cv pipeline's serving back end: Triton Inference Server (``mlcp.serving=triton``).

Registered as the entry point ``triton`` in the group ``mlcp.serving`` (pyproject.toml);
the core finds it through :mod:`steps.registry.backends` and never imports this module.
:meth:`TritonBackend.load_live` writes the version's ONNX export (recorded by ``mlcp cv
deploy`` as the version tag ``mlcp.onnx_uri``) into the model repository under the slot
``<model>-live``, loads exactly that version on every replica, and pins it in the slot's
config, so a restarted Triton serves it too.
Light at import time, and no ``mlflow``: the export is downloaded through the caller's client
(MLflow's REST API on the promote path).
"""

from __future__ import annotations

from ..base.environment import MLCP_TRITON_REPOSITORY
from ..base.errors import BadInput
from ..registry.backends import Served, Volume
from ..serving import triton
from ..spec.contract import live_slot, show_version
from ..stages.stage import say
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
    # The router splits Triton's HTTP paths by slot (steps/registry/router.py)
    router_protocol = "v2"

    def router_upstreams(self) -> list[str]:
        """Where the router sends a slot's requests: each entry of the replicas variable as
        it is written (a headless Service's name, which Envoy resolves to every pod and keeps
        resolving), else the one Triton URL."""
        return triton.listed_addresses() or [triton.Triton().url]

    def load_live(self, client, model: str, version: str, slot: str | None = None) -> None:
        """Write the version's entry into ``slot`` (default ``<model>-live``), load it on every
        replica (:class:`~steps.serving.triton.Fleet`), then pin it in the slot's config so
        a restarted replica serves it too. A no-op where every replica serves it already and
        the pin names it."""
        import tempfile

        from ..base.rest import download

        version = str(version)
        tags = client.get_model_version(model, version).tags
        onnx_uri = tags.get(ONNX_URI_TAG)
        if not onnx_uri:
            raise BadInput(
                f"{model} {show_version(version)} was never deployed (no ONNX export "
                f"recorded): run `mlcp cv deploy` on it before it can go live"
            )
        repository = MLCP_TRITON_REPOSITORY.get()
        if not repository:
            raise BadInput("MLCP_TRITON_REPOSITORY is not set: cannot place the live version")
        slot = slot or live_slot(model)
        fleet = triton.Fleet()
        if all(s.version == version and not s.error for s in fleet.served(slot)):
            if triton.pinned(repository, slot) != version:
                triton.pin(repository, slot, version)
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
        fleet.load(slot, version)
        triton.pin(repository, slot, version)
        replicas = len(fleet.members)
        on = f" on {replicas} replicas" if replicas > 1 else ""
        _say(f"Triton slot {slot} now serves {show_version(version)}{on}")

    def switch(
        self, model: str, slot: str, version: str, smoke=None, *, repository=None, url=None
    ) -> None:
        """Load ``version`` (its entry already written in the repository: ``repository``,
        else ``$MLCP_TRITON_REPOSITORY``) into ``slot`` on every replica of the fleet
        (``url``'s, else the configured one), ``smoke`` each replica, then pin it. On failure
        every replica loads the version the slot was pinned to (else served) before."""
        version = str(version)
        repository = repository or MLCP_TRITON_REPOSITORY.get()
        if not repository:
            raise BadInput("MLCP_TRITON_REPOSITORY is not set: cannot switch a slot")
        fleet = triton.Fleet(url)
        before = triton.pinned(repository, slot)
        if before is None:  # an older entry without a pin: what the first replica serves
            before = fleet.served(slot)[0].version
        try:
            fleet.load(slot, version)
            for _, server, _ in fleet.members if smoke is not None else ():
                smoke(server)
        except Exception:
            if before and before != version:
                _say(f"restoring {slot} to {show_version(before)}")
                try:
                    fleet.load(slot, before)
                except Exception as exc:  # report the first failure, not this one
                    _say(f"could not restore {slot}: {exc}")
            raise
        # every replica serves it: from now on a restarted replica loads it too
        triton.pin(repository, slot, version)

    def served(self, model: str, slot: str) -> list[Served]:
        """What each replica serves on ``slot``: the highest ready version (during a switch
        both are ready and Triton answers with the higher), or why it could not be asked."""
        return triton.Fleet().served(slot)


TRITON = TritonBackend()
