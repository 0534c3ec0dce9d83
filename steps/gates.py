"""Quality gates as data, and the decision run each evaluation leaves behind.

A gate compares one metric with a threshold and, optionally, with the version that is live
now ("not worse than live by more than X"). Evaluating it always records:

- one decision run (in the stage's experiment, nested under the stage run when there is
  one): the thresholds as params, the observed and live values as metrics, the verdict as a
  tag, ``decision.json`` as an artifact, and the model version it judged;
- on the model version: ``mlcp.gate.<name>.verdict`` and ``mlcp.gate.<name>.run_id``.

Never best-effort: if either record cannot be written, :class:`RecordFailed` is raised and
the stage fails. The live baseline is the live version's own recorded decision for the same
gate, not simply the newest run.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from . import tracking
from .contract import GATE_TAG, KIND_TAG, LIVE, MODEL_TAG, VERDICT_TAG, VERSION_TAG
from .errors import BadInput, GateFailed, RecordFailed

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
HIGHER_IS_BETTER = {">=": True, ">": True, "<=": False, "<": False}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PASS, FAIL = "pass", "fail"


def verdict_tag(gate_name: str) -> str:
    return f"mlcp.gate.{gate_name}.verdict"


def run_id_tag(gate_name: str) -> str:
    return f"mlcp.gate.{gate_name}.run_id"


@dataclass(frozen=True)
class Gate:
    """``metric <op> threshold`` and optionally "no worse than live by ``max_regression``"."""

    name: str
    metric: str
    op: str
    threshold: float
    max_regression: float | None = None

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise BadInput(f"invalid gate name {self.name!r}: lower-case letters, digits, - and _")
        if self.op not in OPS:
            raise BadInput(f"gate {self.name}: comparison must be one of {', '.join(OPS)}")
        if not isinstance(self.threshold, int | float) or math.isnan(self.threshold):
            raise BadInput(f"gate {self.name}: threshold must be a number")
        if self.max_regression is not None and not self.max_regression >= 0:
            raise BadInput(f"gate {self.name}: max_regression must be a number >= 0")

    @classmethod
    def from_dict(cls, data: Mapping) -> Gate:
        try:
            return cls(
                name=str(data["name"]),
                metric=str(data["metric"]),
                op=str(data["op"]),
                threshold=float(data["threshold"]),
                max_regression=(
                    None if data.get("max_regression") is None else float(data["max_regression"])
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"invalid gate definition {dict(data)!r}: {exc}") from None

    def judge(self, value: float, live_value: float | None) -> tuple[bool, list[str]]:
        """The verdict and the reasons behind it, without recording anything."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False, [f"{self.metric} was not measured"]
        reasons = []
        ok = OPS[self.op](value, self.threshold)
        reasons.append(
            f"{self.metric}={value:.6g} {'meets' if ok else 'misses'} {self.op} {self.threshold:g}"
        )
        if self.max_regression is not None and live_value is not None:
            worse_by = (live_value - value) if HIGHER_IS_BETTER[self.op] else (value - live_value)
            within = worse_by <= self.max_regression + 1e-12
            ok = ok and within
            reasons.append(
                f"{'within' if within else 'beyond'} {self.max_regression:g} of live "
                f"({live_value:.6g}; worse by {max(worse_by, 0):.6g})"
            )
        return ok, reasons


@dataclass
class Decision:
    gate: Gate
    model: str
    version: str
    value: float | None
    verdict: str
    reasons: list[str]
    run_id: str = ""
    live_version: str | None = None
    live_value: float | None = None
    evidence: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def to_dict(self) -> dict:
        data = asdict(self)
        data["gate"] = asdict(self.gate)
        return data


def live_baseline(
    client, model: str, gate_name: str, metric: str
) -> tuple[str | None, float | None]:
    """The live version and the value its own recorded decision for ``gate_name`` measured."""
    from mlflow.exceptions import MlflowException

    live = client.get_registered_model(model).aliases.get(LIVE)
    if live is None:
        return None, None
    live = str(live)
    tags = client.get_model_version(model, live).tags
    run_id = tags.get(run_id_tag(gate_name))
    if not run_id:
        return live, None
    try:
        value = client.get_run(run_id).data.metrics.get("value")
    except MlflowException:
        return live, None
    return live, value


def evaluate(
    gate: Gate,
    *,
    model: str,
    version: str | int,
    value: float | None,
    pipeline: str,
    stage: str,
    live_value: float | None = None,
    evidence: Mapping | None = None,
) -> Decision:
    """Judge ``value`` and record the decision (run + version tags). Raises RecordFailed."""
    import mlflow

    client = tracking.client()
    version = str(version)
    live_version = None
    try:  # the version must exist before anything is judged or recorded
        client.get_model_version(model, version)
        if gate.max_regression is not None:
            live_version, recorded = live_baseline(client, model, gate.name, gate.metric)
    except Exception as exc:
        raise RecordFailed(
            f"cannot judge {model} v{version} for gate {gate.name!r}: {exc}"
        ) from exc
    if gate.max_regression is not None:
        if live_version == version:  # judging the live version itself: nothing to regress from
            live_version, recorded = None, None
        if live_value is None:
            live_value = recorded
    ok, reasons = gate.judge(value, live_value)
    if gate.max_regression is not None and live_value is None:
        reasons.append("no live baseline for this gate: regression check not applicable")
    decision = Decision(
        gate=gate,
        model=model,
        version=version,
        value=None if value is None else float(value),
        verdict=PASS if ok else FAIL,
        reasons=reasons,
        live_version=live_version,
        live_value=live_value,
        evidence=dict(evidence or {}),
    )
    try:
        experiment_id = tracking.ensure_experiment(
            client, tracking.experiment_name(pipeline, stage)
        )
        tags = tracking.context_tags(pipeline, stage, model, version)
        tags.update(
            {
                KIND_TAG: "decision",
                GATE_TAG: gate.name,
                VERDICT_TAG: decision.verdict,
            }
        )
        active = mlflow.active_run()
        if active is not None:
            tags["mlflow.parentRunId"] = active.info.run_id
        run = client.create_run(
            experiment_id,
            run_name=f"gate-{gate.name}-{model}-v{version}-{decision.verdict}",
            tags=tags,
        )
        decision.run_id = run.info.run_id
        from mlflow.entities import Metric, Param

        params = [
            Param("gate", gate.name),
            Param("metric", gate.metric),
            Param("op", gate.op),
            Param("threshold", f"{gate.threshold:g}"),
            Param(
                "max_regression",
                "none" if gate.max_regression is None else f"{gate.max_regression:g}",
            ),
            Param("model", model),
            Param("version", version),
            Param("live_version", live_version or "none"),
        ]
        metrics = []
        import time

        now = int(time.time() * 1000)
        if decision.value is not None and not math.isnan(decision.value):
            metrics.append(Metric("value", decision.value, now, 0))
        if live_value is not None:
            metrics.append(Metric("live_value", float(live_value), now, 0))
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.log_text(run.info.run_id, json.dumps(decision.to_dict(), indent=2), "decision.json")
        client.set_terminated(run.info.run_id, "FINISHED")
        client.set_model_version_tag(model, version, verdict_tag(gate.name), decision.verdict)
        client.set_model_version_tag(model, version, run_id_tag(gate.name), run.info.run_id)
    except Exception as exc:
        raise RecordFailed(
            f"could not record the decision of gate {gate.name!r} for {model} v{version}: {exc}"
        ) from exc
    return decision


def evaluate_all(
    checks: Iterable[tuple[Gate, float | None]],
    *,
    model: str,
    version: str | int,
    pipeline: str,
    stage: str,
    evidence: Mapping | None = None,
) -> list[Decision]:
    """:func:`evaluate` each ``(gate, value)`` of a stage, every one recorded, in order."""
    return [
        evaluate(
            gate,
            model=model,
            version=version,
            value=value,
            pipeline=pipeline,
            stage=stage,
            evidence=evidence,
        )
        for gate, value in checks
    ]


def enforce(decisions: Iterable[Decision]) -> None:
    """Raise GateFailed naming every failed gate (after all were recorded)."""
    failed = [d for d in decisions if not d.passed]
    if failed:
        detail = "; ".join(f"{d.gate.name}: {', '.join(d.reasons)}" for d in failed)
        raise GateFailed(
            f"{failed[0].model} v{failed[0].version} failed {detail}", version=failed[0].version
        )


@dataclass
class GateStatus:
    name: str
    verdict: str | None
    run_id: str | None


def recorded(client, model: str, version: str | int, names: Iterable[str]) -> list[GateStatus]:
    """The verdicts recorded for ``names`` on a version, each checked against its decision run
    (a version tag alone, which anyone can set by hand, is not taken as proof)."""
    from mlflow.exceptions import MlflowException

    tags = client.get_model_version(model, str(version)).tags
    found = []
    for name in names:
        run_id = tags.get(run_id_tag(name))
        verdict = None
        if run_id:
            try:
                run = client.get_run(run_id)
            except MlflowException:
                run = None
            if (
                run is not None
                and run.data.tags.get(GATE_TAG) == name
                and run.data.tags.get(MODEL_TAG) == model
                and run.data.tags.get(VERSION_TAG) == str(version)
            ):
                verdict = run.data.tags.get(VERDICT_TAG)
        found.append(GateStatus(name, verdict, run_id if verdict else None))
    return found


def decisions_of(client, model: str, version: str | int) -> list[GateStatus]:
    """Every gate verdict recorded on a version."""
    tags = client.get_model_version(model, str(version)).tags
    names = sorted(
        key[len("mlcp.gate.") : -len(".verdict")]
        for key in tags
        if key.startswith("mlcp.gate.") and key.endswith(".verdict")
    )
    return recorded(client, model, version, names)
