"""``mlcp tabular evaluate``: reads ``staged``, scores the test rows through MLServer's
staged slot and the champion's live slot side by side, writes ``evaluated``.

Both versions answer the same rows on the path traffic takes. Gates: ``accuracy`` (a
minimum) and ``accuracy-vs-champion`` (the lower end of the paired 95% interval of the
accuracy difference, challenger minus champion, must be >= -margin: steps/decisions/paired.py).
With no champion (the first version) only the absolute gate applies. The sequence (resolve,
check the slots, read, record, judge, move the alias) is the runner's (``mlcp.runner``).
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
    contract,
    option,
    paired,
    runner,
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


def slots(t: runner.Target) -> runner.Slots:
    """The staged slot and the champion's, each checked to serve its version on the first
    replica (``t.server``); perf-test measures through the same."""

    def check(slot: str, version: str, fix: str) -> None:
        served = t.server.served(slot)
        if served != version:
            raise MlcpError(
                f"MLServer slot {slot} serves {contract.show_version(served)}, not v{version}: "
                f"{fix}"
            )

    fix = f"run `mlcp tabular deploy --model-name {t.model}` first"
    return runner.check_slots(t, check, champion_alias=t.cfg.champion_alias, deploy_fix=fix)


def first_replica(t: runner.Target) -> server.MLServer:
    replica = server.fleet()[0]
    replica.require_live()
    return replica


def predict(replica, slot: str, version: str, features, rows):
    import numpy as np

    got, answered = replica.infer(slot, tabdata.v2_request(features, rows))
    runner.answered_by(slot, version, answered)
    return np.asarray(got).reshape(-1)


class Evaluate(runner.Evaluator):
    report = Reporter(PIPELINE, "evaluate")
    data = tabdata
    connect = staticmethod(first_replica)
    slots = staticmethod(slots)

    def params(self, t):
        return {
            "input_alias": t.cfg.input_alias,
            "slot": t.slot,
            "champion_alias": t.champion.alias,
            "champion_version": t.champion.version or "none",
            "margin": t.cfg.margin,
        }

    def measure(self, t):
        import mlflow

        x, y = t.data.part("test")
        ours = predict(t.server, t.slot, t.version, t.data.features, x)
        accuracy = float((ours == y).mean())
        metrics = {"accuracy": accuracy}
        compared = t.champion.missing or ""
        if t.champion_slot is not None:
            theirs = predict(t.server, t.champion_slot, t.champion.version, t.data.features, x)
            compared = runner.compare(t, "accuracy", ours == y, theirs == y)
            metrics |= runner.paired_metrics("accuracy", compared, float((theirs == y).mean()))
            mlflow.log_dict(
                {
                    "versions": [t.version, t.champion.version],
                    "labels": y.tolist(),
                    "challenger": ours.tolist(),
                    "champion": theirs.tolist(),
                },
                "predictions.json",
            )
            self.report(compared.line())
        return runner.Measured(
            metrics=metrics,
            checks=[
                (Gate(ACCURACY, "accuracy", ">=", t.cfg.min_accuracy), accuracy),
                runner.vs_champion(ACCURACY_VS_CHAMPION, "accuracy", compared, t.cfg.margin),
            ],
            evidence={"test_rows": int(len(y))},
            reason=f"accuracy {accuracy:.4f} on {len(y)} test rows{runner.versus(compared)}",
            result={"version": t.version, "accuracy": accuracy, "data_digest": t.read.digest},
        )


STAGE = Stage(
    PIPELINE,
    "evaluate",
    "score the test rows through MLServer, side by side with the champion",
    EvaluateConfig,
    Evaluate(),
    GATES,
    title="Tabular: evaluate through MLServer beside the champion (staged -> evaluated)",
    description=(
        "Sends the test rows through MLServer's <model>-staged slot and the champion's "
        "<model>-live slot; the accuracy gate (a minimum) and the accuracy-vs-champion gate "
        "(the paired interval's lower end >= -margin) decide output-alias (evaluated)."
    ),
)
