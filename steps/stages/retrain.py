"""``mlcp <pipeline> retrain``: the retrain cron's logic on one machine.

First the pipeline's drift step (``mlcp <pipeline> drift``, its own process, as the cron's
first step runs it); then, only when it says ``retrain`` (drift, or new data and the policy
``--retrain-on-new-data``) or ``--force-retrain`` is given, the whole chain
(``mlcp <pipeline> chain``'s stages, then promote), training on the data the drift step
found. A promotion to ``live`` removes ``drift-detected`` (steps/registry/promote.py).
"""

from __future__ import annotations

import sys

from ..base.errors import BadInput
from ..spec.declare import Pipeline
from . import chain


def run(
    pipeline: Pipeline,
    model: str,
    *,
    drift_args: list[str],
    stage_args: dict[str, list[str]],
    force: bool = False,
) -> dict:
    """The drift step's summary, and the chain's when it ran (``retrained``)."""
    if pipeline.drift is None:
        raise BadInput(f"pipeline {pipeline.name!r} declares no drift step")
    found = chain.run_stage("drift", [*pipeline.drift.command, "--model-name", model, *drift_args])
    if not found.get("data"):
        raise BadInput("the drift step reported no data to train on")
    decided = {key: found.get(key) for key in ("verdict", "retrain", "why", "data", "run_id")}
    if not (found.get("retrain") or force):
        print(f"    no retraining: {found.get('why')}", file=sys.stderr, flush=True)
        return {"model": model, "drift": decided, "retrained": False}
    why = found.get("why") if found.get("retrain") else f"forced ({found.get('why')})"
    print(f"    retraining on {found['data']}: {why}", file=sys.stderr, flush=True)
    train = pipeline.stages[0].name
    args = {**stage_args, train: [*stage_args.get(train, ()), "--data", found["data"]]}
    summary, line = chain.run(pipeline, model, args)
    return {"model": model, "drift": decided, "retrained": True, "chain": summary, "line": line}
