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
    data_source,
    option,
    resolve_input,
    tracking,
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


report = Reporter(PIPELINE, "deploy")


class Mismatch(MlcpError):
    """A replica's answers differ from the model's own: the switch is undone."""


def deploy(cfg: DeployConfig) -> dict:
    import mlflow

    for replica in server.fleet():
        replica.require_live()
    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    read, table = tabdata.read(data_source(cfg.model_name, version, tags))
    slot = contract.staged_slot(cfg.model_name)
    name = tracking.run_name(cfg.model_name, {"v": version, "slot": "staged"})
    params = {"source_alias": cfg.input_alias, "slot": slot}
    with (
        report.stage_run(cfg.model_name, name, version=version, params=params) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        tabdata.log(read, table, "validation")
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{cfg.model_name}/{version}", dst_path=tmp)
        )
        mlflow.log_artifacts(str(local), "mlserver/model")
        x_val, _ = table.part("val")
        expected = mlflow.pyfunc.load_model(str(local)).predict(x_val)
        body = tabdata.v2_request(table.features, x_val)
        agreement = []

        def smoke(replica):
            got, answered = replica.infer(slot, body)
            if answered != version:
                raise MlcpError(
                    f"smoke inference on {slot} answered from v{answered}, not v{version}"
                )
            agreement.append(float((np_array(got) == np_array(expected)).mean()))
            if agreement[-1] < cfg.min_parity:  # the slot is restored; the gate below records why
                raise Mismatch(f"{replica.url} disagrees with the model on {slot}")

        try:
            server.switch(slot, version, local, smoke)
        except Mismatch as exc:
            report(str(exc))
        parity = min(agreement)
        mlflow.log_metric("serving_parity", parity)
        gate = Gate(SERVING_PARITY, "serving_parity", ">=", cfg.min_parity)
        report.judge(
            [(gate, parity)], model=cfg.model_name, version=version, evidence={"rows": len(x_val)}
        )
        client.set_model_version_tag(
            cfg.model_name, version, MODEL_DIR_TAG, f"runs:/{run.info.run_id}/mlserver/model"
        )
    report.advance(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=f"deployed to MLServer slot {slot}",
        client=client,
    )
    return {"version": version, "slot": slot, "serving_parity": parity}


def np_array(values):
    import numpy as np

    return np.asarray(values).reshape(-1)


STAGE = Stage(
    PIPELINE,
    "deploy",
    "load into MLServer's staged slot",
    DeployConfig,
    deploy,
    GATES,
    title="Tabular: deploy to MLServer's staged slot (candidate -> staged)",
    description=(
        "Copies input-alias (candidate) into MLServer's <model>-staged slot, pins and loads "
        "it on every replica, checks its answers against the model's own (serving-parity "
        "gate) and points output-alias (staged) at it."
    ),
)
