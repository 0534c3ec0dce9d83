"""``mlcp tabular evaluate``: reads ``staged``, scores the test rows through MLServer's
staged slot and the champion's live slot side by side, writes ``evaluated``.

Both versions answer the same rows on the path traffic takes. Gates: ``accuracy`` (a
minimum) and ``accuracy-vs-champion`` (the lower end of the paired 95% interval of the
accuracy difference, challenger minus champion, must be >= -margin: steps/paired.py).
With no champion (the first version) only the absolute gate applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlcp import (
    Config,
    Gate,
    MlcpError,
    Reporter,
    Stage,
    alias_option,
    champion_check,
    champion_slot_fix,
    contract,
    data_source,
    option,
    paired,
    resolve_champion,
    resolve_input,
    tracking,
)

from . import PIPELINE, server
from . import data as tabdata

ACCURACY = "accuracy"
ACCURACY_VS_CHAMPION = "accuracy-vs-champion"
GATES = (ACCURACY, ACCURACY_VS_CHAMPION)


@dataclass(kw_only=True)
class EvaluateConfig(Config):
    input_alias: str = alias_option(contract.STAGED, reads=True)
    output_alias: str = alias_option(contract.EVALUATED, reads=False)
    data: str | None = option(None, help="data set URI (empty: the one the version was trained on)")
    min_accuracy: float = option(0.8, help="gate accuracy: the lowest test accuracy", min=0, max=1)
    champion_alias: str = paired.champion_option()
    margin: float = option(
        0.1,
        help="gate accuracy-vs-champion: the largest accuracy drop below the champion's that "
        "the lower end of the paired 95% interval may show",
        min=0,
        max=1,
    )


report = Reporter(PIPELINE, "evaluate")


def require_serving(replica, slot: str, version: str, fix: str) -> str:
    """``slot``, checked to serve exactly ``version`` on the replica asked."""
    served = replica.served(slot)
    if served != version:
        raise MlcpError(
            f"MLServer slot {slot} serves {contract.show_version(served)}, not v{version}: {fix}"
        )
    return slot


def slots(client, model: str, version: str, champion_alias: str):
    """The first replica, the staged slot (checked) and the champion with its slot."""
    replica = server.fleet()[0]
    replica.require_live()
    fix = f"run `mlcp tabular deploy --model-name {model}` first"
    slot = require_serving(replica, contract.staged_slot(model), version, fix)
    champion = resolve_champion(client, model, champion_alias, version)
    champion_slot = None
    if champion.version is not None:
        champion_slot = require_serving(
            replica, contract.live_slot(model), champion.version, champion_slot_fix(model, champion)
        )
    return replica, slot, champion, champion_slot


def predict(replica, slot: str, version: str, features, rows):
    import numpy as np

    got, answered = replica.infer(slot, tabdata.v2_request(features, rows))
    if answered != version:
        raise MlcpError(f"{slot} answered with v{answered} during the evaluation of v{version}")
    return np.asarray(got).reshape(-1)


def evaluate(cfg: EvaluateConfig) -> dict:
    import mlflow

    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    replica, slot, champion, champion_slot = slots(
        client, cfg.model_name, version, cfg.champion_alias
    )
    read, table = tabdata.read(data_source(cfg.model_name, version, tags, cfg.data))
    x, y = table.part("test")
    name = tracking.run_name(cfg.model_name, {"v": version}, read.digest)
    params = {
        "input_alias": cfg.input_alias,
        "slot": slot,
        "champion_alias": champion.alias,
        "champion_version": champion.version or "none",
        "margin": cfg.margin,
    }
    with report.stage_run(cfg.model_name, name, version=version, params=params):
        tabdata.log(read, table, "evaluation")
        ours = predict(replica, slot, version, table.features, x)
        accuracy = float((ours == y).mean())
        mlflow.log_metric("accuracy", accuracy)
        compared = champion.missing or ""
        if champion.version is not None:
            theirs = predict(replica, champion_slot, champion.version, table.features, x)
            compared = paired.binary(
                ours == y,
                theirs == y,
                name="accuracy",
                challenger_version=version,
                champion_version=champion.version,
                champion_alias=champion.alias,
                margin=cfg.margin,
            )
            mlflow.log_metrics(
                {
                    "champion_accuracy": float((theirs == y).mean()),
                    "accuracy_difference": compared.estimate,
                    "accuracy_difference_ci_low": compared.ci_low,
                    "accuracy_difference_ci_high": compared.ci_high,
                    "mcnemar_p_value": compared.p_value,
                }
            )
            mlflow.log_dict(
                {
                    "versions": [version, champion.version],
                    "labels": y.tolist(),
                    "challenger": ours.tolist(),
                    "champion": theirs.tolist(),
                },
                "predictions.json",
            )
            report(compared.line())
        checks = [
            (Gate(ACCURACY, "accuracy", ">=", cfg.min_accuracy), accuracy),
            champion_check(
                Gate(
                    ACCURACY_VS_CHAMPION,
                    "accuracy_difference_ci_low",
                    ">=",
                    -cfg.margin,
                    against_champion=True,
                ),
                compared,
                "ci_low",
            ),
        ]
        report.judge(
            checks, model=cfg.model_name, version=version, evidence={"test_rows": int(len(y))}
        )
    vs = f"; {compared.line()}" if isinstance(compared, paired.Comparison) else f"; {compared}"
    report.advance(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=f"accuracy {accuracy:.4f} on {len(y)} test rows{vs}",
        client=client,
    )
    return {"version": version, "accuracy": accuracy, "data_digest": read.digest}


STAGE = Stage(
    PIPELINE,
    "evaluate",
    "score the test rows through MLServer, side by side with the champion",
    EvaluateConfig,
    evaluate,
    GATES,
    title="Tabular: evaluate through MLServer beside the champion (staged -> evaluated)",
    description=(
        "Sends the test rows through MLServer's <model>-staged slot and the champion's "
        "<model>-live slot; the accuracy gate (a minimum) and the accuracy-vs-champion gate "
        "(the paired interval's lower end >= -margin) decide output-alias (evaluated)."
    ),
)
