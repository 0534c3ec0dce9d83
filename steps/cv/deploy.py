"""``mlcp cv deploy``: reads ``candidate``, serves it in Triton's ``<model>-staged`` slot, writes
``staged``.

The version is exported to ONNX with a dynamic batch dimension, checked against PyTorch on
held-out images (the tolerance is a recorded gate), written to the Triton model repository
as ``<model>-staged/<version>/`` (local folder or ``s3://``), loaded with explicit model
control on every Triton replica (``$MLCP_TRITON_REPLICAS``) and smoke-tested, then pinned as
the slot's desired state (what a restarted replica loads). On any failure the slot keeps
serving what it served before, its pin is unchanged, and no alias moves.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..base.environment import MLCP_TRITON_REPOSITORY
from ..base.errors import BadInput, MlcpError
from ..decisions import gates
from ..serving import triton
from ..serving.triton import BACKENDS
from ..spec.contract import CANDIDATE, STAGED
from ..spec.declare import Config, Stage, alias_option, option
from ..stages import runner
from ..stages.stage import Reporter
from . import IMAGE_SIZE_TAG, NUM_CLASSES_TAG, ONNX_URI_TAG, PIPELINE, TRITON_BACKEND_TAG
from . import data as cvdata

CHECK_SAMPLES = 64


ONNX_PARITY = "onnx-parity"
GATES = (ONNX_PARITY,)


@dataclass(kw_only=True)
class DeployConfig(Config):
    input_alias: str = alias_option(CANDIDATE, reads=True)
    output_alias: str = alias_option(STAGED, reads=False)
    backend: str = option(
        "python",
        help="Triton backend: onnxruntime (the official Triton image) or python",
        choices=BACKENDS,
        noun="Triton backend",
    )
    repository: str | None = option(
        None,
        help="Triton model repository, s3://... or a folder (empty: $MLCP_TRITON_REPOSITORY)",
    )
    triton_url: str | None = triton.url_option()
    tolerance: float = option(
        1e-3,
        help="gate onnx-parity: the largest |ONNX - PyTorch| allowed on held-out images",
        above=0,
    )
    max_batch_size: int = option(
        64, help="Triton max_batch_size (dynamic batching)", min=1, max=4096
    )


report = Reporter(PIPELINE, "deploy")


def export_onnx(model, image_size: int, path: Path) -> None:
    import torch

    example = torch.zeros(2, 3, image_size, image_size)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
    )


def max_abs_diff(model, onnx_path: Path, x) -> float:
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = session.run(["logits"], {"input": x})[0]
    return float(np.max(np.abs(expected - got)))


def load_version(model_name: str, version: str):
    import mlflow

    model = mlflow.pytorch.load_model(f"models:/{model_name}/{version}", map_location="cpu")
    model.eval()
    return model


def require_slot(server, slot: str, version: str, fix: str) -> str:
    """``slot``, checked to serve exactly ``version``; MlcpError naming what it serves
    instead, and ``fix``."""
    served = server.served_versions(slot)
    if served != [version]:
        shown = ", ".join(f"v{v}" for v in served) or "nothing"
        raise MlcpError(f"Triton slot {slot} serves {shown}, not v{version}: {fix}")
    return slot


class Deploy(runner.Deployer):
    report = report
    data = cvdata

    def connect(self, t):
        t.extra["repository"] = t.cfg.repository or MLCP_TRITON_REPOSITORY.get()
        if not t.extra["repository"]:
            raise BadInput("no --repository given and MLCP_TRITON_REPOSITORY is not set")
        server = triton.Triton(t.cfg.triton_url)
        server.require_live()
        return server

    def run_name(self, t):
        return {"v": t.version, "backend": t.cfg.backend}

    def params(self, t):
        return {
            "source_alias": t.cfg.input_alias,
            "backend": t.cfg.backend,
            "slot": t.slot,
            "repository": t.extra["repository"],
            "tolerance": t.cfg.tolerance,
        }

    def export(self, t):
        import mlflow

        from .serving import TRITON

        cfg, model, version, slot = t.cfg, t.model, t.version, t.slot
        image_size = int(t.tags.get(IMAGE_SIZE_TAG, "32"))
        num_classes = int(t.tags.get(NUM_CLASSES_TAG, "10"))
        x = cvdata.preprocess(t.data.images["val"][:CHECK_SAMPLES], image_size)
        report(f"exporting {model} v{version} to ONNX")
        module = load_version(model, version)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            export_onnx(module, image_size, onnx_path)
            diff = max_abs_diff(module, onnx_path, x)
            mlflow.log_metric("onnx_max_abs_diff", diff)
            gate = gates.Gate(ONNX_PARITY, "onnx_max_abs_diff", "<=", cfg.tolerance)
            report.judge([(gate, diff)], model=model, version=version, evidence={"samples": len(x)})
            mlflow.log_artifact(str(onnx_path), "onnx")
            onnx_bytes = onnx_path.read_bytes()
        run_id = mlflow.active_run().info.run_id
        t.client.set_model_version_tag(
            model, version, ONNX_URI_TAG, f"runs:/{run_id}/onnx/model.onnx"
        )
        t.client.set_model_version_tag(model, version, TRITON_BACKEND_TAG, cfg.backend)
        repository = t.extra["repository"]
        where = triton.write_entry(
            repository,
            slot,
            version,
            onnx_bytes,
            backend=cfg.backend,
            image_size=image_size,
            num_classes=num_classes,
            max_batch_size=cfg.max_batch_size,
        )
        replicas = len(triton.Fleet(cfg.triton_url).members)
        on = f" on {replicas} replicas" if replicas > 1 else ""
        report(f"wrote {where}; loading {slot} v{version}{on}")

        def smoke(server) -> None:
            logits, answered = server.infer(slot, x[:4])
            if logits.shape != (4, num_classes) or answered != version:
                raise MlcpError(
                    f"smoke inference on {slot}: got shape {logits.shape} from "
                    f"version {answered}, expected (4, {num_classes}) from v{version}"
                )

        # Triton restores the slot itself when the load or the smoke test fails
        TRITON.switch(model, slot, version, smoke, repository=repository, url=cfg.triton_url)
        report(f"{slot} serves v{version}")
        return runner.Measured(
            metrics={"smoke_ok": 1.0},
            reason=f"deployed to Triton slot {slot}",
            result={"version": version, "slot": slot, "onnx_max_abs_diff": diff},
        )


STAGE = Stage(
    PIPELINE,
    "deploy",
    "export ONNX, load into Triton's staged slot",
    DeployConfig,
    Deploy(),
    GATES,
    title="CV: deploy to Triton's staged slot (candidate -> staged)",
    description=(
        "Exports input-alias (candidate) to ONNX, checks it against PyTorch (onnx-parity "
        "gate), writes it to the Triton model repository, loads <model>-staged, smoke-tests "
        "it and points output-alias (staged) at it."
    ),
)
