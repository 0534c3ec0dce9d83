"""Quality gates as data, and the decision run each evaluation leaves behind.

A gate compares one value with a threshold. An absolute gate judges a metric of the version
alone ("accuracy >= 0.8"). A gate ``against_champion`` judges a
:class:`~steps.decisions.paired.Comparison` made in the same run: an end of the interval of the
challenger's difference from (or ratio to) the champion, measured side by side on the same inputs
("the lower bound of the accuracy difference >= -0.02"). With no champion to compare with, it passes
and says so: only the absolute gates apply. Evaluating a gate always records:

- one decision run (in the stage's experiment, nested under the stage run when there is
  one): the threshold as params, the observed value as a metric, the verdict as a tag,
  ``decision.json`` as an artifact, and the model version it judged; a comparison adds the
  versions compared, the test, the statistic, its interval, the p-value and the margin, and
  the tag ``mlcp.comparison`` (one line for a person, which ``mlcp lineage`` prints);
- on the model version: ``mlcp.gate.<name>.verdict`` and ``mlcp.gate.<name>.run_id``.

Never best-effort: if either record cannot be written, :class:`RecordFailed` is raised and
the stage fails.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..base.errors import BadInput, GateFailed, RecordFailed
from ..records import tracking
from ..spec.contract import COMPARISON_TAG, GATE_TAG, KIND_TAG, MODEL_TAG, VERDICT_TAG, VERSION_TAG

if TYPE_CHECKING:
    from .paired import Comparison

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PASS, FAIL = "pass", "fail"


def verdict_tag(gate_name: str) -> str:
    return f"mlcp.gate.{gate_name}.verdict"


def run_id_tag(gate_name: str) -> str:
    return f"mlcp.gate.{gate_name}.run_id"


@dataclass(frozen=True)
class Gate:
    """``metric <op> threshold``: an absolute gate, or (``against_champion``) one that judges
    an end of the interval of a side-by-side comparison with the champion."""

    name: str
    metric: str
    op: str
    threshold: float
    against_champion: bool = False

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise BadInput(f"invalid gate name {self.name!r}: lower-case letters, digits, - and _")
        if self.op not in OPS:
            raise BadInput(f"gate {self.name}: comparison must be one of {', '.join(OPS)}")
        if not isinstance(self.threshold, int | float) or math.isnan(self.threshold):
            raise BadInput(f"gate {self.name}: threshold must be a number")

    @classmethod
    def from_dict(cls, data: Mapping) -> Gate:
        try:
            return cls(
                name=str(data["name"]),
                metric=str(data["metric"]),
                op=str(data["op"]),
                threshold=float(data["threshold"]),
                against_champion=bool(data.get("against_champion", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"invalid gate definition {dict(data)!r}: {exc}") from None

    def judge(self, value: float | None) -> tuple[bool, list[str]]:
        """The verdict and the reasons behind it, without recording anything."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False, [f"{self.metric} was not measured"]
        ok = OPS[self.op](value, self.threshold)
        return ok, [
            f"{self.metric}={value:.6g} {'meets' if ok else 'misses'} {self.op} {self.threshold:g}"
        ]


@dataclass
class Decision:
    gate: Gate
    model: str
    version: str
    value: float | None
    verdict: str
    reasons: list[str]
    run_id: str = ""
    comparison: dict | None = None  # the side-by-side comparison a champion gate judged
    evidence: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def to_dict(self) -> dict:
        data = asdict(self)
        data["gate"] = asdict(self.gate)
        return data


def _verdict(
    gate: Gate, value: float | None, comparison: Comparison | str | None
) -> tuple[bool, list[str], Comparison | None]:
    """Judge one gate: absolute, or against the champion (``comparison`` is what was measured
    side by side, or the reason nothing could be)."""
    if not gate.against_champion:
        if comparison is not None:
            raise BadInput(f"gate {gate.name} is absolute: it takes no comparison")
        ok, reasons = gate.judge(value)
        return ok, reasons, None
    if comparison is None or isinstance(comparison, str):
        why = comparison or "no champion to compare with"
        return True, [f"{why}: not applicable, only the absolute gates apply"], None
    ok, reasons = gate.judge(value)
    return ok, [*reasons, comparison.line()], comparison


def evaluate(
    gate: Gate,
    *,
    model: str,
    version: str | int,
    value: float | None,
    pipeline: str,
    stage: str,
    comparison: Comparison | str | None = None,
    evidence: Mapping | None = None,
) -> Decision:
    """Judge ``value`` and record the decision (run + version tags). Raises RecordFailed.

    A gate ``against_champion`` takes the :class:`~steps.decisions.paired.Comparison` its value was
    read from, or a string saying why there is none (it then passes: not applicable)."""
    import mlflow

    client = tracking.client()
    version = str(version)
    try:  # the version must exist before anything is judged or recorded
        client.get_model_version(model, version)
    except Exception as exc:
        raise RecordFailed(
            f"cannot judge {model} v{version} for gate {gate.name!r}: {exc}"
        ) from exc
    ok, reasons, compared = _verdict(gate, value, comparison)
    if gate.against_champion and compared is None:
        value = None  # nothing was compared: no value was judged
    decision = Decision(
        gate=gate,
        model=model,
        version=version,
        value=value,
        verdict=PASS if ok else FAIL,
        reasons=reasons,
        comparison=None if compared is None else compared.to_dict(),
        evidence=dict(evidence or {}),
    )
    if decision.value is not None:
        decision.value = float(decision.value)
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
        if compared is not None:
            tags[COMPARISON_TAG] = compared.line()
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

        texts = {
            "gate": gate.name,
            "metric": gate.metric,
            "op": gate.op,
            "threshold": f"{gate.threshold:g}",
            "against_champion": "true" if gate.against_champion else "false",
            "model": model,
            "version": version,
        }
        numbers = {}
        if decision.value is not None and not math.isnan(decision.value):
            numbers["value"] = decision.value
        if compared is not None:
            texts.update(compared.params())
            numbers.update(compared.metrics())
        import time

        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in numbers.items()],
            params=[Param(k, v) for k, v in texts.items()],
        )
        client.log_text(run.info.run_id, json.dumps(decision.to_dict(), indent=2), "decision.json")
        client.set_terminated(run.info.run_id, "FINISHED")
        client.set_model_version_tag(model, version, verdict_tag(gate.name), decision.verdict)
        client.set_model_version_tag(model, version, run_id_tag(gate.name), run.info.run_id)
    except Exception as exc:
        raise RecordFailed(
            f"could not record the decision of gate {gate.name!r} for {model} v{version}: {exc}"
        ) from exc
    return decision


# A gate and the value it judges; a gate against the champion adds its comparison (or the
# reason there is none).
Check = tuple[Gate, float | None] | tuple[Gate, float | None, "Comparison | str | None"]


def champion_check(gate: Gate, comparison: Comparison | str | None, end: str) -> Check:
    """The check of a gate against the champion: it judges the ``end`` (``ci_low`` or
    ``ci_high``) of the comparison's interval, or nothing when there was no comparison
    (``comparison`` then says why)."""
    if not gate.against_champion:
        raise BadInput(f"gate {gate.name} is absolute: it judges no comparison")
    value = getattr(comparison, end) if hasattr(comparison, "ci_low") else None
    return gate, value, comparison


def evaluate_all(
    checks: Iterable[Check],
    *,
    model: str,
    version: str | int,
    pipeline: str,
    stage: str,
    evidence: Mapping | None = None,
) -> list[Decision]:
    """:func:`evaluate` each check of a stage, every one recorded, in order."""
    return [
        evaluate(
            check[0],
            model=model,
            version=version,
            value=check[1],
            pipeline=pipeline,
            stage=stage,
            comparison=check[2] if len(check) > 2 else None,
            evidence=evidence,
        )
        for check in checks
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
    comparison: str | None = None  # a champion gate's comparison, in one line


def recorded(client, model: str, version: str | int, names: Iterable[str]) -> list[GateStatus]:
    """The verdicts recorded for ``names`` on a version, each checked against its decision run
    (a version tag alone, which anyone can set by hand, is not taken as proof)."""
    from ..base.rest import error_code

    tags = client.get_model_version(model, str(version)).tags
    found = []
    for name in names:
        run_id = tags.get(run_id_tag(name))
        verdict = comparison = None
        if run_id:
            try:
                run = client.get_run(run_id)
            except Exception as exc:  # a refused request (either client): no proof
                if error_code(exc) is None:
                    raise
                run = None
            if (
                run is not None
                and run.data.tags.get(GATE_TAG) == name
                and run.data.tags.get(MODEL_TAG) == model
                and run.data.tags.get(VERSION_TAG) == str(version)
            ):
                verdict = run.data.tags.get(VERDICT_TAG)
                comparison = run.data.tags.get(COMPARISON_TAG)
        found.append(GateStatus(name, verdict, run_id if verdict else None, comparison))
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
