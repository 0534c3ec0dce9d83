"""``mlcp tabular deploy``: reads ``candidate``, serves it in MLServer's ``<model>-staged``
slot, writes ``staged``.

The version's MLflow model folder is recorded as an artifact of the deploy run (what the
back end loads from on promote), copied into the slot, pinned as the slot's desired state
and loaded on every MLServer replica, then smoke-tested on the validation rows: the answer
must come from that version and match the model's own predictions (the ``serving-parity``
gate). On any failure the slot goes back to what it served before and no alias moves.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlcp import (
    Config,
    Gate,
    MlcpError,
    Reporter,
    Stage,
    alias_option,
    contract,
    option,
    runner,
)

from . import MODEL_DIR_TAG, PIPELINE, server
from . import data as tabdata

SERVING_PARITY = "serving-parity"
GATES = (SERVING_PARITY,)


@dataclass(kw_only=True)
class DeployConfig(Config):
    input_alias: str = alias_option(contract.CANDIDATE, reads=True)
    output_alias: str = alias_option(contract.STAGED, reads=False)
    min_parity: float = option(
        1.0,
        help="gate serving-parity: the lowest share of validation rows on which every "
        "replica's answer matches the model's own",
        min=0,
        max=1,
    )


class Mismatch(MlcpError):
    """A replica's answers differ from the model's own: the switch is undone."""


def every_replica(t: runner.Target) -> list:
    replicas = server.fleet()
    for replica in replicas:
        replica.require_live()
    return replicas


class Deploy(runner.Deployer):
    report = Reporter(PIPELINE, "deploy")
    data = tabdata
    connect = staticmethod(every_replica)

    def run_name(self, t):
        return {"v": t.version, "slot": "staged"}

    def params(self, t):
        return {"source_alias": t.cfg.input_alias, "slot": t.slot}

    def export(self, t):
        """Record the version's model folder, place it in the slot, switch every replica
        (MLServer's back end restores the slot when a smoke test refuses) and judge parity."""
        import mlflow
        import numpy as np

        from .serving import MLSERVER

        slot, version = t.slot, t.version
        x_val, _ = t.data.part("val")
        body = tabdata.v2_request(t.data.features, x_val)
        with tempfile.TemporaryDirectory() as tmp:
            uri = f"models:/{t.model}/{version}"
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
            mlflow.log_artifacts(str(local), "mlserver/model")
            expected = np.asarray(mlflow.pyfunc.load_model(str(local)).predict(x_val))
            server.place(server.repository(), slot, version, local)
        agreement = []

        def smoke(replica):
            got, answered = replica.infer(slot, body)
            if answered != version:
                raise MlcpError(
                    f"smoke inference on {slot} answered from v{answered}, not v{version}"
                )
            agreement.append(float((np.asarray(got).reshape(-1) == expected.reshape(-1)).mean()))
            if agreement[-1] < t.cfg.min_parity:  # restored; the gate below records why
                raise Mismatch(f"{replica.url} disagrees with the model on {slot}")

        try:
            MLSERVER.switch(t.model, slot, version, smoke)
        except Mismatch as exc:
            self.report(str(exc))
        parity = min(agreement)
        if parity >= t.cfg.min_parity:  # what promote loads from: only once it served right
            run_id = mlflow.active_run().info.run_id
            t.client.set_model_version_tag(
                t.model, version, MODEL_DIR_TAG, f"runs:/{run_id}/mlserver/model"
            )
        return runner.Measured(
            metrics={"serving_parity": parity},
            checks=[(Gate(SERVING_PARITY, "serving_parity", ">=", t.cfg.min_parity), parity)],
            evidence={"rows": len(x_val)},
            reason=f"deployed to MLServer slot {slot}",
            result={"version": version, "slot": slot, "serving_parity": parity},
        )


STAGE = Stage(
    PIPELINE,
    "deploy",
    "load into MLServer's staged slot",
    DeployConfig,
    Deploy(),
    GATES,
    title="Tabular: deploy to MLServer's staged slot (candidate -> staged)",
    description=(
        "Copies input-alias (candidate) into MLServer's <model>-staged slot, pins and loads "
        "it on every replica, checks its answers against the model's own (serving-parity "
        "gate) and points output-alias (staged) at it."
    ),
)
